"""The Debian package: built with packaging/build-deb.sh, installed with apt (which brings Debian's
python3-psutil, -docker, -dnspython, -pyroute2), run with Debian's /usr/bin/python3, purged."""

from __future__ import annotations

import grp
import os
import pwd
import re
import shutil
import subprocess
import tempfile
import tomllib
from pathlib import Path

import pytest

from conftest import Receiver

pytestmark = [pytest.mark.slow, pytest.mark.root]  # builds and installs a .deb

TOP = Path(__file__).resolve().parent.parent
VERSION = tomllib.loads((TOP / "pyproject.toml").read_text())["project"]["version"]
POLICY_RC_D = Path("/usr/sbin/policy-rc.d")
SITE_PACKAGE = Path("/usr/lib/python3/dist-packages/hsagent")
# What the package owns on disk, and must take away again on purge.
INSTALLED = [SITE_PACKAGE, Path("/usr/bin/hsagent"), Path("/etc/hsagent.conf"),
             Path("/etc/default/hsagent"), Path("/etc/init.d/hsagent"),
             Path("/lib/systemd/system/hsagent.service"), Path("/etc/hsagent.auto"),
             Path("/usr/bin/hsagent-acld"), Path("/etc/hsagent-acld.conf"),
             Path("/lib/systemd/system/hsagent-acld.service"),
             Path("/usr/bin/hsagent-controller"), Path("/etc/hsagent-controller.conf"),
             Path("/lib/systemd/system/hsagent-controller.service")]
# Only the system's own tools: nothing from the pyenv that runs pytest.
SYSTEM_ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "DEBIAN_FRONTEND": "noninteractive",
              "LANG": "C.UTF-8"}


def run(*cmd, check=True, timeout=120, **kw) -> subprocess.CompletedProcess:
    done = subprocess.run(cmd, env=SYSTEM_ENV, capture_output=True, text=True, timeout=timeout,
                          **kw)
    if check and done.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} exited {done.returncode}:\n{done.stdout}{done.stderr}")
    return done


@pytest.fixture(scope="module")
def services_stay_down():
    """policy-rc.d answering 101 (the Debian way to say "start no services") while installing."""
    if POLICY_RC_D.exists():
        if run(str(POLICY_RC_D), "hsagent", "start", check=False).returncode != 101:
            pytest.skip(f"{POLICY_RC_D} allows starting services; installing would start hsagent")
        yield
        return
    POLICY_RC_D.write_text("#!/bin/sh\n# hsagent tests: start no services\nexit 101\n")
    POLICY_RC_D.chmod(0o755)
    try:
        yield
    finally:
        POLICY_RC_D.unlink()


@pytest.fixture(scope="module")
def deb(tmp_path_factory):
    if os.geteuid() != 0:
        pytest.skip("installing a package needs root")
    for tool in ("dpkg-deb", "apt-get"):
        if not shutil.which(tool):
            pytest.skip(f"{tool} is not installed")
    out = tmp_path_factory.mktemp("deb")
    built = subprocess.run([str(TOP / "packaging" / "build-deb.sh")], env={**SYSTEM_ENV, "OUTDIR": str(out)},
                           capture_output=True, text=True, timeout=120, check=True)
    path = Path(built.stdout.strip())
    assert path == out / f"hsagent_{VERSION}_all.deb"
    return path


@pytest.fixture(scope="module")
def installed(deb, services_stay_down):
    # apt wants a path it can tell from a package name, and the _apt user must read it
    staged = Path(tempfile.mkdtemp(prefix="hso-deb-"))
    staged.chmod(0o755)
    shutil.copy(deb, staged)
    try:
        run("apt-get", "install", "-y", "-q", f"./{deb.name}", cwd=staged, timeout=600)
        yield deb
    finally:
        run("apt-get", "purge", "-y", "-q", "hsagent", check=False, timeout=300)
        shutil.rmtree(staged, ignore_errors=True)


def write_conf(directory: Path, receiver: Receiver, extra: str = "") -> Path:
    conf = directory / "hsagent.conf"
    conf.write_text("sflow {\n  DNSSD = off\n"
                    f"  collector {{ ip = {receiver.host} udpport = {receiver.port} }}\n{extra}}}\n")
    conf.chmod(0o644)
    return conf


