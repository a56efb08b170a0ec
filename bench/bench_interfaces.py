"""Benchmark: CPU cost of interface counters for 1,000 interfaces, in a fresh process.

    python3 bench/bench_interfaces.py [--pairs 500] [--polls 15]     (as root)

Creates a namespace with that many veth pairs, runs this file again inside it (so netlink and
/sys see only those interfaces), and prints CPU times: building the poller (link dump +
sysfs, once), one poll of every interface (median), the same plus encoding into datagrams,
and the baseline of reading /proc/net/dev once. Removes the namespace afterwards.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
from pathlib import Path

from veths import cpu_ms, read_proc_net_dev, veth_namespace

REPO = Path(__file__).resolve().parent.parent


def inside(polls: int) -> None:
    """Runs in the namespace: measure and print the table."""
    import_ms, _ = cpu_ms(lambda: __import__("hsagent.pollers.interfaces"))
    from hsagent.pollers.interfaces import Poller
    from hsagent.settings import Settings
    from hsagent.sflow.datagram import DatagramBuilder

    build_ms, poller = cpu_ms(lambda: Poller(Settings()))
    due = poller.sources()
    poll_ms, samples = cpu_ms(lambda: poller.poll(due), polls)

    def poll_and_encode():
        builder = DatagramBuilder("198.18.0.1")
        datagrams = [d for s in poller.poll(due) if (d := builder.add(s))]
        return datagrams + [builder.flush()]

    encode_ms, datagrams = cpu_ms(poll_and_encode, polls)
    proc_ms, text = cpu_ms(read_proc_net_dev, polls)
    peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    poller.close()

    interfaces = text.count(b"\n") - 2  # two header lines
    rows = [
        ("import hsagent.pollers.interfaces (once)", import_ms),
        ("build poller: link dump + sysfs (once)", build_ms),
        (f"poll {len(samples)} interfaces (median of {polls})", poll_ms),
        (f"poll + encode into {len(datagrams)} datagrams (median)", encode_ms),
        (f"baseline: read /proc/net/dev once, {interfaces} lines (median)", proc_ms),
    ]
    width = max(len(name) for name, _ in rows)
    print(f"{'CPU time':<{width}}  ms")
    for name, ms in rows:
        print(f"{name:<{width}}  {ms:8.2f}")
    print(f"{'poll / baseline':<{width}}  {poll_ms / proc_ms:8.1f}x")
    print(f"{'peak RSS of this process':<{width}}  {peak_rss_mb:8.1f} MB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=500)
    parser.add_argument("--polls", type=int, default=15)
    parser.add_argument("--inside", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.inside:
        inside(args.polls)
        return
    if os.geteuid() != 0:
        sys.exit("needs root (creates a network namespace)")
    with veth_namespace("hsi-bench", args.pairs) as ns:
        print(f"namespace {ns}: {args.pairs} veth pairs = {2 * args.pairs} interfaces")
        env = dict(os.environ, PYTHONPATH=str(REPO))
        subprocess.run(["ip", "netns", "exec", ns, sys.executable, __file__, "--inside",
                        "--polls", str(args.polls)], check=True, env=env)


if __name__ == "__main__":
    main()
