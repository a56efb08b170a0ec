"""CPU of one poll of N running containers: hsagent's kernel-file reads vs the Docker stats API.

    python3 bench/bench_docker.py [--containers 200] [--polls 5]

Starts dockerd (tests/dockerd.sh), runs N busybox `sleep` containers, then measures in fresh
processes, each timed with resource.getrusage (whole process, all threads):
  hsagent   Collector.poll over all N data sources (and the same poll plus sFlow encoding);
  stats API container.stats(stream=False, one_shot=True) for the same N containers, with
            dockerd's own CPU for those calls (from /proc/<dockerd>/stat) as well as the client's.
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


def cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def dockerd_cpu_s() -> float:
    pid = Path(DOCKERD_PID).read_text().strip()
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def client():
    import docker
    return docker.DockerClient(base_url="unix:///var/run/docker.sock", version="auto")


# --- the two measurements, each run in a fresh process ---------------------------------

def measure_agent(count: int, polls: int) -> dict:
    from hsagent.collectors.docker import Collector
    from hsagent.settings import Settings
    from hsagent.sflow.datagram import DatagramBuilder

    collector = Collector(Settings(docker=True))
    deadline = time.monotonic() + 120
    while collector.domain_count() < count:
        if time.monotonic() > deadline:
            raise SystemExit(f"collector saw {collector.domain_count()} of {count} containers")
        time.sleep(0.1)
        collector.handle_events()
    due = set(collector.sources())
    poll_cpu, encode_cpu, wall = [], [], []
    for _ in range(polls):
        t0, c0 = time.perf_counter(), cpu_s()
        samples = collector.poll(due)
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
    collector.close()
    return {"poll_cpu": statistics.median(poll_cpu), "poll_encode_cpu": statistics.median(encode_cpu),
            "wall": statistics.median(wall)}


def measure_stats_api(count: int, polls: int) -> dict:
    api = client()
    containers = api.containers.list(filters={"label": LABEL})[:count]
    client_cpu, daemon_cpu, wall = [], [], []
    for _ in range(polls):
        t0, c0, d0 = time.perf_counter(), cpu_s(), dockerd_cpu_s()
        for container in containers:
            container.stats(stream=False, one_shot=True)
        wall.append(time.perf_counter() - t0)
        client_cpu.append(cpu_s() - c0)
        daemon_cpu.append(dockerd_cpu_s() - d0)
    api.close()
    return {"client_cpu": statistics.median(client_cpu), "dockerd_cpu": statistics.median(daemon_cpu),
            "wall": statistics.median(wall)}


def in_fresh_process(what: str, count: int, polls: int) -> dict:
    out = subprocess.run([sys.executable, __file__, "--measure", what, "--containers", str(count),
                          "--polls", str(polls)], check=True, stdout=subprocess.PIPE, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


# --- containers ------------------------------------------------------------------------

def start_containers(image: str, count: int) -> None:
    api = client()

    def start(_):
        api.containers.run(image, ["sleep", "3600"], detach=True, labels=[LABEL],
                           name=f"hsd-bench-{uuid.uuid4().hex[:10]}")

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(start, range(count)))
    api.close()


def remove_containers() -> None:
    api = client()
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
    try:
        t0 = time.monotonic()
        start_containers(image, args.containers)
        print(f"started {args.containers} containers in {time.monotonic() - t0:.1f} s")
        agent = in_fresh_process("agent", args.containers, args.polls)
        stats = in_fresh_process("stats", args.containers, args.polls)
    finally:
        remove_containers()
    n, ms = args.containers, 1000
    stats_cpu = stats["client_cpu"] + stats["dockerd_cpu"]
    print(f"\none poll of {n} containers, median of {args.polls} (ms)")
    print(f"{'method':<34}{'CPU':>10}{'wall':>10}")
    print(f"{'hsagent poll (cgroup + /proc)':<34}{agent['poll_cpu'] * ms:>10.1f}{agent['wall'] * ms:>10.1f}")
    print(f"{'hsagent poll + sFlow encode':<34}{agent['poll_encode_cpu'] * ms:>10.1f}{'':>10}")
    print(f"{'stats API: client process':<34}{stats['client_cpu'] * ms:>10.1f}{stats['wall'] * ms:>10.1f}")
    print(f"{'stats API: dockerd':<34}{stats['dockerd_cpu'] * ms:>10.1f}{'':>10}")
    print(f"{'stats API: client + dockerd':<34}{stats_cpu * ms:>10.1f}{'':>10}")
    print(f"\nCPU ratio, stats API (client + dockerd) / hsagent poll: "
          f"{stats_cpu / agent['poll_cpu']:.0f}x (client only: "
          f"{stats['client_cpu'] / agent['poll_cpu']:.0f}x); "
          f"wall ratio {stats['wall'] / agent['wall']:.0f}x")


if __name__ == "__main__":
    main()
