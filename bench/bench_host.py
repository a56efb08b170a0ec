"""Benchmark: what one poll of the host data source (2:1) costs, before and after a change.

    mkdir -p /tmp/base && git archive main | tar -x -C /tmp/base
    python3 bench/bench_host.py --baseline /tmp/base [--polls 200]

Runs, for the baseline tree and for this one, a fresh Python process that imports the host
poller from that tree, polls once to warm up (the slow-changing lists are read then), then
measures the median CPU time of --polls polls and the process's RSS afterwards. Both run in
the same invocation, alternately, on the same machine state; each is run --rounds times and the
median reported. Also checks that both produce the same record types in the same order.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

CHILD = """
import json, resource, statistics, time
from hsagent.pollers import host
poller = host.Poller(None)
(sample,) = poller.poll({host.HOST_SOURCE})
times = []
for _ in range(%(polls)d):
    start = time.process_time()
    poller.poll({host.HOST_SOURCE})
    times.append((time.process_time() - start) * 1000)
rss_kb = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmRSS:"))
print(json.dumps({"poll_ms": statistics.median(times), "rss_mb": rss_kb / 1024,
                  "records": [type(r).__name__ for r in sample.records]}))
"""


def measure(tree: str, polls: int) -> dict:
    env = dict(os.environ, PYTHONPATH=tree)
    out = subprocess.run([sys.executable, "-c", CHILD % {"polls": polls}], env=env, cwd=tree,
                         check=True, capture_output=True, text=True).stdout
    return json.loads(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", required=True, help="a checkout of the code to compare with")
    parser.add_argument("--polls", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    runs = {"baseline": [], "this tree": []}
    for _ in range(args.rounds):
        runs["baseline"].append(measure(args.baseline, args.polls))
        runs["this tree"].append(measure(str(REPO), args.polls))
    kinds = {name: results[0]["records"] for name, results in runs.items()}
    for name, results in runs.items():
        poll = statistics.median(r["poll_ms"] for r in results)
        rss = statistics.median(r["rss_mb"] for r in results)
        print(f"{name:10s}  one host poll {poll:6.3f} ms CPU   process RSS {rss:6.1f} MB")
    same = kinds["baseline"] == kinds["this tree"]
    print("records:", "same types and order" if same else f"DIFFER: {kinds}")


if __name__ == "__main__":
    main()
