"""Benchmark: hsagent-acld under a controller's burst. Run as root:

    python3 bench/bench_acld.py [--acls 500] [--clients 20]

Creates a network namespace, starts the real service in it (`python3 -m hsagent.acld`,
netfilter backend, so every install is a real iptables-restore), and from a client process
in the same namespace (aiohttp, --clients concurrent keep-alive connections):
1. baseline: --acls GET /health requests, the HTTP floor of this service on this machine;
2. --acls PUTs of distinct ACLs (one rule each) answered 202 at once, then waits until every
   one is live, proven by the kernel: that many rules of ours in iptables-save;
3. the same again with ?wait=1 (each client waits for its rules to be live before the next).
Reports requests per second, time until all are live, and the installs each phase took.
Removes the namespace afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
TOKEN = "bench-token-0123456789abcdef"


async def drive(port: int, acls: int, clients: int) -> dict:
    """Runs inside the namespace: the three phases, over `clients` keep-alive connections."""
    import aiohttp

    base = f"http://127.0.0.1:{port}"
    headers = {"Authorization": f"Bearer {TOKEN}"}
    connector = aiohttp.TCPConnector(limit=clients)
    async with aiohttp.ClientSession(base, headers=headers, connector=connector) as session:
        async def health() -> dict:
            async with session.get("/health") as response:
                return await response.json()

        async def burst(requests) -> float:
            queue = list(requests)
            queue.reverse()

            async def worker():
                while queue:
                    method, path, body, expected = queue.pop()
                    async with session.request(method, path, json=body) as response:
                        await response.read()
                        assert response.status == expected, (path, response.status)
            start = time.perf_counter()
            await asyncio.gather(*(worker() for _ in range(clients)))
            return time.perf_counter() - start

        results = {}
        seconds = await burst([("GET", "/health", None, 200)] * acls)
        results["health"] = {"seconds": seconds}
        for phase, query, expected in (("put", "", 202), ("put_wait", "?wait=1", 201)):
            before = (await health())["installs"]
            requests = [("PUT", f"/acl/{phase}{n}{query}",
                         ["[iptables]", f"-A INPUT -s 198.18.{n // 250}.{n % 250 + 1} "
                                        f"-p udp --dport {10000 + n} -j DROP"], expected)
                        for n in range(acls)]
            start = time.perf_counter()
            seconds = await burst(requests)
            while (await health())["pending"] or await live_rules(phase) < acls:
                await asyncio.sleep(0.01)
            live = time.perf_counter() - start
            results[phase] = {"seconds": seconds, "live_seconds": live,
                              "installs": (await health())["installs"] - before,
                              "live_rules": await live_rules(phase)}
            async with session.delete("/acl/?wait=1") as response:
                assert response.status == 204
        return results


async def live_rules(phase: str) -> int:
    """Rules of this phase's ACLs in the kernel (each carries the comment hsacld:NAME)."""
    process = await asyncio.create_subprocess_exec("iptables-save", stdout=subprocess.PIPE)
    out, _ = await process.communicate()
    return out.decode().count(f'"hsacld:{phase}')


def run_client(port: int, acls: int, clients: int) -> None:
    print(json.dumps(asyncio.run(drive(port, acls, clients))))


def report(results: dict, acls: int, clients: int) -> None:
    print(f"{acls} requests from {clients} concurrent keep-alive clients, netfilter backend")
    floor = acls / results["health"]["seconds"]
    print(f"baseline: GET /health                       {floor:8.0f} requests/s")
    for phase, title in (("put", "PUT, 202 at once"), ("put_wait", "PUT ?wait=1")):
        r = results[phase]
        print(f"{title:<20} {acls / r['seconds']:8.0f} requests/s  all {r['live_rules']} live "
              f"after {r['live_seconds']:.2f} s  in {r['installs']} installs")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--acls", type=int, default=500)
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--client-port", type=int, help=argparse.SUPPRESS)  # the client process
    args = parser.parse_args()
    if args.client_port:
        return run_client(args.client_port, args.acls, args.clients)
    ns = f"acld-bench-{uuid.uuid4().hex[:6]}"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    service = None
    try:
        subprocess.run(["ip", "-n", ns, "link", "set", "lo", "up"], check=True)
        with tempfile.TemporaryDirectory() as tmp:
            tokens = Path(tmp, "tokens")
            tokens.write_text(TOKEN + "\n")
            tokens.chmod(0o600)
            port = 18081
            env = {**os.environ, "PYTHONPATH": str(REPO)}
            service = subprocess.Popen(
                ["ip", "netns", "exec", ns, sys.executable, "-m", "hsagent.acld", "--listen",
                 f"127.0.0.1:{port}", "--token-file", str(tokens), "--backend", "netfilter",
                 "--state-dir", f"{tmp}/state", "--max-rules", str(2 * args.acls)],
                env=env, stderr=subprocess.DEVNULL)
            wait_listening(ns, port)
            client = subprocess.run(
                ["ip", "netns", "exec", ns, sys.executable, __file__, "--acls", str(args.acls),
                 "--clients", str(args.clients), "--client-port", str(port)],
                env=env, capture_output=True, text=True, timeout=600)
            if client.returncode != 0:
                raise SystemExit(f"client failed:\n{client.stderr}")
            report(json.loads(client.stdout), args.acls, args.clients)
    finally:
        if service and service.poll() is None:
            service.send_signal(signal.SIGTERM)
            service.wait(30)
        subprocess.run(["ip", "netns", "delete", ns], check=False)


def wait_listening(ns: str, port: int, timeout: float = 20.0) -> None:
    probe = f"import socket; socket.create_connection(('127.0.0.1', {port}), 1).close()"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if subprocess.run(["ip", "netns", "exec", ns, sys.executable, "-c", probe],
                          capture_output=True).returncode == 0:
            return
        time.sleep(0.1)
    raise SystemExit("hsagent-acld did not start listening")


if __name__ == "__main__":
    main()
