"""Running Docker containers as logical data sources 3:<index>, counted from the kernel.

One background thread talks to dockerd: it lists the running containers, follows the events
stream, inspects each container that changes and works out where its counters live (cgroup
directories, pid, network adapters). It hands each result to the agent's loop through a
`Handoff`; `handle_events` (called when `fileno()` is readable) applies them to the container
table. Polls read only small kernel files, never the Docker API:
cgroup CPU/memory/block I/O (hsagent.cgroups) and /proc/<pid>/net/dev for network totals.

Adapters (ifIndex and MAC inside the container's network namespace) are read once per container
start, not per poll, on the agent's thread, with one rtnetlink link dump of that namespace named by its id
(IFLA_TARGET_NETNSID). That needs CAP_NET_ADMIN, which the agent keeps, where joining the
namespace with setns(2) would need CAP_SYS_ADMIN, which it drops. Reading
/proc/<pid>/root/sys/class/net instead would trust files the container controls, and inspect's
MacAddress does not say which interface it belongs to.

When dockerd goes away the table is kept (with --live-restore the containers keep running and
are still polled); the thread reconnects with backoff, re-lists, and containers that survived
keep their ds_index because indexes are keyed by container id.
"""

from __future__ import annotations

import logging
import math
import os
import threading
import zlib
from typing import NamedTuple

from .. import cgroups, netlink, procfs
from ..handoff import Handoff
from ..logs import Throttle
from ..sflow import records
from ..sflow.datagram import DS_LOGICAL, DS_PHYSICAL, CountersSample
from ..sflow.xdr import U32_MAX
from .host import MAX_ADAPTERS, machine_type

log = logging.getLogger(__name__)

DOCKER_URL = "unix:///var/run/docker.sock"
INDEX_BASE, INDEX_SPAN = 100000, 50000  # hsflowd's range for containers
BACKOFF_FIRST_S, BACKOFF_MAX_S = 1.0, 30.0
# Events after which a container is re-inspected (or, for destroy, dropped).
WATCHED_ACTIONS = ("start", "die", "destroy", "rename", "pause", "unpause", "stop", "kill")
BLOCKS = ("disk", "memory", "cpu", "net")  # the counter blocks read per poll, hsflowd's order


# --- what a container is, from docker inspect (pure) -----------------------------------

class Container(NamedTuple):
    id: str
    name: str
    pid: int
    paused: bool
    cpus: int  # virtual CPUs it may use
    dirs: cgroups.CgroupDirs | None = None
    adapters: tuple = ()  # records.Adapter


def parse_cpuset(text: str) -> int:
    """Number of CPUs in a cpuset list such as "0-3,6"; 0 for an empty one."""
    count = 0
    for part in filter(None, text.split(",")):
        low, _, high = part.partition("-")
        count += int(high or low) - int(low) + 1
    return count


def container_cpus(host_config: dict, host_cpus: int) -> int:
    """The CPUs a container may use: --cpus, else quota/period, else its cpuset, else the host's."""
    if host_config.get("NanoCpus"):
        return math.ceil(host_config["NanoCpus"] / 1e9)
    quota = host_config.get("CpuQuota") or 0
    if quota > 0:
        return math.ceil(quota / (host_config.get("CpuPeriod") or 100_000))
    return parse_cpuset(host_config.get("CpusetCpus") or "") or host_cpus


def describe(attrs: dict, host_cpus: int) -> Container | None:
    """The container behind a `docker inspect` document; None unless it is running."""
    state = attrs.get("State") or {}
    if not state.get("Running") or not state.get("Pid"):
        return None
    return Container(
        id=attrs["Id"],
        name=attrs["Name"].lstrip("/"),
        pid=state["Pid"],
        paused=bool(state.get("Paused")),
        cpus=container_cpus(attrs.get("HostConfig") or {}, host_cpus),
    )


# --- data-source indexes and names (pure) ----------------------------------------------

