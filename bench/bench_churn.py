"""Benchmark: what deleting sampled switch ports costs the agent, before and after a change.

    mkdir -p /tmp/base && git archive main | tar -x -C /tmp/base
    python3 bench/bench_churn.py --baseline /tmp/base [--ports 500] [--rounds 3]   (as root)

For the baseline tree and for this one, alternately: a namespace with --ports veth pairs, the
agent (`hsagent -f`, `switchport` matching one end of each) sampling all of them; then every
port is deleted in one `ip -batch` and we wait until the agent holds no AF_PACKET socket; then
the ports are made again and, once all are sampled, the agent is stopped (SIGTERM). Reported:
the agent's CPU time (user + system, /proc/PID/stat) from the deletion until all were closed,
the wall time that took, the ERROR lines it logged, and how long SIGTERM took with every port
sampled. The baseline in the same run is the other tree.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime, stime


def packet_sockets(pid: int) -> int:
    inodes = {line.split()[-1] for line in Path(f"/proc/{pid}/net/packet").read_text().splitlines()[1:]}
    count = 0
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except FileNotFoundError:
            continue
        count += target.startswith("socket:[") and target[8:-1] in inodes
    return count


def wait(predicate, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def measure(tree: str, ports: int) -> dict:
    ns = f"hsb-churn-{uuid.uuid4().hex[:6]}"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    with tempfile.TemporaryDirectory() as work:
        conf = Path(work, "hsagent.conf")
        conf.write_text("sflow {\n DNSSD = off\n user = root\n switchport = v[0-9]+a\n"
                        " collector { ip = 127.0.0.1 udpport = 6343 }\n}\n")
        log = open(Path(work, "log"), "w+")
        agent = subprocess.Popen(["ip", "netns", "exec", ns, sys.executable, "-m", "hsagent", "-f",
                                  "-c", str(conf), "--auto-file", str(Path(work, "auto")),
                                  "--runtime-dir", work], env=dict(os.environ, PYTHONPATH=tree),
                                 cwd=tree, stderr=log)
        batch = "".join(f"link add v{i}a type veth peer name v{i}b\nlink set v{i}a up\n"
                        for i in range(ports))

        def add_all():
            subprocess.run(["ip", "-n", ns, "-batch", "-"], input=batch, text=True, check=True)
            if not wait(lambda: packet_sockets(agent.pid) == ports, 120):
                raise RuntimeError(f"the agent of {tree} did not open {ports} samplers")

        try:
            add_all()
            time.sleep(1)
            cpu, start = cpu_seconds(agent.pid), time.monotonic()
            subprocess.run(["ip", "-n", ns, "-batch", "-"], text=True, check=True,
                           input="".join(f"link del v{i}a\n" for i in range(ports)))
            if not wait(lambda: packet_sockets(agent.pid) == 0, 120):
                raise RuntimeError(f"the agent of {tree} did not close its samplers")
            result = {"cpu_s": cpu_seconds(agent.pid) - cpu, "wall_s": time.monotonic() - start}
            add_all()
            start = time.monotonic()
            agent.send_signal(signal.SIGTERM)
            agent.wait(60)
            result["stop_s"] = time.monotonic() - start
        finally:
            agent.send_signal(signal.SIGTERM)
            try:
                agent.wait(30)
            except subprocess.TimeoutExpired:
                agent.kill()
                agent.wait()
            subprocess.run(["ip", "netns", "delete", ns], check=False)
        log.seek(0)
        result["errors"] = sum(" ERROR " in line for line in log)
        log.close()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", required=True, help="a checkout of the code to compare with")
    parser.add_argument("--ports", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    runs = {"baseline": [], "this tree": []}
    for _ in range(args.rounds):
        runs["baseline"].append(measure(args.baseline, args.ports))
        runs["this tree"].append(measure(str(REPO), args.ports))
    print(f"{args.ports} sampled ports deleted at once, median of {args.rounds} rounds:")
    for name, results in runs.items():
        print(f"  {name:<10} agent CPU {statistics.median(r['cpu_s'] for r in results):6.2f} s, "
              f"until all closed {statistics.median(r['wall_s'] for r in results):6.2f} s, "
              f"ERROR lines {statistics.median(r['errors'] for r in results):5.0f}, "
              f"SIGTERM with all sampled {statistics.median(r['stop_s'] for r in results):6.2f} s")


if __name__ == "__main__":
    main()
