"""hsagent-controller: options, ACL rules, the ACL client against a small acl_server-style
service, the elephant app, and the whole process fed with sFlow over UDP."""

from __future__ import annotations

import asyncio
import ipaddress
import json
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from aiohttp import web
from hypothesis import given, settings, strategies as st

from hsagent.analyser.flows import FlowTable
from hsagent.analyser.listener import RECEIVE_BUFFER, Listener, open_udp
from hsagent.analyser.thresholds import Event, Monitor, Threshold
from hsagent.controller.aclclient import (AclError, AclMetrics, AclService, SwitchLink,
                                          open_session, service_url)
from hsagent.controller.config import ConfigError, Endpoint, endpoint, load, threshold
from hsagent.controller.elephant import (PREFIX, ElephantApp, FiveTuple, acl_name, acl_rules,
                                         flow_of_rules, flow_spec)
from hsagent.sflow.datagram import Datagram, FlowSample, Interface, encode_datagram
from hsagent.sflow.records import HEADER_PROTOCOL_ETHERNET, SampledHeader

from conftest import wait_until
from packet_builders import ethernet, ipv4, udp

CONTROLLER = [sys.executable, "-m", "hsagent.controller"]
TOKEN = "s3cret-token-for-tests"
READ_ONLY = "look-but-do-not-touch"


# --- options ---------------------------------------------------------------------------------

def test_threshold_and_endpoint_forms():
    assert threshold("10M").bits_per_second == 10e6
    assert threshold("2.5G").bits_per_second == 2.5e9
    assert threshold("10%").fraction == pytest.approx(0.1)
    for bad in ("ten", "-5M", "0%", "150%", "10 M"):
        with pytest.raises(ValueError):
            threshold(bad)
    assert endpoint("198.18.0.1:6343") == Endpoint("198.18.0.1", 6343)
    assert endpoint("[::]:6343") == Endpoint("", 6343)
    assert endpoint("[2001:db8::1]:80") == Endpoint("2001:db8::1", 80)
    assert endpoint(":6343") == Endpoint("", 6343)
    for bad in ("6343", "host:6343", "1.2.3.4:99999", "[::1]"):
        with pytest.raises(ValueError):
            endpoint(bad)


def test_command_line_over_file(tmp_path):
    conf = tmp_path / "c.conf"
    conf.write_text("# example\nthreshold = 20M\nsmoothing = 2   # seconds\n"
                    "acl-url = https://{agent}:8443\n")
    options, _ = load(["-c", str(conf), "--threshold", "5%", "--interval", "1",
                       "--agents", "10.0.0.0/8, 2001:db8::/32,192.0.2.1"])
    assert [str(n) for n in options.agents] == ["10.0.0.0/8", "2001:db8::/32", "192.0.2.1/32"]
    assert options.threshold.fraction == pytest.approx(0.05)
    assert (options.smoothing, options.interval, options.acl_url) == (2.0, 1.0, "https://{agent}:8443")
    assert options.sflow_listen == Endpoint("", 6343)


@pytest.mark.parametrize("text, problem", [
    ("thresold = 10M\n", ":1: unknown setting 'thresold'"),
    ("\n\nsmoothing = fast\n", ":3: smoothing: could not convert"),
    ("dscp = 64\n", ":1: dscp: 64 is not in 0-63"),
    ("acl-url = http://{host}:8080\n", ":1: acl-url:"),
    ("interval\n", ":1: expected 'name = value'"),
    ("agents = 10.0.0.1/8\n", ":1: agents: 10.0.0.1/8 has host bits set"),
])
def test_config_errors_name_file_and_line(tmp_path, text, problem):
    conf = tmp_path / "c.conf"
    conf.write_text(text)
    with pytest.raises(ConfigError) as err:
        load(["-c", str(conf)])
    assert str(err.value).startswith(str(conf)) and problem in str(err.value)


def test_bad_option_exits_2_naming_it():
    run = subprocess.run(CONTROLLER + ["--threshold", "lots"], capture_output=True, text=True, timeout=30)
    assert run.returncode == 2 and "--threshold" in run.stderr
    version = subprocess.run(CONTROLLER + ["--version"], capture_output=True, text=True, timeout=30)
    assert version.stdout.startswith("hsagent-controller ")