def preferred_index(container_id: str) -> int:
    return INDEX_BASE + zlib.crc32(container_id.encode()) % INDEX_SPAN


def assign_index(container_id: str, taken) -> int:
    """The preferred index for this id, or the next free one after it (wrapping in the range)."""
    start = preferred_index(container_id) - INDEX_BASE
    for step in range(INDEX_SPAN):
        index = INDEX_BASE + (start + step) % INDEX_SPAN
        if index not in taken:
            return index
    raise RuntimeError(f"all {INDEX_SPAN} container data-source indexes are in use")


def unique_hostname(container: Container, names_in_use) -> str:
    """The container's name, or name.<short id> while another container holds that name."""
    if container.name in names_in_use:
        return f"{container.name}.{container.id[:12]}"
    return container.name


def container_uuid(container_id: str) -> bytes:
    return bytes.fromhex(container_id[:32])


# --- counters -> records (pure) --------------------------------------------------------

def net_dev_totals(interfaces: dict[str, procfs.NetDev]) -> list[int]:
    """rx/tx bytes, packets, errs and drops summed over the interfaces (lo excluded) of a
    /proc/<pid>/net/dev: the container's own network namespace."""
    return [sum(column) for column in zip(procfs.NetDev(*[0] * 8), *(
        counters for name, counters in interfaces.items() if name != "lo"))]


def virt_net_io(totals: list[int]) -> records.VirtNetIo:
    return records.VirtNetIo(*totals)


def virt_cpu(container: Container, cpu_ms: int) -> records.VirtCpu:
    state = records.VIR_DOMAIN_PAUSED if container.paused else records.VIR_DOMAIN_RUNNING
    return records.VirtCpu(state, cpu_ms & U32_MAX, container.cpus)


def virt_memory(memory: cgroups.Memory, host_memory: int) -> records.VirtMemory:
    limit = host_memory if memory.limit is None else min(memory.limit, host_memory)
    return records.VirtMemory(memory.usage, limit)


def virt_disk_io(io: cgroups.BlockIo) -> records.VirtDiskIo:
    # A container has no disk of its own, so capacity, allocation and available are 0 (as hsflowd).
    return records.VirtDiskIo(0, 0, 0, io.reads, io.read_bytes, io.writes, io.write_bytes, 0)


# --- thin I/O --------------------------------------------------------------------------

def host_memory_bytes() -> int:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def read_adapters(pid: int) -> tuple:
    """The container's interfaces (not loopback), from a link dump of its network namespace.

    A container on the host's network (or with none) has no namespace id of its own: no adapters.
    """
    dumper = netlink.Dumper()
    try:
        nsid = dumper.netnsid_of_pid(pid)
        if nsid is None:
            return ()
        links = [link for link in dumper.links(nsid) if not link.flags & netlink.IFF_LOOPBACK and link.mac]
    finally:
        dumper.close()
    return tuple(records.Adapter(link.index, [link.mac]) for link in links[:MAX_ADAPTERS])


def locate(container: Container, layout: cgroups.Layout,
           roots: procfs.Roots = procfs.HOST) -> Container:
    """The container with its cgroup directories filled in (raises OSError)."""
    return container._replace(dirs=cgroups.process_cgroup_dirs(container.pid, layout, roots))


def adapters_of(container: Container) -> tuple:
    try:
        return read_adapters(container.pid)
    except OSError as err:  # e.g. no CAP_NET_ADMIN: still a container, just no adapter list
        log.debug("no adapters for container %s: %s", container.name, err)
        return ()


# --- the events thread -----------------------------------------------------------------

