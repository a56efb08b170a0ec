"""Benchmark: our rtnetlink readers (hsagent.netlink) against pyroute2's, on 1,000 interfaces.

    python3 bench/bench_rtnetlink.py [--pairs 500] [--dumps 20]     (as root)

Creates a namespace with that many veth pairs and, inside it, runs one fresh process per
library that: imports the library, opens a socket, dumps the links (RTM_GETLINK) and the 64-bit
counters (RTM_GETSTATS) and reduces each to what the interface poller uses (index, name,
flags, operstate, MAC; the rtnl_link_stats64 fields). It prints each library's RSS after the
import and after the dumps, and the median CPU time of a link dump and of a stats dump over
--dumps rounds. Both processes run in the same invocation on the same namespace. Removes the
namespace afterwards.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

from veths import cpu_ms, veth_namespace

REPO = Path(__file__).resolve().parent.parent


def rss_mb() -> float:
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def ours(dumps: int) -> dict:
    start_rss = rss_mb()
    from hsagent import netlink

    imported_rss = rss_mb()
    dumper = netlink.Dumper()
    link_ms, links = cpu_ms(lambda: list(dumper.links()), dumps)
    stats_ms, stats = cpu_ms(lambda: list(dumper.link_stats()), dumps)
    dumper.close()
    return {"start": start_rss, "imported": imported_rss, "after": rss_mb(),
            "link_ms": link_ms, "stats_ms": stats_ms, "links": len(links), "stats": len(stats)}


def theirs(dumps: int) -> dict:
    start_rss = rss_mb()
    from pyroute2 import IPRoute

    imported_rss = rss_mb()
    ipr = IPRoute()

    def links():
        return [(m["index"], m.get_attr("IFLA_IFNAME"), m["flags"], m.get_attr("IFLA_OPERSTATE"),
                 m.get_attr("IFLA_ADDRESS")) for m in ipr.get_links()]

    def stats():
        # filter_mask 1: IFLA_STATS_LINK_64 alone, as ours asks
        return [(m["ifindex"], dict(m.get_attr("IFLA_STATS_LINK_64") or {}))
                for m in ipr.stats("dump", filter_mask=1)]

    link_ms, found = cpu_ms(links, dumps)
    stats_ms, counters = cpu_ms(stats, dumps)
    ipr.close()
    return {"start": start_rss, "imported": imported_rss, "after": rss_mb(),
            "link_ms": link_ms, "stats_ms": stats_ms, "links": len(found), "stats": len(counters)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=500)
    parser.add_argument("--dumps", type=int, default=20)
    parser.add_argument("--inside", choices=("ours", "pyroute2"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.inside:
        result = (ours if args.inside == "ours" else theirs)(args.dumps)
        print(json.dumps(result))
        return
    if os.geteuid() != 0:
        sys.exit("needs root (creates a network namespace)")
    import pyroute2

    with veth_namespace("hsr-bench", args.pairs) as ns:
        print(f"namespace {ns}: {2 * args.pairs} interfaces; pyroute2 {pyroute2.__version__}")
        env = dict(os.environ, PYTHONPATH=str(REPO))
        results = {}
        for which in ("ours", "pyroute2"):
            out = subprocess.run(["ip", "netns", "exec", ns, sys.executable, __file__,
                                  "--inside", which, "--dumps", str(args.dumps)],
                                 check=True, env=env, capture_output=True, text=True).stdout
            results[which] = json.loads(out)
    print(f"{'':24s} {'hsagent.netlink':>16s} {'pyroute2':>12s}")
    rows = [("RSS at start, MB", "start", 1), ("RSS after import, MB", "imported", 1),
            ("RSS after dumps, MB", "after", 1), ("link dump, ms CPU", "link_ms", 2),
            ("stats dump, ms CPU", "stats_ms", 2)]
    for label, key, decimals in rows:
        a, b = (r[key] for r in results.values())
        print(f"{label:24s} {a:16.{decimals}f} {b:12.{decimals}f}")
    a, b = (f"{r['links']}/{r['stats']}" for r in results.values())
    print(f"{'links / stats seen':24s} {a:>16s} {b:>12s}")


if __name__ == "__main__":
    main()