# --- ACL names and rules ---------------------------------------------------------------------

V4 = FiveTuple(ipaddress.ip_address("198.18.0.2"), ipaddress.ip_address("198.18.1.2"), 17, 40000, 5001)
V6 = FiveTuple(ipaddress.ip_address("2001:db8::2"), ipaddress.ip_address("2001:db8:1::2"), 6, 443, 50000)


def test_rules_and_names():
    assert acl_rules(V4, 10, 5) == [
        "[iptables]",
        "-t mangle -A FORWARD --in-interface swp+ -s 198.18.0.2 -d 198.18.1.2 -p udp "
        "--sport 40000 --dport 5001 -j SETQOS --set-dscp 10 --set-cos 5"]
    assert acl_rules(V6, 10, 5)[0] == "[ip6tables]"
    assert acl_name(V4) == acl_name(V4._replace()) != acl_name(V4._replace(sport=40001))
    assert acl_name(V4).startswith(PREFIX) and len(acl_name(V4)) == len(PREFIX) + 16


def test_rules_read_back_whatever_the_spelling():
    for flow in (V4, V6):
        assert flow_of_rules(acl_rules(flow, 10, 5)) == flow
    spelled = ["[iptables]", "-t mangle -A FORWARD -i swp+ -m udp --source 198.18.0.2/32 --destination 198.18.1.2 "
               "--protocol 17 --source-port 40000 --destination-port 5001 -j DSCP --set-dscp 10"]
    assert flow_of_rules(spelled) == V4
    assert flow_of_rules(["-A FORWARD -s 198.18.0.2 -j DROP"]) is None
    assert flow_of_rules(["-p icmp -s 1.2.3.4 -d 1.2.3.5 --sport 1 --dport 2"]) is None


# --- a small acl_server-style service for the client --------------------------------------------

