"""Command line: argument parsing and sub-commands; the work is done elsewhere."""

from __future__ import annotations

import argparse
import logging
import os
import sys

from . import __version__
from .settings import DEFAULT_AUTO_FILE, DEFAULT_CONFIG_FILE, DEFAULT_RUNTIME_DIR


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="hsagent", description="Host sFlow agent (sFlow v5).")
    p.add_argument("--version", action="version", version=f"hsagent {__version__}")
    p.add_argument("-c", "--config", default=DEFAULT_CONFIG_FILE, metavar="FILE",
                   help=f"configuration file (default {DEFAULT_CONFIG_FILE})")
    p.add_argument("-d", "--debug", action="count", default=0,
                   help="more logging; repeat for more (-dd)")
    p.add_argument("-f", "--foreground", action="store_true", help="do not daemonise")
    p.add_argument("--once", action="store_true",
                   help="poll every data source once, send, and exit")
    p.add_argument("--print", dest="print_datagrams", action="store_true",
                   help="run in the foreground and print every datagram sent, as `hsagent decode` would")
    p.add_argument("--pidfile", metavar="FILE", help="write the daemon's pid here")
    p.add_argument("--auto-file", default=DEFAULT_AUTO_FILE, metavar="FILE",
                   help=f"where to write the settings in force (default {DEFAULT_AUTO_FILE})")
    p.add_argument("--runtime-dir", default=DEFAULT_RUNTIME_DIR, metavar="DIR",
                   help=f"where the running agent keeps its status file (default {DEFAULT_RUNTIME_DIR})")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    check = sub.add_parser("check", help="validate the configuration and print the settings in force")
    check.add_argument("-c", "--config", dest="sub_config", metavar="FILE")

    discover = sub.add_parser("discover", help="show what DNS-SD yields right now")
    discover.add_argument("-c", "--config", dest="sub_config", metavar="FILE")

    decode = sub.add_parser("decode", help="decode sFlow datagrams from UDP or a pcap file")
    source = decode.add_mutually_exclusive_group()
    source.add_argument("--port", type=int, default=6343, help="UDP port to listen on (default 6343)")
    source.add_argument("--pcap", metavar="FILE", help="read datagrams from a classic pcap file")
    decode.add_argument("--bind", default="::", metavar="ADDR",
                        help="address to listen on (default all, IPv4 and IPv6)")
    decode.add_argument("--json", action="store_true", help="one JSON object per datagram")
    decode.add_argument("--count", type=int, metavar="N", help="stop after N datagrams")

    status = sub.add_parser("status", help="show what the running agent has sent and its state")
    status.add_argument("--runtime-dir", dest="sub_runtime_dir", metavar="DIR")
    return p


