"""Files written as root: a planted symbolic or hard link never makes the agent overwrite or
chown a file outside, the runtime directory must be ours, and the in-place fallback works."""

from __future__ import annotations

import os
import stat
import subprocess

import pytest

from conftest import HSAGENT
from hsagent import files

NOBODY = 65534


@pytest.fixture
def victim(tmp_path):
    """A root-owned file an attacker would like root to overwrite or give away."""
    path = tmp_path / "victim"
    path.write_text("precious\n")
    path.chmod(0o600)
    return path


@pytest.fixture
def shared_dir(tmp_path):
    """A directory every user may write, like /tmp (sticky)."""
    path = tmp_path / "shared"
    path.mkdir()
    path.chmod(0o1777)
    return path


def _untouched(path) -> None:
    st = os.lstat(path)
    assert (path.read_text(), st.st_uid, stat.S_IMODE(st.st_mode)) == ("precious\n", 0, 0o600)


def test_replace_writes_the_whole_file_with_the_mode_asked_for_less_the_umask(tmp_path):
    target = tmp_path / "auto"
    old_umask = os.umask(0o027)  # the unit's UMask
    try:
        files.replace(str(target), "one\n")
        files.replace(str(target), b"two\n", mode=0o600)
        assert stat.S_IMODE(target.stat().st_mode) == 0o600
        files.replace(str(target), b"three\n")
    finally:
        os.umask(old_umask)
    assert target.read_text() == "three\n"
    assert stat.S_IMODE(target.stat().st_mode) == 0o640
    assert os.listdir(tmp_path) == ["auto"]  # no temporary file left behind


def test_sync_directory_takes_a_directory_only(tmp_path):
    (tmp_path / "file").write_text("x")
    files.sync_directory(str(tmp_path))
    with pytest.raises(NotADirectoryError):
        files.sync_directory(str(tmp_path / "file"))


@pytest.mark.root
def test_a_link_at_the_path_is_replaced_not_followed(shared_dir, victim):
    link = shared_dir / "hsagent.pid"
    link.symlink_to(victim)
    files.replace(str(link), "1234\n")
    assert not link.is_symlink() and link.read_text() == "1234\n"
    _untouched(victim)


@pytest.mark.root
def test_a_link_at_the_temporary_name_is_not_followed(shared_dir, victim, monkeypatch):
    # the old predictable name, and the random name itself (as if guessed): the random one
    # is created with O_EXCL, so a guess only makes the agent pick another name
    (shared_dir / "hsagent.auto.tmp").symlink_to(victim)
    names = iter(["guessed", "fresh"])
    monkeypatch.setattr(files.secrets, "token_hex", lambda n: next(names))
    (shared_dir / ".hsagent.auto.guessed.tmp").symlink_to(victim)
    files.replace(str(shared_dir / "hsagent.auto"), "agentIP=198.18.0.1\n")
    assert (shared_dir / "hsagent.auto").read_text() == "agentIP=198.18.0.1\n"
    _untouched(victim)


def _as_nobody(function, *args) -> int:
    """Run function(*args) in a child that became `nobody`; its exit code: 0 done, 1 OSError."""
    pid = os.fork()
    if pid == 0:
        try:
            os.setgroups([])
            os.setgid(NOBODY)
            os.setuid(NOBODY)
            function(*args)
            code = 0
        except OSError:
            code = 1
        finally:
            os._exit(locals().get("code", 2))
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])


@pytest.mark.root
def test_only_the_file_writable_means_rewriting_it_in_place(readable_dir):
    # ProtectSystem=strict: /etc/hsagent.auto is writable, /etc is not
    directory = readable_dir / "etc"
    directory.mkdir(mode=0o755)
    auto = directory / "hsagent.auto"
    auto.write_text("a much longer old content\n")
    os.chown(auto, NOBODY, NOBODY)
    assert _as_nobody(files.replace, str(auto), "new\n") == 0
    assert auto.read_text() == "new\n"
    # and a file that is not there cannot be created there
    assert _as_nobody(files.replace, str(directory / "missing"), "new\n") == 1


