"""Files the agent writes, often as root, in directories other users may be able to write.

Nothing here follows a symbolic link at the path it is given or changes the owner of
anything but a file it holds open, so a link planted at the pid file, the auto file, its
temporary file or the runtime directory cannot make root overwrite or chown another file.
(A planted hard link is refused too: it is the same trick where fs.protected_hardlinks is 0.)
"""

from __future__ import annotations

import errno
import os
import secrets
import stat

_TEMP_ATTEMPTS = 16  # random 48-bit names: a collision is an attack or a bug, not bad luck
# Where the directory may not be written, only the file (ProtectSystem=strict allows
# /etc/hsagent.auto, not /etc), the file is rewritten in place instead.
_READ_ONLY_DIRECTORY = (errno.EACCES, errno.EPERM, errno.EROFS)


class UnsafePathError(OSError):
    """A path the agent refuses to write through: a link, not a regular file, shared."""

    def __init__(self, path: str, problem: str):
        super().__init__(errno.EPERM, problem, path)

    def __str__(self) -> str:
        return f"{self.filename}: {self.strerror}"


def replace(path: str, data: str | bytes, mode: int = 0o644) -> None:
    """Give `path` the contents `data` in one step (readers see the old or the new file);
    a new file gets `mode` less the umask, a file rewritten in place keeps its mode.

    A new file with a random name is created beside it (O_EXCL|O_NOFOLLOW: never an existing
    file or link), written, synced, then renamed over `path` (rename replaces a link at
    `path` itself, never its target)."""
    if isinstance(data, str):
        data = data.encode()
    directory, name = os.path.split(os.path.abspath(path))
    try:
        fd, temp = _create_temp(directory, name, mode)
    except OSError as err:
        if err.errno not in _READ_ONLY_DIRECTORY or not os.path.lexists(path):
            raise
        _overwrite(path, data)
        return
    try:
        _write_all(fd, data)
        os.fsync(fd)
        os.close(fd)
        fd = -1
        os.rename(temp, path)
    except BaseException:
        if fd >= 0:
            os.close(fd)
        _unlink_quietly(temp)
        raise


def sync_directory(directory: str) -> None:
    """Make the renames and unlinks done in `directory` durable (fsync(2) of the directory:
    `replace` alone leaves the old or the new file after a crash, but which one is only
    settled once the directory is synced). Once after many changes is enough."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def give_file(path: str, uid: int, gid: int, mode: int = 0o644) -> None:
    """Create `path` if it is missing and make uid:gid its owner, through a descriptor."""
    fd = _open(path, os.O_WRONLY | os.O_CREAT | os.O_NONBLOCK, mode)
    try:
        _require_plain_file(fd, path)
        os.fchown(fd, uid, gid)
    finally:
        os.close(fd)


def give_directory(path: str, uid: int, gid: int) -> None:
    """Create directory `path` if missing (0755) and make uid:gid its owner.

    An existing one must be a real directory (not a link), owned by us or by uid, and not
    writable by group or others: otherwise someone else controls what is inside it."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    try:
        os.mkdir(path, 0o755)
    except FileExistsError:
        pass
    fd = _open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        st = os.fstat(fd)
        if st.st_uid not in (os.geteuid(), uid):
            raise UnsafePathError(path, f"directory is owned by uid {st.st_uid}, not by us")
        if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
            raise UnsafePathError(path, f"directory is writable by group or others "
                                        f"(mode {stat.S_IMODE(st.st_mode):04o})")
        os.fchown(fd, uid, gid)
    finally:
        os.close(fd)


def read_small(path: str, limit: int) -> bytes:
    """The contents of a regular file of at most `limit` bytes (a FIFO or a device would
    block or never end; a huge file would fill memory)."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise UnsafePathError(path, f"not a regular file but {_kind(st.st_mode)}")
        data = os.read(fd, limit + 1)
        if len(data) > limit:
            raise UnsafePathError(path, f"larger than {limit} bytes")
        return data
    finally:
        os.close(fd)


def _kind(mode: int) -> str:
    """What a file that is not a regular file is, for an error message."""
    for test, kind in ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                       (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return kind
    return "a special file"


def _create_temp(directory: str, name: str, mode: int) -> tuple[int, str]:
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    for _ in range(_TEMP_ATTEMPTS):
        temp = os.path.join(directory, f".{name}.{secrets.token_hex(6)}.tmp")
        try:
            # `mode` less the umask, as open() would give (the unit's UMask=0027 keeps the
            # status file from other users)
            return os.open(temp, flags, mode), temp
        except FileExistsError:
            continue
    raise FileExistsError(errno.EEXIST, "no free temporary file name", directory)


def _overwrite(path: str, data: bytes) -> None:
    """Rewrite an existing file in place: not atomic, but never through a link."""
    fd = _open(path, os.O_WRONLY | os.O_NONBLOCK)
    try:
        _require_plain_file(fd, path)
        _write_all(fd, data)
        os.ftruncate(fd, len(data))
        os.fsync(fd)
    finally:
        os.close(fd)


def _open(path: str, flags: int, mode: int = 0o644) -> int:
    try:
        return os.open(path, flags | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
    except OSError as err:
        if err.errno == errno.ELOOP or (err.errno == errno.ENOTDIR and os.path.islink(path)):
            raise UnsafePathError(path, "is a symbolic link; refusing to follow it") from None
        raise


def _require_plain_file(fd: int, path: str) -> None:
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        raise UnsafePathError(path, "not a regular file")
    if st.st_nlink != 1:
        raise UnsafePathError(path, f"has {st.st_nlink} hard links; refusing to write it")


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _unlink_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass
