"""CPU of one poll of N running containers: hsagent's kernel-file reads vs the Docker stats API.

    python3 bench/bench_docker.py [--containers 200] [--polls 5]

Starts dockerd (tests/dockerd.sh), runs N busybox `sleep` containers, then measures in fresh
processes, each timed with resource.getrusage (whole process, all threads):
  hsagent   Poller.poll over all N data sources (and the same poll plus sFlow encoding);
  stats API container.stats(stream=False, one_shot=True) for the same N containers, with
            dockerd's own CPU for those calls (from /proc/<dockerd>/stat) as well as the client's.
Stats requests go STATS_WORKERS at a time (one by one, dockerd takes about a second each).
Prints the median per round and the ratio, then removes the containers.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

LABEL = "hsd-bench"
DOCKERD_PID = "/var/run/docker.pid"
# dockerd answers a one-shot stats request at its next once-a-second collection, so ~1 s each;
# asking for many at once is what any client polling hundreds of containers would have to do.
STATS_WORKERS = 50


def cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def process_cpu_s(pid: str) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def dockerd_cpu_s() -> float:
    return process_cpu_s(Path(DOCKERD_PID).read_text().strip())


def engine_cpu_s() -> float:
    """CPU of dockerd, containerd and every containerd shim: where stats requests are served
    (each container's shim reads its cgroup for containerd, which answers dockerd)."""
    total = 0.0
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if Path(f"/proc/{pid}/comm").read_text().strip().startswith(("dockerd", "containerd")):
                total += process_cpu_s(pid)
        except OSError:  # exited while we looked
            continue
    return total


def docker_client(pool_size: int = 10):
    import docker
    return docker.DockerClient(base_url="unix:///var/run/docker.sock", version="auto",
                               max_pool_size=pool_size)


# --- the two measurements, each run in a fresh process ---------------------------------

def measure_agent(count: int, polls: int) -> dict:
    from hsagent.pollers.docker import Poller
    from hsagent.settings import Settings
    from hsagent.sflow.datagram import DatagramBuilder

    poller = Poller(Settings(docker=True))
    deadline = time.monotonic() + 120
    while poller.domain_count() < count:
        if time.monotonic() > deadline:
            raise SystemExit(f"poller saw {poller.domain_count()} of {count} containers")
        time.sleep(0.1)
        poller.handle_events()
    due = set(poller.sources())
    poll_cpu, encode_cpu, wall = [], [], []
    for _ in range(polls):
        t0, c0 = time.perf_counter(), cpu_s()
        samples = poller.poll(due)
        c1 = cpu_s()
        wall.append(time.perf_counter() - t0)
        builder = DatagramBuilder("127.0.0.1")
        for sample in samples:
            builder.add(sample)
        builder.flush()
        encode_cpu.append(cpu_s() - c0)
        poll_cpu.append(c1 - c0)
        if len(samples) != count:
            raise SystemExit(f"poll returned {len(samples)} samples for {count} containers")
    poller.close()
    return {"poll_cpu": statistics.median(poll_cpu),
            "poll_encode_cpu": statistics.median(encode_cpu), "wall": statistics.median(wall)}


def measure_stats_api(count: int, polls: int) -> dict:
    api = docker_client(pool_size=STATS_WORKERS)
    containers = api.containers.list(filters={"label": LABEL})[:count]
    client_cpu, daemon_cpu, engine_cpu, wall = [], [], [], []
    for _ in range(polls):
        t0, c0, d0, e0 = time.perf_counter(), cpu_s(), dockerd_cpu_s(), engine_cpu_s()
        with ThreadPoolExecutor(STATS_WORKERS) as pool:
            list(pool.map(lambda c: c.stats(stream=False, one_shot=True), containers))
        wall.append(time.perf_counter() - t0)
        client_cpu.append(cpu_s() - c0)
        daemon_cpu.append(dockerd_cpu_s() - d0)
        engine_cpu.append(engine_cpu_s() - e0)
    api.close()
    return {"client_cpu": statistics.median(client_cpu),
            "dockerd_cpu": statistics.median(daemon_cpu),
            "engine_cpu": statistics.median(engine_cpu), "wall": statistics.median(wall)}


def in_fresh_process(what: str, count: int, polls: int) -> dict:
    out = subprocess.run([sys.executable, __file__, "--measure", what, "--containers", str(count),
                          "--polls", str(polls)], check=True, stdout=subprocess.PIPE, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


# --- containers ------------------------------------------------------------------------

def start_containers(image: str, count: int) -> None:
    api = docker_client()

    def start(_):
        api.containers.run(image, ["sleep", "3600"], detach=True, labels=[LABEL],
                           name=f"hsd-bench-{uuid.uuid4().hex[:10]}")

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(start, range(count)))
    api.close()


def remove_containers() -> None:
    api = docker_client()
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda c: c.remove(force=True),
                      api.containers.list(all=True, filters={"label": LABEL})))
    api.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--containers", type=int, default=200)
    parser.add_argument("--polls", type=int, default=5)
    parser.add_argument("--measure", choices=("agent", "stats"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        measure = measure_agent if args.measure == "agent" else measure_stats_api
        print(json.dumps(measure(args.containers, args.polls)))
        return

    image = subprocess.run(["bash", str(ROOT / "tests" / "dockerd.sh")], check=True,
                           capture_output=True, text=True).stdout.strip().splitlines()[-1]
    remove_containers()  # left over from an interrupted run
    try:
        t0 = time.monotonic()
        start_containers(image, args.containers)
        print(f"started {args.containers} containers in {time.monotonic() - t0:.1f} s")
        agent = in_fresh_process("agent", args.containers, args.polls)
        stats = in_fresh_process("stats", args.containers, args.polls)
    finally:
        remove_containers()
    n, ms = args.containers, 1000
    rows = [
        ("hsagent poll (cgroup + /proc files)", agent["poll_cpu"], agent["wall"]),
        ("hsagent poll + sFlow encode", agent["poll_encode_cpu"], None),
        ("stats API: client process", stats["client_cpu"], stats["wall"]),
        ("stats API: dockerd", stats["dockerd_cpu"], None),
        ("stats API: dockerd+containerd+shims", stats["engine_cpu"], None),
    ]
    print(f"\none poll of {n} containers, median of {args.polls} rounds (ms)")
    print(f"{'method':<40}{'CPU':>10}{'wall':>10}")
    for label, cpu, wall in rows:
        print(f"{label:<40}{cpu * ms:>10.1f}{'' if wall is None else f'{wall * ms:.1f}':>10}")
    own, client_cpu = agent["poll_cpu"], stats["client_cpu"]
    print(f"\nstats API CPU / hsagent poll CPU: "
          f"client + engine {(client_cpu + stats['engine_cpu']) / own:.0f}x, "
          f"client + dockerd {(client_cpu + stats['dockerd_cpu']) / own:.0f}x, "
          f"client alone {client_cpu / own:.0f}x; wall {stats['wall'] / agent['wall']:.0f}x")


if __name__ == "__main__":
    main()