class _Watcher:
    """Talks to dockerd on its own thread; results go to the loop through `handoff`.

    Messages: ("snapshot", [Container]) after each (re)connection, ("update", Container) and
    ("remove", container id).
    """

    def __init__(self, handoff: Handoff, layout: cgroups.Layout, base_url: str,
                 roots: procfs.Roots):
        import docker  # the SDK (~10 MB) is loaded only when the module is enabled

        self._sdk = docker
        self.handoff, self.layout, self.base_url, self.roots = handoff, layout, base_url, roots
        self.host_cpus = os.cpu_count() or 1
        self.stopping = threading.Event()
        self._lock = threading.Lock()
        self._client = None
        self._stream = None
        self.thread = threading.Thread(target=self._run, name="hsagent-docker", daemon=True)

    def _run(self) -> None:
        backoff = BACKOFF_FIRST_S
        while not self.stopping.is_set():
            try:
                if self._session():
                    backoff = BACKOFF_FIRST_S
            except Exception as e:  # the SDK raises requests, urllib3 and docker errors alike
                if not self.stopping.is_set():
                    log.warning("lost dockerd at %s (%s); retrying in %.0f s",
                                self.base_url, e, backoff)
            self._disconnect()
            if self.stopping.wait(backoff):
                break
            backoff = min(backoff * 2, BACKOFF_MAX_S)

    def _session(self) -> bool:
        """One connection: list, then follow events until the stream ends. True if it listed."""
        client = self._sdk.DockerClient(base_url=self.base_url, version="auto")
        with self._lock:
            self._client = client
            # Subscribe before listing so that nothing between the two is missed.
            self._stream = client.events(decode=True, filters={"type": "container"})
        if self.stopping.is_set():
            return False
        running = client.containers.list(filters={"status": "running"})
        self.handoff.post(("snapshot", [c for c in map(self._located, (c.attrs for c in running)) if c]))
        log.info("watching %d running containers on %s", len(running), self.base_url)
        for event in self._stream:
            if event.get("Action") in WATCHED_ACTIONS:
                self._changed(client, event["id"], event["Action"])
        return True

    def _changed(self, client, container_id: str, action: str) -> None:
        if action == "destroy":
            self.handoff.post(("remove", container_id))
            return
        try:
            attrs = client.api.inspect_container(container_id)
        except self._sdk.errors.NotFound:
            attrs = {}
        container = self._located(attrs) if attrs else None
        self.handoff.post(("update", container) if container else ("remove", container_id))

    def _located(self, attrs: dict) -> Container | None:
        container = describe(attrs, self.host_cpus)
        if container is None:
            return None
        try:
            return locate(container, self.layout, self.roots)
        except (OSError, KeyError) as e:  # it stopped meanwhile, or no cgroup we can read
            log.debug("skipping container %s: %s", container.name, e)
            return None

    def _disconnect(self) -> None:
        with self._lock:
            stream, client, self._stream, self._client = self._stream, self._client, None, None
        for closable in (stream, client):
            if closable is not None:
                try:
                    closable.close()
                except Exception:  # closing a connection that already broke
                    pass

    def stop(self) -> None:
        self.stopping.set()
        self._disconnect()  # unblocks the thread's read on the events stream
        self.thread.join(timeout=5)


# --- the poller ---------------------------------------------------------------------

def enabled(settings) -> bool:
    return settings.docker