def test_the_in_place_fallback_refuses_links(readable_dir):
    directory = readable_dir / "etc"
    directory.mkdir(mode=0o755)
    victim = readable_dir / "victim"
    victim.write_text("precious\n")
    victim.chmod(0o666)  # writable by nobody: only the link checks protect it
    (directory / "hsagent.auto").symlink_to(victim)
    os.link(victim, directory / "hard")
    assert _as_nobody(files.replace, str(directory / "hsagent.auto"), "x\n") == 1
    assert _as_nobody(files.replace, str(directory / "hard"), "x\n") == 1
    assert victim.read_text() == "precious\n"


@pytest.mark.root
def test_giving_a_file_away_never_follows_a_link(shared_dir, victim):
    (shared_dir / "auto").symlink_to(victim)
    with pytest.raises(files.UnsafePathError, match="symbolic link"):
        files.give_file(str(shared_dir / "auto"), NOBODY, NOBODY)
    os.link(victim, shared_dir / "hard")
    with pytest.raises(files.UnsafePathError, match="2 hard links"):
        files.give_file(str(shared_dir / "hard"), NOBODY, NOBODY)
    _untouched(victim)
    files.give_file(str(shared_dir / "new"), NOBODY, NOBODY)
    assert (shared_dir / "new").stat().st_uid == NOBODY


@pytest.mark.root
def test_the_runtime_directory_must_be_ours_and_private(shared_dir, tmp_path):
    victim_dir = tmp_path / "victim_dir"
    victim_dir.mkdir(mode=0o700)
    (shared_dir / "link").symlink_to(victim_dir)
    with pytest.raises(files.UnsafePathError, match="symbolic link"):
        files.give_directory(str(shared_dir / "link"), NOBODY, NOBODY)
    assert victim_dir.stat().st_uid == 0
    (shared_dir / "open").mkdir()
    (shared_dir / "open").chmod(0o777)
    with pytest.raises(files.UnsafePathError, match="writable by group or others"):
        files.give_directory(str(shared_dir / "open"), NOBODY, NOBODY)
    (shared_dir / "theirs").mkdir(mode=0o755)
    os.chown(shared_dir / "theirs", 4242, 4242)
    with pytest.raises(files.UnsafePathError, match="owned by uid 4242"):
        files.give_directory(str(shared_dir / "theirs"), NOBODY, NOBODY)
    files.give_directory(str(shared_dir / "run" / "hsagent"), NOBODY, NOBODY)
    st = (shared_dir / "run" / "hsagent").stat()
    assert (st.st_uid, stat.S_IMODE(st.st_mode)) == (NOBODY, 0o755)


def _agent_once(config_path, auto, runtime_dir) -> subprocess.CompletedProcess:
    return subprocess.run([*HSAGENT, "--once", "-c", config_path, "--auto-file", str(auto),
                           "--runtime-dir", str(runtime_dir)],
                          capture_output=True, text=True, timeout=60)


@pytest.mark.root
def test_agent_started_as_root_is_not_tricked_by_planted_links(receiver, config, shared_dir,
                                                               victim, tmp_path):
    conf = config(receiver, user="nobody")
    auto = shared_dir / "hsagent.auto"
    auto.symlink_to(victim)
    run = _agent_once(conf, auto, shared_dir / "run")
    assert run.returncode == 0, run.stderr
    _untouched(victim)
    assert not auto.is_symlink() and auto.stat().st_uid == NOBODY
    assert auto.read_text()  # the settings in force

    victim_dir = tmp_path / "victim_dir"
    victim_dir.mkdir(mode=0o700)
    (shared_dir / "runlink").symlink_to(victim_dir)
    run = _agent_once(conf, auto, shared_dir / "runlink")
    assert run.returncode == 1
    assert "refusing to run" in run.stderr and "symbolic link" in run.stderr
    assert victim_dir.stat().st_uid == 0
