"""Benchmark: the whole agent on a host with 1,000 interfaces. Run as root:

    python3 bench/bench_agent.py [--pairs 500] [--polls 10] [--watch 20]

Creates a namespace with that many veth pairs and, inside it:
1. in a fresh process, CPU time of one agent poll of everything (host 2:1 plus every interface,
   encoded into datagrams and sent to a loopback port), median of --polls, against the floor
   of reading /proc/net/dev once, measured in the same process;
2. the real daemon (`hsagent -f`, polling = 5): its RSS, and its CPU seconds over --watch
   seconds of steady running.
Removes the namespace afterwards.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from veths import cpu_ms, read_proc_net_dev, veth_namespace

REPO = Path(__file__).resolve().parent.parent


def measure_poll(polls: int) -> None:
    """Runs inside the namespace, in a fresh process."""
    sys.path.insert(0, str(REPO))
    from hsagent.agent import Agent
    from hsagent.settings import Collector, Settings

    settings = Settings(dnssd=False, collectors=(Collector("127.0.0.1", 9),))
    agent = Agent(auto_file=None)
    agent.configure(settings)
    poll_ms, _ = cpu_ms(agent.run_once, polls)
    floor_ms, _ = cpu_ms(read_proc_net_dev, polls)
    sources = sum(len(due) for due in agent._due.values())
    print(f"one agent poll, {sources} data sources, encoded and sent  {poll_ms:8.2f} ms CPU")
    print(f"baseline: read /proc/net/dev once                      {floor_ms:8.2f} ms CPU")
    print(f"ratio                                                  {poll_ms / floor_ms:8.1f} x")
    print(f"datagrams per poll                                     {agent.transport.datagrams_sent / polls:8.0f}")
    agent.close()


def process_cpu_seconds(pid: int) -> float:
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mb(pid: int) -> float:
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def watch_daemon(ns: str, seconds: int) -> None:
    directory = tempfile.mkdtemp()
    conf = Path(directory, "hsagent.conf")
    conf.write_text("sflow {\n DNSSD = off\n user = root\n polling = 5\n"
                    " collector { ip = 127.0.0.1 udpport = 9 }\n}\n")
    agent = subprocess.Popen(["ip", "netns", "exec", ns, sys.executable, "-m", "hsagent", "-f", "-c", str(conf),
                              "--auto-file", f"{directory}/auto", "--runtime-dir", directory], cwd=REPO)
    try:
        time.sleep(8)  # started, every data source polled at least once
        start = process_cpu_seconds(agent.pid)
        time.sleep(seconds)
        used = process_cpu_seconds(agent.pid) - start
        print(f"daemon RSS after {8 + seconds} s                                {rss_mb(agent.pid):8.1f} MB")
        print(f"daemon CPU, polling every 5 s                          {used / seconds * 100:8.2f} % of a core"
              f" ({used / seconds * 5 * 1000:.1f} ms per poll interval)")
    finally:
        agent.terminate()
        agent.wait(10)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pairs", type=int, default=500)
    parser.add_argument("--polls", type=int, default=10)
    parser.add_argument("--watch", type=int, default=20)
    parser.add_argument("--inside", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.inside:
        measure_poll(args.polls)
        return
    with veth_namespace("hsb", args.pairs, up=True) as ns:
        print(f"namespace {ns}: {2 * args.pairs} interfaces")
        subprocess.run(["ip", "netns", "exec", ns, sys.executable, __file__, "--inside",
                        "--polls", str(args.polls)], check=True)
        watch_daemon(ns, args.watch)


if __name__ == "__main__":
    main()
