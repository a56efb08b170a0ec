"""Bearer tokens (RFC 6750) from a file only root can read: the one token file format of
hsagent-acld and hsagent-controller (each reads it; neither imports the other).

The file holds one token a line; a line `TOKEN read-only` gives a token that may only read.
Blank lines and `#` comments are skipped. Tokens are compared in constant time, against every
token of the file, so the answer's timing does not tell how much of a guess was right.
"""

from __future__ import annotations

import hmac
import os
import re
import stat

# RFC 6750's b64token, at least 16 characters so that it cannot be guessed
TOKEN = re.compile(r"[A-Za-z0-9._~+/-]{16,}=*\Z")
READ_ONLY = "read-only"


class TokenFileError(Exception):
    pass


class Tokens:
    def __init__(self, tokens: dict[str, bool]):
        self._tokens = [(token.encode(), writable) for token, writable in tokens.items()]

    def __len__(self) -> int:
        return len(self._tokens)

    @classmethod
    def load(cls, path: str) -> "Tokens":
        return cls(read_token_file(path))

    def check(self, authorization: str | None) -> str:
        """'missing', 'invalid', 'read' or 'write' for an Authorization header's value."""
        if not authorization:
            return "missing"
        scheme, _, credentials = authorization.partition(" ")
        if scheme.lower() != "bearer" or not credentials.strip():
            return "missing"
        offered = credentials.strip().encode("utf-8", "replace")
        found = None
        for token, writable in self._tokens:
            if hmac.compare_digest(token, offered):
                found = writable
        if found is None:
            return "invalid"
        return "write" if found else "read"


def read_token_file(path: str) -> dict[str, bool]:
    """token -> whether it may write, from a regular file owned by root (or us) that nobody
    else may read or write."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError as err:
        raise TokenFileError(f"{path}: {err.strerror}") from None
    with os.fdopen(fd, encoding="utf-8") as f:
        info = os.fstat(f.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise TokenFileError(f"{path}: not a regular file")
        if info.st_uid not in (0, os.geteuid()):
            raise TokenFileError(f"{path}: owned by uid {info.st_uid}, not root")
        if info.st_mode & 0o077:
            raise TokenFileError(f"{path}: readable or writable by others (mode "
                                 f"{stat.S_IMODE(info.st_mode):04o}); chmod 600 it")
        try:
            text = f.read()
        except (OSError, UnicodeDecodeError) as err:
            raise TokenFileError(f"{path}: {err}") from None
    return parse_tokens(text, path)


def parse_tokens(text: str, path: str) -> dict[str, bool]:
    tokens: dict[str, bool] = {}
    for number, line in enumerate(text.splitlines(), 1):
        words = line.split()
        if not words or words[0].startswith("#"):
            continue
        if not TOKEN.match(words[0]) or words[1:] not in ([], [READ_ONLY]):
            raise TokenFileError(f"{path}:{number}: expected TOKEN or 'TOKEN {READ_ONLY}', a "
                                 "token being at least 16 of A-Z a-z 0-9 ._~+/-")
        tokens[words[0]] = not words[1:]
    if not tokens:
        raise TokenFileError(f"{path}: no tokens")
    return tokens