class Poller:
    """Docker containers as data sources; see the module docstring. It hosts domains
    (`domain_count`), which the host poller's virt_node counts."""

    def __init__(self, settings, peers=None, base_url: str = DOCKER_URL,
                 roots: procfs.Roots = procfs.HOST):
        self._roots = roots
        self.host_memory = host_memory_bytes()
        uname = os.uname()
        self._machine_type = machine_type(uname.machine)
        self._os_release = uname.release
        self.containers: dict[str, Container] = {}  # by id
        self.indexes: dict[str, int] = {}  # container id -> ds_index, for its lifetime
        self._by_index: dict[int, str] = {}
        self.changes = 0  # containers came or went (the Poller protocol)
        self._hostnames: dict[str, str] = {}  # container id -> hostname
        self._throttle = Throttle(log, interval=3600)
        self._handoff = Handoff()
        self._watcher = _Watcher(self._handoff, cgroups.read_layout(roots), base_url, roots)
        self._watcher.thread.start()

    # agent loop interface

    def fileno(self) -> int:
        return self._handoff.fileno()

    def handle_events(self) -> None:
        """Apply what the events thread found. Never blocks."""
        for kind, payload in self._handoff.take():
            if kind == "snapshot":
                self._apply_snapshot(payload)
            elif kind == "update":
                self._upsert(payload)
            else:
                self._remove(payload)

    def domain_count(self) -> int:
        return len(self.containers)

    def sources(self):
        return [(DS_LOGICAL, self.indexes[cid]) for cid in self.containers]

    def poll(self, due) -> list[CountersSample]:
        samples = []
        for cid, container in self.containers.items():
            source = (DS_LOGICAL, self.indexes[cid])
            if source in due:
                sample = self._sample(container, source[1])
                if sample is not None:
                    samples.append(sample)
        return samples

    def close(self) -> None:
        self._watcher.stop()
        self._handoff.close()

    # container table

    def _apply_snapshot(self, containers: list[Container]) -> None:
        alive = {c.id for c in containers}
        for cid in [cid for cid in self.containers if cid not in alive]:
            self._remove(cid)
        for container in containers:
            self._upsert(container)

    def _upsert(self, container: Container) -> None:
        # Adapters are read here, on the agent's thread: after the switch to an unprivileged
        # user only this thread keeps CAP_NET_ADMIN (capabilities are per thread).
        previous = self.containers.get(container.id)
        same_process = previous is not None and previous.pid == container.pid
        container = container._replace(adapters=previous.adapters if same_process else adapters_of(container))
        if container.id not in self.indexes:
            index = assign_index(container.id, self._by_index)
            self.indexes[container.id] = index
            self._by_index[index] = container.id
            self.changes += 1
        others = {name for cid, name in self._hostnames.items() if cid != container.id}
        self._hostnames[container.id] = unique_hostname(container, others)
        self.containers[container.id] = container

    def _remove(self, container_id: str) -> None:
        if self.containers.pop(container_id, None) is not None:
            self.changes += 1
        self._hostnames.pop(container_id, None)
        index = self.indexes.pop(container_id, None)
        self._by_index.pop(index, None)
        for block in BLOCKS:
            self._throttle.clear(f"{container_id}:{block}")

    # one sample

    def _sample(self, c: Container, index: int) -> CountersSample | None:
        """All blocks for one container; None if it vanished meanwhile (no made-up values)."""
        net_dev = self._roots.proc_path(str(c.pid), "net", "dev")
        blocks = {}
        readers = (  # in hsflowd's record order
            ("disk", lambda: virt_disk_io(cgroups.block_io(c.dirs))),
            ("memory", lambda: virt_memory(cgroups.memory(c.dirs), self.host_memory)),
            ("cpu", lambda: virt_cpu(c, cgroups.cpu_ms(c.dirs))),
            ("net", lambda: virt_net_io(net_dev_totals(procfs.parse_net_dev(procfs.read_text(net_dev))))),
        )
        for block, read in readers:
            try:
                blocks[block] = read()
            except (OSError, ValueError) as e:
                if self._vanished(c):
                    return None
                self._throttle(logging.WARNING, f"{c.id}:{block}",
                               "container %s: cannot read its %s counters (%s); leaving them out",
                               c.name, block, e)
        return CountersSample(DS_LOGICAL, index, [
            records.HostAdapters(list(c.adapters)),
            *blocks.values(),
            records.HostParent(DS_PHYSICAL, 1),
            records.HostDescr(self._hostnames[c.id], container_uuid(c.id), self._machine_type,
                              records.OS_NAME_LINUX, self._os_release),
        ])

    def _vanished(self, c: Container) -> bool:
        return not (cgroups.exists(c.dirs) and os.path.isdir(self._roots.proc_path(str(c.pid), "ns")))