class FakeAcld:
    """acl_server's API on 127.0.0.1 in a thread of its own: ACLs in a dict, every request logged.
    `fail_next` answers that many requests 503 first."""

    def __init__(self, token=TOKEN, delay=0.0, ssl_context=None):
        self.acls: dict[str, list[str]] = {}
        self.requests: list[tuple] = []
        self.installed: list[tuple] = []  # every successful PUT
        self.fail_next = 0
        self.connections: set = set()
        self._token, self._delay, self._ssl = token, delay, ssl_context
        self._ready = threading.Event()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()
        assert self._ready.wait(10)

    def _serve(self):
        asyncio.set_event_loop(self._loop)
        app = web.Application()
        app.add_routes([web.get("/acl/", self._list), web.get("/acl/{name}", self._get),
                        web.put("/acl/{name}", self._put), web.delete("/acl/{name}", self._delete)])
        self._runner = web.AppRunner(app, access_log=None)
        self._loop.run_until_complete(self._runner.setup())
        site = web.TCPSite(self._runner, "127.0.0.1", 0, ssl_context=self._ssl)
        self._loop.run_until_complete(site.start())
        self.port = site._server.sockets[0].getsockname()[1]
        self.url = f"{'https' if self._ssl else 'http'}://127.0.0.1:{self.port}"
        self._ready.set()
        self._loop.run_forever()

    async def _gate(self, request):
        self.requests.append((request.method, request.path_qs))
        self.connections.add(request.transport.get_extra_info("peername"))
        if request.headers.get("Authorization") != f"Bearer {self._token}":
            raise web.HTTPUnauthorized()
        if self._delay:
            await asyncio.sleep(self._delay)
        if self.fail_next:
            self.fail_next -= 1
            raise web.HTTPServiceUnavailable(text="busy")

    async def _list(self, request):
        await self._gate(request)
        return web.json_response(sorted(self.acls))

    async def _get(self, request):
        await self._gate(request)
        name = request.match_info["name"]
        if name not in self.acls:
            raise web.HTTPNotFound()
        return web.json_response(self.acls[name])

    async def _put(self, request):
        await self._gate(request)
        rules = await request.json()
        if request.content_type != "application/json" or not isinstance(rules, list):
            raise web.HTTPBadRequest(text="rules must be a JSON array")
        if any("BAD" in r for r in rules):
            raise web.HTTPBadRequest(text="line 1: no such option")
        self.acls[request.match_info["name"]] = rules
        self.installed.append((request.match_info["name"], rules))
        return web.Response(status=201)

    async def _delete(self, request):
        await self._gate(request)
        if self.acls.pop(request.match_info["name"], None) is None:
            raise web.HTTPNotFound()
        return web.Response(status=204)

    def close(self):
        async def stop():
            await self._runner.cleanup()
        asyncio.run_coroutine_threadsafe(stop(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)


@pytest.fixture
def acld():
    server = FakeAcld()
    yield server
    server.close()


class Silent:
    """A TCP port that accepts connections and never answers: an unreachable switch."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"

    def close(self):
        self.sock.close()


async def until(predicate, timeout=10.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.02)


def test_service_url():
    assert service_url("http://{agent}:8080", "198.18.0.1") == "http://198.18.0.1:8080"
    assert service_url("https://{agent}:8443", "2001:db8::1") == "https://[2001:db8::1]:8443"


def test_client_calls_and_keeps_one_connection(acld):
    async def run():
        metrics = AclMetrics()
        async with open_session(TOKEN, None, 5.0) as session:
            service = AclService(session, acld.url, metrics)
            await service.put("a", ["rule 1"])
            await service.put("b", ["rule 2"])
            assert await service.names() == ["a", "b"]
            assert await service.rules("a") == ["rule 1"]
            await service.delete("a")
            await service.delete("a")  # already gone: fine
            with pytest.raises(AclError) as err:
                await service.put("c", ["BAD"])
            assert not err.value.retry and "400" in str(err.value) and "no such option" in str(err.value)
        return metrics

    metrics = run_async(run())
    assert acld.acls == {"b": ["rule 2"]}
    assert ("PUT", "/acl/a?wait=1") in acld.requests
    assert len(acld.connections) == 1  # keep-alive: one connection for every request
    assert (metrics.calls, metrics.failures) == (7, 1)


def test_wrong_token_is_a_final_error(acld):
    async def run():
        async with open_session("wrong", None, 5.0) as session:
            with pytest.raises(AclError) as err:
                await AclService(session, acld.url, AclMetrics()).put("a", ["x"])
            assert not err.value.retry and "401" in str(err.value)
    run_async(run())


def run_async(coroutine):
    return asyncio.run(coroutine)


def test_https_with_the_configured_ca(certificate):
    cert, key = certificate
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    server = FakeAcld(ssl_context=context)

    async def put(ca_file):
        async with open_session(TOKEN, ca_file, 5.0) as session:
            await AclService(session, server.url, AclMetrics()).put("a", ["x"])

    try:
        assert server.url.startswith("https://")
        run_async(put(cert))
        assert server.acls == {"a": ["x"]}
        with pytest.raises(AclError, match="certificate"):
            run_async(put(None))  # the system's CAs do not know it
    finally:
        server.close()


def test_link_retries_and_keeps_the_latest_wish(acld):
    reports = []

    async def run():
        acld.fail_next = 3  # the listing at start and two more
        async with open_session(TOKEN, None, 5.0) as session:
            link = SwitchLink("198.18.0.1", AclService(session, acld.url, AclMetrics()), PREFIX,
                              lambda *a: True, lambda *a: reports.append(a))
            link.start()
            link.want("elephant-1", ["one"])
            link.want("elephant-2", ["two"])
            link.want("elephant-1", None)  # changed its mind before anything went out
            await until(lambda: link.backlog == 0 and len(reports) == 2)
            await link.close()

    run_async(run())
    assert acld.acls == {"elephant-2": ["two"]}
    assert sorted(reports) == [("198.18.0.1", "elephant-1", False, None),
                               ("198.18.0.1", "elephant-2", True, None)]
    assert [r for r in acld.requests if r[0] == "GET"][:3] == [("GET", "/acl/")] * 3


def test_a_wish_changed_during_retries_is_the_one_made(acld):
    async def run():
        async with open_session(TOKEN, None, 5.0) as session:
            link = SwitchLink("198.18.0.1", AclService(session, acld.url, AclMetrics()), PREFIX,
                              lambda *a: True, lambda *a: None)
            link.start()
            await until(lambda: link.connected)  # the listing at start is done
            acld.fail_next = 2
            link.want("elephant-1", ["old"])
            await until(lambda: acld.fail_next == 1)  # the first attempt failed
            link.want("elephant-1", ["new"])
            await until(lambda: link.backlog == 0)
            await link.close()

    run_async(run())
    assert acld.installed == [("elephant-1", ["new"])]


def test_an_unreachable_switch_holds_up_no_other(acld):
    silent = Silent()

    async def run():
        async with open_session(TOKEN, None, 3.0) as session:
            links = [SwitchLink(agent, AclService(session, url, AclMetrics()), PREFIX,
                                lambda *a: True, lambda *a: None)
                     for agent, url in (("198.18.0.9", silent.url), ("198.18.0.1", acld.url))]
            for link in links:
                link.start()
                link.want("elephant-1", ["one"])
            started = time.monotonic()
            await until(lambda: "elephant-1" in acld.acls, timeout=2.0)
            took = time.monotonic() - started
            assert links[0].backlog == 1 and not links[0].connected
            for link in links:
                await link.close()
            return took

    try:
        assert run_async(run()) < 1.0
    finally:
        silent.close()


def test_leftovers_are_adopted_or_removed(acld):
    acld.acls = {acl_name(V4): acl_rules(V4, 10, 5),  # ours
                 PREFIX + "0000000000000000": ["-A FORWARD -j DROP"],  # our name, not our rule
                 "someone-else": ["-A FORWARD -j ACCEPT"]}  # not ours at all
    adopted = []

    def adopt(agent, name, rules):
        adopted.append(name)
        return flow_of_rules(rules) is not None and acl_name(flow_of_rules(rules)) == name

    async def run():
        async with open_session(TOKEN, None, 5.0) as session:
            link = SwitchLink("198.18.0.1", AclService(session, acld.url, AclMetrics()), PREFIX,
                              adopt, lambda *a: None)
            link.start()
            await until(lambda: len(acld.acls) == 2)
            await link.close()

    run_async(run())
    assert sorted(acld.acls) == sorted([acl_name(V4), "someone-else"])
    assert sorted(adopted) == sorted([acl_name(V4), PREFIX + "0000000000000000"])


# --- the elephant app ------------------------------------------------------------------------

class Wishes:
    """Stands in for the switch links: records what the app asks of each switch."""

    def __init__(self):
        self.calls = []

    def __call__(self, agent):
        wishes = self

        class Link:
            def want(self, name, rules):
                wishes.calls.append((agent, name, rules))
        return Link()


def make_app(max_controls=10):
    table = FlowTable(flow_spec(t=1.0, max_flows=1000))
    monitor = Monitor(Threshold("elephant", "elephant", value=10e6 / 8, timeout=1.0), table, lambda a, i: 0)
    wishes = Wishes()
    app = ElephantApp(table, monitor, wishes, dscp=10, cos=5, interval=1.0, hysteresis=0.5,
                      max_controls=max_controls)
    return app, table, monitor, wishes


def key_of(flow: FiveTuple, agent="198.18.0.1", ifindex=3):
    return (agent, ifindex) + flow.packed()


def test_app_marks_then_removes_when_quiet():
    app, table, monitor, wishes = make_app()
    key = key_of(V4)
    now = 0.0
    events = []
    while now < 3.0:  # 40 Mbit/s in 1000-byte samples
        now += 1000 / 5e6
        event = monitor.update(key, table.add(key, 1000, now), now, lambda: now)
        if event:
            events.append(event)
            app.on_event(event, now)
    assert len(events) == 1 and wishes.calls == [("198.18.0.1", acl_name(V4), acl_rules(V4, 10, 5))]
    app.on_result("198.18.0.1", acl_name(V4), True, None)
    app.check(now)
    assert len(wishes.calls) == 1  # still busy
    # quiet: 40 Mbit/s decays below 5 Mbit/s (hysteresis x threshold) after ln 8 = 2.08 s
    app.check(now + 2.0)
    assert len(wishes.calls) == 1
    app.check(now + 2.2)
    assert wishes.calls[-1] == ("198.18.0.1", acl_name(V4), None)
    assert key not in monitor.fired  # re-armed: a return is marked again
    app.on_result("198.18.0.1", acl_name(V4), False, None)
    assert app.controls == {}


def test_app_cap_per_switch_and_failed_installs():
    app, table, monitor, wishes = make_app(max_controls=2)
    for sport in range(3):
        flow = V4._replace(sport=sport + 1)
        app.on_event(Event(sport, 0.0, "elephant", "elephant", key_of(flow), 2e6, 1.25e6), 0.0)
    assert len(wishes.calls) == 2 and app.refused == 1
    other = Event(9, 0.0, "elephant", "elephant", key_of(V4, agent="198.18.0.9"), 2e6, 1.25e6)
    app.on_event(other, 0.0)
    assert len(wishes.calls) == 3  # the cap is per switch
    app.on_result("198.18.0.9", acl_name(V4), True, "400 line 1: bad")
    assert app.controls[("198.18.0.9", acl_name(V4))].state == "failed"
    app.check(5.0)
    assert ("198.18.0.9", acl_name(V4)) not in app.controls


def test_an_adopted_control_stays_while_its_flow_is_busy():
    app, table, monitor, wishes = make_app()
    assert app.adopt("198.18.0.1", acl_name(V4), acl_rules(V4, 10, 5))
    control = app.controls[("198.18.0.1", acl_name(V4))]
    key = key_of(V4, ifindex=7)
    now = control.since + 2.0
    table.add(key, 5e6, now)  # 5 MB in: 40 Mbit/s
    app.check(now)
    assert wishes.calls == [] and control.key == key  # found on port 7, kept
    app.check(now + 10)
    assert wishes.calls == [("198.18.0.1", acl_name(V4), None)]


def test_app_adopts_only_its_own_rules():
    app, *_ = make_app()
    assert app.adopt("198.18.0.1", acl_name(V6), acl_rules(V6, 10, 5))
    assert not app.adopt("198.18.0.1", acl_name(V4), acl_rules(V6, 10, 5))  # name does not fit
    assert not app.adopt("198.18.0.1", PREFIX + "x", ["-j DROP"])
    assert list(app.controls) == [("198.18.0.1", acl_name(V6))]


# --- the whole process ------------------------------------------------------------------------

def free_port(kind=socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def api_get(port, path, token=TOKEN, context=None):
    scheme = "https" if context else "http"
    request = urllib.request.Request(f"{scheme}://127.0.0.1:{port}{path}")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    with urllib.request.urlopen(request, timeout=5, context=context) as response:
        return json.load(response)


def elephant_datagrams(agent, sequence, frame, count):
    header = SampledHeader(HEADER_PROTOCOL_ETHERNET, len(frame) + 4, 4, frame[:128])
    samples = [FlowSample(0, 3, 50, (sequence + i) * 50, 0, Interface(0, 3), Interface(0, 0x3FFFFFFF),
                          [header], sequence + i) for i in range(count)]
    return encode_datagram(Datagram(ipaddress.ip_address(agent), 0, sequence, 1000, samples))


@pytest.fixture
def token_file(tmp_path):
    path = tmp_path / "tokens"
    path.write_text(f"# tokens, as hsagent-acld reads them\n{READ_ONLY} read-only\n{TOKEN}\n")
    path.chmod(0o600)
    return path


class ControllerProcess:
    """`python3 -m hsagent.controller` on loopback ports, its ACL services the fake one."""

    def __init__(self, acld, token_file, *extra, context=None):
        self.context = context  # TLS: how to check the API's certificate
        self.sflow_port, self.api_port = free_port(socket.SOCK_DGRAM), free_port()
        self.process = subprocess.Popen(CONTROLLER + [
            "--sflow-listen", f"127.0.0.1:{self.sflow_port}", "--threshold", "10M", "--smoothing", "1",
            "--interval", "1", "--acl-url", f"http://{{agent}}:{acld.port}", "--acl-token-file",
            str(token_file), "--api-listen", f"127.0.0.1:{self.api_port}", *extra],
            stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 20
        while True:
            try:
                self.get("/metrics")
                return
            except (urllib.error.URLError, ConnectionError):
                assert time.monotonic() < deadline and self.process.poll() is None
                time.sleep(0.1)

    def get(self, path, token=TOKEN):
        return api_get(self.api_port, path, token, self.context)

    def send(self, datagram: bytes):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
            sender.sendto(datagram, ("127.0.0.1", self.sflow_port))

    def stop(self) -> int:
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(10)
        finally:
            if self.process.poll() is None:
                self.process.kill()
                self.process.wait()


def test_process_marks_an_elephant_and_shows_it(acld, token_file):
    """sFlow in over UDP (as from an agent at 127.0.0.1, its ACL service the fake one): the
    ACL is PUT, the API shows flow, event, control and metrics, and SIGTERM stops it."""
    controller = ControllerProcess(acld, token_file)
    api_port = controller.api_port
    try:
        frame = ethernet(ipv4("198.18.0.2", "198.18.1.2", 17, udp(40000, 5001, bytes(958))), 0x0800)
        # 40 Mbit/s sampled 1-in-50: 100 samples a second, sent 10 per datagram for 1.5 s
        for sequence in range(1, 151, 10):
            controller.send(elephant_datagrams("127.0.0.1", sequence, frame, 10))
            time.sleep(0.1)
        controller.send(b"not sflow")
        name = acl_name(V4)
        assert wait_until(lambda: name in acld.acls, 10.0), \
            f"timed out waiting for the ACL; requests: {acld.requests}"
        assert acld.acls[name] == acl_rules(V4, 10, 5)

        with pytest.raises(urllib.error.HTTPError) as err:
            api_get(api_port, "/metrics", token=None)
        assert err.value.code == 401
        with pytest.raises(urllib.error.HTTPError) as err:
            api_get(api_port, "/metrics", token="nope")
        assert err.value.code == 401
        metrics = api_get(api_port, "/metrics")
        assert metrics["datagrams"] == 15 and metrics["flow_samples"] == 150
        assert metrics["decode_errors"] == 1 and metrics["events"] == 1
        assert metrics["flows"] == 1
        assert wait_until(lambda: controller.get("/metrics")["samples_per_second"] > 0, 10.0), \
            "timed out waiting for a rate"
        assert metrics["acl_calls"] >= 2 and metrics["acl_failures"] == 0  # the listing and the PUT
        ports = api_get(api_port, "/flows?n=5")["ports"]
        [flow] = ports[0]["flows"]
        assert (ports[0]["agent"], ports[0]["ifindex"]) == ("127.0.0.1", 3)
        assert (flow["src_ip"], flow["dst_ip"], flow["ip_protocol"], flow["src_port"], flow["dst_port"]) == (
            "198.18.0.2", "198.18.1.2", 17, 40000, 5001)
        with pytest.raises(urllib.error.HTTPError) as err:
            api_get(api_port, "/flows?n=lots")
        assert err.value.code == 400 and "n must be a whole number" in err.value.read().decode()
        [event] = api_get(api_port, "/events")["events"]
        assert event["limit_bps"] == 10e6 and event["bps"] >= 10e6
        controls = api_get(api_port, "/controls")
        assert [c["name"] for c in controls["controls"]] == [name]
        assert controls["switches"][0]["connected"]
        assert api_get(api_port, "/thresholds")["thresholds"][0]["bps"] == 10e6

        # quiet now: the control goes within a few seconds (below 5 Mbit/s after ~2 s)
        assert wait_until(lambda: name not in acld.acls, 10.0), \
            "timed out waiting for the control to go"
    finally:
        code = controller.stop()
    assert code == 0, controller.process.stderr.read()


def test_tokens_as_hsagent_acld_reads_them(acld, token_file, tmp_path):
    """The ACL services get the first token that may write; the API takes read-only ones too;
    a token file others may read is refused, as hsagent-acld refuses it."""
    controller = ControllerProcess(acld, token_file)
    try:
        assert controller.get("/metrics", token=READ_ONLY)["acl_failures"] == 0
        controller.send(elephant_datagrams("127.0.0.1", 1, ethernet(ipv4("198.18.0.7", "198.18.1.2", 17,
                                                                          udp(9, 53)), 0x0800), 1))
        assert wait_until(lambda: ("GET", "/acl/") in acld.requests, 10.0), \
            "timed out waiting for the listing at start"
        assert controller.get("/metrics")["acl_failures"] == 0  # the fake service took TOKEN
    finally:
        assert controller.stop() == 0
    token_file.chmod(0o644)
    run = subprocess.run(CONTROLLER + ["--acl-token-file", str(token_file), "--api-listen", "127.0.0.1:0",
                                       "--sflow-listen", "127.0.0.1:0"], capture_output=True, text=True, timeout=30)
    assert run.returncode == 1 and "chmod 600" in run.stderr


def test_api_over_tls(acld, token_file, certificate):
    cert, key = certificate
    controller = ControllerProcess(acld, token_file, "--api-cert", cert, "--api-key", key,
                                   context=ssl.create_default_context(cafile=cert))
    try:
        assert controller.get("/controls") == {"controls": [], "switches": []}
        with pytest.raises((urllib.error.URLError, ConnectionError)):
            api_get(controller.api_port, "/controls")  # plain HTTP is not answered
    finally:
        assert controller.stop() == 0


def test_a_restart_adopts_its_own_leftovers_and_deletes_impostors(acld, token_file):
    """ACLs an earlier run left: ours is adopted (then removed, its flow being quiet), one with
    our prefix but a foreign rule is deleted, another service's is left alone."""
    impostor = PREFIX + "0000000000000000"
    acld.acls = {acl_name(V4): acl_rules(V4, 10, 5), impostor: ["[iptables]", "-A FORWARD -j DROP"],
                 "someone-else": ["[iptables]", "-A FORWARD -j ACCEPT"]}
    controller = ControllerProcess(acld, token_file)
    try:
        frame = ethernet(ipv4("198.18.0.7", "198.18.1.2", 17, udp(999, 53, bytes(100))), 0x0800)
        controller.send(elephant_datagrams("127.0.0.1", 1, frame, 1))  # a mouse: "here I am"
        assert wait_until(lambda: impostor not in acld.acls, 10.0), \
            "timed out waiting for the impostor to go"
        assert wait_until(lambda: acl_name(V4) not in acld.acls, 10.0), \
            "timed out waiting for the adopted control to go"
        assert sorted(acld.acls) == ["someone-else"]
        assert ("GET", f"/acl/{acl_name(V4)}") in acld.requests
        assert controller.get("/metrics")["events"] == 0
    finally:
        assert controller.stop() == 0, controller.process.stderr.read()


# --- the systemd unit ------------------------------------------------------------------------

UNIT = Path(__file__).resolve().parent.parent / "init" / "hsagent-controller.service"


@pytest.fixture
def unit_for_this_machine(tmp_path):
    """The unit with ExecStart running this tree's controller (verify checks the binary) and
    the credential taken from a file that exists here."""
    if not shutil.which("systemd-analyze"):
        pytest.skip("systemd-analyze is not installed (apt-get install systemd)")
    text = UNIT.read_text()
    assert "ExecStart=/usr/bin/hsagent-controller " in text
    tokens = tmp_path / "tokens"
    tokens.write_text(TOKEN)
    copy = tmp_path / "hsagent-controller.service"
    copy.write_text(text.replace("/usr/bin/hsagent-controller", f"{sys.executable} -m hsagent.controller")
                    .replace("/etc/hsagent-acld/tokens", str(tokens)))
    return copy


def test_systemd_unit_verifies_and_is_sandboxed(unit_for_this_machine):
    done = subprocess.run(["systemd-analyze", "verify", str(unit_for_this_machine)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and "hsagent-controller.service" not in done.stderr, done.stderr
    # exposure 0.0 (locked down) .. 10.0 (root, no sandbox)
    done = subprocess.run(["systemd-analyze", "security", "--offline=yes", "--threshold=20",
                           "--no-pager", str(unit_for_this_machine)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.tuples(st.ip_addresses(v=4), st.ip_addresses(v=4)),
                 st.tuples(st.ip_addresses(v=6), st.ip_addresses(v=6))),
       st.sampled_from([6, 17]), st.integers(0, 65535), st.integers(0, 65535),
       st.integers(0, 63), st.integers(0, 7))
def test_any_flow_makes_a_rule_hsagent_acld_takes_and_reads_back(addresses, protocol, sport, dport, dscp, cos):
    rules_module = pytest.importorskip("hsagent.acld.rules")
    flow = FiveTuple(*addresses, protocol, sport, dport)
    acl = rules_module.parse_acl(acl_name(flow), acl_rules(flow, dscp, cos))
    assert flow_of_rules(acl.lines()) == flow


# --- the sFlow socket ------------------------------------------------------------------------

def test_one_socket_takes_ipv4_and_ipv6():
    got = []
    sock = open_udp("", 0)
    listener = Listener(sock, got.append)
    try:
        for family, host in ((socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")):
            with socket.socket(family, socket.SOCK_DGRAM) as sender:
                sender.sendto(host.encode(), (host, listener.port))
        deadline = time.monotonic() + 5
        while len(got) < 2 and time.monotonic() < deadline:
            listener._read()
            time.sleep(0.01)
    finally:
        sock.close()
    assert sorted(got) == [b"127.0.0.1", b"::1"]


def test_reuse_port_keeps_each_agent_on_one_process():
    """Two sockets share the port; each of 16 agents (source addresses and ports) always lands
    on the same one, and both get some."""
    first = open_udp("127.0.0.1", 0, reuse_port=True)
    port = first.getsockname()[1]
    second = open_udp("127.0.0.1", port, reuse_port=True)
    got = {0: [], 1: []}
    listeners = [Listener(first, got[0].append), Listener(second, got[1].append)]
    senders = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(16)]
    try:
        for round_ in range(5):
            for number, sender in enumerate(senders):
                sender.sendto(b"%d" % number, ("127.0.0.1", port))
        deadline = time.monotonic() + 5
        while sum(map(len, got.values())) < 80 and time.monotonic() < deadline:
            for listener in listeners:
                listener._read()
            time.sleep(0.01)
    finally:
        for s in senders + [first, second]:
            s.close()
    assert sum(map(len, got.values())) == 80
    assert got[0] and got[1]
    assert not set(got[0]) & set(got[1]), "an agent's datagrams went to both"



@pytest.mark.root
def test_the_sflow_socket_gets_its_whole_buffer_as_root():
    """Past net.core.rmem_max (208 KiB by default), which alone would cap SO_RCVBUF: a burst
    of datagrams from many agents must not be dropped by the kernel. Linux reports twice the
    size asked for (socket(7))."""
    with open_udp("127.0.0.1", 0) as sock:
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) >= 2 * RECEIVE_BUFFER

# --- against the real hsagent-acld's rule parser ----------------------------------------------

def test_hsagent_acld_accepts_the_rules_and_they_read_back():
    rules = pytest.importorskip("hsagent.acld.rules")
    for flow in (V4, V6):
        acl = rules.parse_acl(acl_name(flow), acl_rules(flow, 10, 5))
        assert flow_of_rules(acl.lines()) == flow  # what GET /acl/<name> shows


def test_the_example_config_loads():
    example = Path(__file__).resolve().parent.parent / "etc" / "hsagent-controller.conf"
    options, _ = load(["-c", str(example)])
    assert options.threshold.fraction == pytest.approx(0.1) and options.interval == 5
    assert options.acl_url == "http://{agent}:8081"
