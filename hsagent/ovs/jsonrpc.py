"""JSON-RPC over a unix stream socket, the way ovsdb-server speaks it (RFC 7047 section 4).

OVSDB sends JSON objects back to back with nothing between them, so framing means finding
where each top-level object ends: `Splitter` tracks brace depth outside strings and hands
complete objects to the json module. The socket is non-blocking; nothing here waits.
"""

from __future__ import annotations

import itertools
import json
import socket

RECV_BYTES = 65536
_OPEN, _CLOSE, _QUOTE, _BACKSLASH = ord("{"), ord("}"), ord('"'), ord("\\")


class ConnectionLost(OSError):
    """The server closed the connection or sent something that is not JSON-RPC."""


class Splitter:
    """Bytes in, complete top-level JSON objects out, across any split of the stream."""

    def __init__(self):
        self._buffer = bytearray()
        self._scanned = 0  # bytes of _buffer already scanned, with the state below
        self._depth = 0
        self._in_string = False
        self._escaped = False

    def feed(self, data: bytes) -> list:
        self._buffer += data
        messages = []
        start = 0
        for i in range(self._scanned, len(self._buffer)):
            byte = self._buffer[i]
            if self._in_string:
                if self._escaped:
                    self._escaped = False
                elif byte == _BACKSLASH:
                    self._escaped = True
                elif byte == _QUOTE:
                    self._in_string = False
            elif byte == _QUOTE:
                self._in_string = True
            elif byte == _OPEN:
                self._depth += 1
            elif byte == _CLOSE:
                self._depth -= 1
                if self._depth == 0:
                    messages.append(self._decode(self._buffer[start:i + 1]))
                    start = i + 1
        del self._buffer[:start]
        self._scanned = len(self._buffer)
        if self._depth == 0 and self._buffer.strip():
            raise ConnectionLost(f"not a JSON object: {bytes(self._buffer[:40])!r}")
        return messages

    @staticmethod
    def _decode(text: bytes):
        try:
            return json.loads(text)
        except ValueError as err:
            raise ConnectionLost(f"malformed JSON from the server: {err}") from None


class Connection:
    """One JSON-RPC session: `call` sends a request and later runs its reply handler;
    `receive` reads what arrived, answers `echo` and returns the notifications."""

    def __init__(self, path: str):
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.setblocking(False)
        try:
            self.sock.connect(path)  # a unix socket connects at once or fails (EAGAIN: backlog full)
        except OSError:
            self.sock.close()
            raise
        self._splitter = Splitter()
        self._outgoing = bytearray()
        self._ids = itertools.count(1)
        self._handlers: dict[int, object] = {}  # request id -> handler(result, error)

    def fileno(self) -> int:
        return self.sock.fileno()

    def call(self, method: str, params: list, handler) -> int:
        """Send a request; `handler(result, error)` runs when its reply arrives."""
        request_id = next(self._ids)
        self._handlers[request_id] = handler
        self._send({"method": method, "params": params, "id": request_id})
        return request_id

    @property
    def pending(self) -> int:
        return len(self._handlers)

    def _send(self, message: dict) -> None:
        self._outgoing += json.dumps(message, separators=(",", ":")).encode()
        self.flush()

    def flush(self) -> None:
        """Write what the socket takes now; the rest waits for the next flush."""
        while self._outgoing:
            try:
                sent = self.sock.send(self._outgoing)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as err:
                raise ConnectionLost(f"cannot write to {self.path}: {err.strerror}") from None
            del self._outgoing[:sent]

    def receive(self) -> list[dict]:
        """Everything readable now: replies go to their handlers, the server's `echo` is
        answered, and notifications (`update`) are returned in order."""
        notifications = []
        while True:
            try:
                data = self.sock.recv(RECV_BYTES)
            except (BlockingIOError, InterruptedError):
                break
            except OSError as err:
                raise ConnectionLost(f"{self.path}: {err.strerror}") from None
            if not data:
                raise ConnectionLost(f"{self.path}: the server closed the connection")
            for message in self._splitter.feed(data):
                notification = self._dispatch(message)
                if notification is not None:
                    notifications.append(notification)
        self.flush()
        return notifications

    def _dispatch(self, message: dict) -> dict | None:
        if not isinstance(message, dict):
            raise ConnectionLost(f"not a JSON-RPC message: {message!r:.60}")
        if "method" in message:
            if message["method"] == "echo" and message.get("id") is not None:
                # the server's inactivity probe: reply with the same params and id
                self._send({"result": message.get("params", []), "error": None, "id": message["id"]})
                return None
            return message
        handler = self._handlers.pop(message.get("id"), None)
        if handler is not None:
            handler(message.get("result"), message.get("error"))
        return None

    def close(self) -> None:
        self.sock.close()
        self._handlers.clear()