def test_archive_contents(deb):
    info = run("dpkg-deb", "--info", str(deb)).stdout
    depends = re.search(r"^ Depends: (.*)$", info, re.M).group(1)
    for dependency in ("python3 (>= 3.11)", "python3-psutil", "python3-docker", "python3-dnspython",
                       "python3-pyroute2", "python3-aiohttp"):
        assert dependency in depends
    assert re.search(rf"^ Version: {re.escape(VERSION)}$", info, re.M)
    assert run("dpkg-deb", "--field", str(deb), "Architecture").stdout.strip() == "all"
    with tempfile.TemporaryDirectory() as control:
        run("dpkg-deb", "--control", str(deb), control)
        assert Path(control, "conffiles").read_text().split() == [
            "/etc/hsagent.conf", "/etc/default/hsagent", "/etc/init.d/hsagent",
            "/etc/hsagent-acld.conf", "/etc/hsagent-controller.conf"]
    listing = run("dpkg-deb", "--contents", str(deb)).stdout.splitlines()
    assert all(" root/root " in line for line in listing), "files must belong to root"
    names = {line.split()[-1].lstrip(".") for line in listing}
    assert {"/usr/bin/hsagent", "/etc/hsagent.conf", "/etc/init.d/hsagent",
            "/lib/systemd/system/hsagent.service", "/usr/lib/python3/dist-packages/hsagent/cli.py",
            "/usr/bin/hsagent-acld", "/etc/hsagent-acld.conf",
            "/lib/systemd/system/hsagent-acld.service", "/usr/bin/hsagent-controller",
            "/etc/hsagent-controller.conf", "/lib/systemd/system/hsagent-controller.service",
            "/usr/share/hsagent/ovsdb-server-hsagent.conf"} <= names  # ovs { }: opt-in socket access
    assert not any("__pycache__" in name for name in names)
    assert (TOP / "packaging" / "debian" / "launcher").read_text().startswith("#!/usr/bin/python3 ")


def test_install_creates_user_and_auto_file(installed):
    account = pwd.getpwnam("hsagent")
    assert account.pw_uid < 1000, "a system user"
    assert account.pw_shell in ("/usr/sbin/nologin", "/bin/false")
    try:
        docker = grp.getgrnam("docker")
    except KeyError:
        pass
    else:
        assert "hsagent" in docker.gr_mem
    auto = os.stat("/etc/hsagent.auto")
    assert (auto.st_uid, auto.st_gid) == (account.pw_uid, account.pw_gid)
    assert run("dpkg-query", "--show", "--showformat=${Status}", "hsagent").stdout == \
        "install ok installed"
    # enabled for both init systems, started by neither (policy-rc.d)
    assert Path("/etc/systemd/system/multi-user.target.wants/hsagent.service").is_symlink()
    assert list(Path("/etc").glob("rc2.d/S*hsagent"))
    assert run("/etc/init.d/hsagent", "status", check=False).returncode == 3


def test_runs_on_debian_python(installed):
    launcher = Path("/usr/bin/hsagent").read_text().splitlines()[0]
    assert launcher.split()[0] == "#!/usr/bin/python3"
    assert run("/usr/bin/hsagent", "--version").stdout.strip() == f"hsagent {VERSION}"
    checked = run("/usr/bin/hsagent", "check", "-c", "/etc/hsagent.conf")
    assert "collectors" in checked.stdout
    # the package's files, not a copy elsewhere on the path, with Debian's libraries
    where = run("/usr/bin/python3", "-I", "-c", "import hsagent, docker, psutil, dns, pyroute2;"
                "print(hsagent.__file__, docker.__file__, psutil.__file__, dns.__file__,"
                " pyroute2.__file__)").stdout.split()
    assert where[0] == str(SITE_PACKAGE / "__init__.py")
    assert all(p.startswith("/usr/lib/python3/dist-packages/") for p in where[1:]), where


def test_acld_runs_on_debian_python(installed):
    """hsagent-acld with Debian's python3-aiohttp; its unit is installed, valid, not enabled
    (it needs a token file first)."""
    assert run("/usr/bin/hsagent-acld", "--version").stdout.strip() == f"hsagent-acld {VERSION}"
    where = run("/usr/bin/python3", "-I", "-c", "import aiohttp; print(aiohttp.__file__)").stdout
    assert where.startswith("/usr/lib/python3/dist-packages/")
    refused = run("/usr/bin/hsagent-acld", "--token-file", "/nonexistent", check=False)
    assert refused.returncode == 2 and "/nonexistent" in refused.stderr
    assert not Path("/etc/systemd/system/multi-user.target.wants/hsagent-acld.service").exists()
    if shutil.which("systemd-analyze"):
        verified = run("systemd-analyze", "verify", "/lib/systemd/system/hsagent-acld.service",
                       check=False)
        assert verified.returncode == 0 and "hsagent-acld" not in verified.stderr, verified.stderr
