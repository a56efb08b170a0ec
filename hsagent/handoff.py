"""Handing results from a helper thread to the agent's one loop.

Threads exist only where a library blocks (the Docker events stream, DNS lookups). Such a
thread `post`s what it found; the loop waits for `fileno()` to become readable, as it does for
its sockets, and `take`s everything posted so far. A wake-up byte on a non-blocking pipe makes
the descriptor readable; one pending byte is enough however many messages wait behind it.
"""

from __future__ import annotations

import os
import queue
import threading


class Handoff:
    def __init__(self):
        self._inbox: queue.SimpleQueue = queue.SimpleQueue()
        self._read_fd, self._write_fd = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        # close() and a late post() from the thread must not race: a closed descriptor number
        # may already belong to another file by the time the thread writes.
        self._lock = threading.Lock()
        self._closed = False

    def fileno(self) -> int:
        return self._read_fd

    def post(self, message=None) -> None:
        """From any thread: queue `message` and wake the loop (None: a bare wake-up)."""
        with self._lock:
            if self._closed:
                return
            if message is not None:
                self._inbox.put(message)
            try:
                os.write(self._write_fd, b"!")
            except BlockingIOError:  # the pipe is full, so a wake-up is already pending
                pass

    def take(self) -> list:
        """On the loop: every message posted so far, oldest first; never blocks."""
        try:
            while os.read(self._read_fd, 4096):
                pass
        except BlockingIOError:
            pass
        messages = []
        while True:
            try:
                messages.append(self._inbox.get_nowait())
            except queue.Empty:
                return messages

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            os.close(self._read_fd)
            os.close(self._write_fd)