def _load(path: str):
    """Settings from the config file; a bad file is reported on stderr and exits 2."""
    from .config import conffile

    try:
        settings, warnings = conffile.load(path)
    except conffile.ConfigError as err:
        print(f"hsagent: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    for warning in warnings:
        print(f"hsagent: warning: {warning}", file=sys.stderr)
    return settings


def _with_dnssd(settings, verbose: bool):
    """The file's settings overlaid with what DNS-SD says now (when DNSSD is on)."""
    from .config.source import lookup_now

    found = lookup_now(settings)
    if found.error is not None:
        print(f"DNS-SD: {found.error} (the agent would use the file's settings until DNS answers)")
    if found.result is None:
        return found.settings
    result = found.result
    if verbose:
        print(f"query: {result.query} (SRV and TXT)")
        print("answers:" if result.answers else "answers: none")
        for line in result.answers:
            print(f"  {line}")
        print(f"smallest TTL: {result.ttl if result.ttl is not None else '-'}")
    for warning in result.warnings:
        print(f"DNS-SD warning: {warning}")
    return found.settings


def _check(args) -> int:
    from .settings_report import report

    settings = _with_dnssd(_load(args.sub_config or args.config), verbose=False)
    print(report(settings))
    if settings.ovs is not None:
        from .ovs.check import report as ovs_report
        from .privileges import PrivilegeError, target_user

        try:
            account = target_user(settings.user)
        except PrivilegeError:
            account = None  # the agent would refuse to run; the settings report says the rest
        print(ovs_report(settings, account))
    return 0


def _discover(args) -> int:
    from .settings_report import report

    settings = _load(args.sub_config or args.config)
    if not settings.dnssd:
        print("DNSSD is off in the configuration; looking up anyway")
        settings = settings.replace("file", dnssd=True)
    print("resulting settings:\n" + report(_with_dnssd(settings, verbose=True)))
    return 0


def _reread(path: str):
    """SIGHUP: the config file's settings, raising ConfigError on a bad file. Its warnings
    (ignored hsflowd keys, repeated settings) go to the log, as _load prints them at start."""
    from .config import conffile

    settings, warnings = conffile.load(path)
    for warning in warnings:
        logging.getLogger("hsagent").warning("%s", warning)
    return settings


def _datagram_printer():
    """--print: each datagram sent, as `hsagent decode` shows it. Imported now, while the
    agent may still read every file (it may run as an unprivileged user later)."""
    from .sflow.datagram import decode_datagram
    from .sflow.text import datagram_lines

    sys.stdout.reconfigure(errors="backslashreplace")  # as `hsagent decode`: any terminal will do

    def print_datagram(data: bytes) -> None:
        print("\n".join(datagram_lines(decode_datagram(data), len(data))), flush=True)

    return print_datagram


def _status(args) -> int:
    from .status import show

    return show(args.sub_runtime_dir or args.runtime_dir)


def _refuse(err) -> None:
    print(f"hsagent: refusing to run: {err}", file=sys.stderr)
    logging.getLogger("hsagent").error("refusing to run: %s", err)  # a daemon's stderr is gone
    raise SystemExit(1)


def _account_to_run_as(settings):
    """As root: the configured user (default hsagent, else nobody); None: stay as we are."""
    from . import privileges

    try:
        return privileges.target_user(settings.user)
    except privileges.PrivilegeError as err:
        _refuse(err)


def _drop_privileges(account, settings, args) -> None:
    from . import privileges

    try:
        privileges.prepare_paths(account, files=[args.auto_file] if args.auto_file else [],
                                 directories=[args.runtime_dir])
        privileges.drop_to(account, extra_groups=["docker"] if settings.docker else [])
    except (privileges.PrivilegeError, OSError) as err:
        _refuse(err)


def _run(args) -> int:
    from . import daemon, logs
    from .agent import Agent

    settings = _load(args.config)  # a bad file is reported before detaching
    account = _account_to_run_as(settings)
    foreground = args.foreground or args.print_datagrams or args.once
    logs.setup(args.debug, syslog=not foreground)
    from .sampling.samplers import raise_descriptor_limit

    raise_descriptor_limit()  # a switch samples thousands of ports, a socket each
    started = None
    if not foreground:
        started = daemon.daemonize(args.pidfile)  # before any thread or socket exists
    elif args.pidfile:
        daemon.write_pidfile(args.pidfile)
    agent = Agent(reload_config=lambda: _reread(args.config),
                  on_datagram=_datagram_printer() if args.print_datagrams else None,
                  auto_file=args.auto_file,
                  status_file=None if args.once else os.path.join(args.runtime_dir, "status"))
    try:
        agent.configure(settings)  # as root: raw sockets open, modules load, product UUID is readable
        # setuid applies to every thread and clears the capabilities of all but this one,
        # which keeps exactly what sampling needs
        if account is not None:
            _drop_privileges(account, settings, args)
        if args.once:
            agent.lookup_dnssd_now()
            agent.run_once()
            return 0
        agent.run(ready=lambda: _ready(daemon, started))
    finally:
        agent.close()
    return 0


def _ready(daemon, started) -> None:
    """The agent's signal handlers are in place: tell systemd, and the command that
    daemonised us (which exits 0 now)."""
    daemon.notify("READY=1")
    if started:
        started()


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "decode":
        from . import decode

        return decode.main(args)
    if args.command == "check":
        return _check(args)
    if args.command == "status":
        return _status(args)
    if args.command == "discover":
        return _discover(args)
    return _run(args)


if __name__ == "__main__":
    sys.exit(main())