def test_controller_is_installed_not_enabled(installed):
    assert run("/usr/bin/hsagent-controller", "--help").stdout.startswith("usage: hsagent-controller")
    assert Path("/lib/systemd/system/hsagent-controller.service").exists()
    assert not Path("/etc/systemd/system/multi-user.target.wants/hsagent-controller.service").exists()


def test_every_module_imports_with_debian_libraries(installed):
    script = ("import importlib, pkgutil, hsagent\n"
              "for m in pkgutil.walk_packages(hsagent.__path__, 'hsagent.'):\n"
              "    if not m.name.endswith('.__main__'):\n"
              "        importlib.import_module(m.name)\n"
              # pyroute2 is imported inside this function: call it (no psample module is fine)
              "from hsagent.sampling import psample\n"
              "try:\n    psample.resolve_family()\n"
              "except psample.PsampleUnavailable:\n    pass\n")
    run("/usr/bin/python3", "-I", "-c", script)


def test_once_sends_from_debian_python(installed, readable_dir):
    receiver = Receiver()
    try:
        conf = write_conf(readable_dir, receiver)
        run("/usr/bin/hsagent", "--once", "-c", str(conf), "--auto-file",
            str(readable_dir / "hsagent.auto"), timeout=60)
        assert receiver.wait_for(lambda r: r.samples(ds_class=2), timeout=5), "no host counters"
        assert "collector=127.0.0.1" in (readable_dir / "hsagent.auto").read_text()
    finally:
        receiver.close()


SERVICE_CAPS = "+net_raw,+net_admin"
# Opens what packet sampling needs: an AF_PACKET socket and an NFLOG group (an unused number).
OPEN_SAMPLERS = ("from hsagent.sampling import afpacket, nflog\n"
                 "afpacket.PacketSampler('lo', 1).close()\n"
                 "nflog.NflogSampler(51123, 1).close()\n")


def as_service(*cmd, caps=SERVICE_CAPS, check=True, timeout=60):
    """cmd as the unit runs the agent: user hsagent with its groups, `caps` as ambient
    capabilities (inherited by what it runs) and nothing else in the bounding set, no new privileges."""
    return run("setpriv", "--reuid=hsagent", "--regid=hsagent", "--init-groups",
               f"--inh-caps={caps}", f"--ambient-caps={caps}", f"--bounding-set=-all,{caps}",
               "--no-new-privs", *cmd, check=check, timeout=timeout)


@pytest.fixture
def setpriv(installed):
    if not shutil.which("setpriv"):
        pytest.skip("setpriv (util-linux) is not installed")


def test_service_identity_opens_sampling_sockets(setpriv):
    as_service("/usr/bin/python3", "-I", "-c", OPEN_SAMPLERS)
    # and they are what needs the capabilities
    denied = run("setpriv", "--reuid=hsagent", "--regid=hsagent", "--init-groups",
                 "--bounding-set=-all", "--no-new-privs", "/usr/bin/python3", "-I", "-c",
                 OPEN_SAMPLERS, check=False)
    assert denied.returncode != 0 and "PermissionError" in denied.stderr, denied.stderr


def test_service_identity_sends(setpriv, readable_dir):
    receiver = Receiver()
    try:
        conf = write_conf(readable_dir, receiver)
        auto = readable_dir / "hsagent.auto"
        auto.touch()  # as postinst makes /etc/hsagent.auto
        shutil.chown(auto, "hsagent", "hsagent")
        as_service("/usr/bin/hsagent", "--once", "-c", str(conf), "--auto-file", str(auto))
        assert receiver.wait_for(lambda r: r.samples(ds_class=2), timeout=5), "no host counters"
        assert "collector=127.0.0.1" in auto.read_text()
    finally:
        receiver.close()


def test_reinstall_keeps_state(installed):
    Path("/etc/hsagent.auto").write_text("# kept\n")
    run("dpkg", "-i", str(installed), timeout=300)
    assert Path("/etc/hsagent.auto").read_text() == "# kept\n"
    assert run("/usr/bin/hsagent", "--version").stdout.strip() == f"hsagent {VERSION}"


def test_purge_removes_everything(installed):
    run("apt-get", "purge", "-y", "-q", "hsagent", timeout=300)
    left = [str(p) for p in INSTALLED if p.exists()]
    assert not left, f"left behind: {left}"
    assert not Path("/etc/systemd/system/multi-user.target.wants/hsagent.service").exists()
    assert not list(Path("/etc").glob("rc?.d/[SK]*hsagent"))
    pwd.getpwnam("hsagent")  # the user stays, as Debian packages leave them
