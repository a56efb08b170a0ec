"""Becoming a daemon and talking to the service manager."""

from __future__ import annotations

import os
import select
import socket
import sys
import time
from typing import Callable

from . import files


STARTED = b"\0"  # ends the start-up report: never part of a message
START_TIMEOUT = 120  # seconds the starting command waits for the daemon's verdict


def daemonize(pidfile: str | None) -> Callable[[], None]:
    """Classic double fork: detach from the terminal and session, stdio to /dev/null.

    The command that was run waits until the daemon has started and exits with its result:
    until then the daemon's stderr is a pipe to it, so whatever goes wrong during start-up
    (an unwritable pid file, a refused user switch, a traceback) is printed by the command,
    which exits 1. Returns `started`, for the daemon to call once it is running."""
    report, writer = os.pipe()
    if os.fork():
        os.close(writer)
        os._exit(_await_start(report))
    os.close(report)
    os.setsid()
    if os.fork():
        os._exit(0)
    os.chdir("/")
    os.umask(0o022)
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1):
        os.dup2(null, fd)
    sys.stderr.flush()
    os.dup2(writer, 2)
    if pidfile:
        try:
            write_pidfile(pidfile)
        except OSError as err:
            print(f"hsagent: cannot write the pid file {pidfile}: {err.strerror or err}",
                  file=sys.stderr, flush=True)
            os._exit(1)

    def started() -> None:
        sys.stderr.flush()
        os.write(writer, STARTED)
        os.dup2(null, 2)
        os.close(writer)
        os.close(null)

    return started


def _await_start(report: int) -> int:
    """In the command that was run: relay the daemon's start-up messages; 0 once it reports
    that it started, 1 if it went away (or stayed silent for START_TIMEOUT seconds)."""
    received = b""
    deadline = time.monotonic() + START_TIMEOUT
    with os.fdopen(report, "rb", buffering=0) as pipe:
        while not received.endswith(STARTED):
            ready, _, _ = select.select([pipe], [], [], max(0.0, deadline - time.monotonic()))
            chunk = pipe.read(4096) if ready else b""
            if not chunk:
                break
            received += chunk
    started = received.endswith(STARTED)
    message = received.removesuffix(STARTED).decode(errors="replace")
    if not started and not message:
        message = (f"hsagent: the daemon did not report its start within {START_TIMEOUT} s\n"
                   if time.monotonic() >= deadline else "hsagent: the daemon exited during start-up\n")
    sys.stderr.write(message)
    sys.stderr.flush()  # the caller leaves with os._exit, which flushes nothing
    return 0 if started else 1


def write_pidfile(path: str) -> None:
    files.replace(path, f"{os.getpid()}\n")


def notify(state: str) -> bool:
    """sd_notify(3) without libsystemd: one datagram to $NOTIFY_SOCKET, e.g. "READY=1"."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address or address[0] not in "/@":
        return False
    if address[0] == "@":  # abstract namespace socket
        address = "\0" + address[1:]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
        try:
            sock.sendto(state.encode(), address)
        except OSError:
            return False
    return True
