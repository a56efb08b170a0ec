"""hsagent-acld end to end: the real service, over HTTP, with the real netfilter backend in a
network namespace ("the switch", where the service runs) wired by a veth pair to a second one
("a host"). Rules are proven live by what the kernel does with real packets: counters that move,
drops, and the DSCP a receiver sees."""

from __future__ import annotations

import http.client
import json
import socket
import subprocess
import time

import pytest

from acld.service import (READ_TOKEN, TOKEN, Service, iptables_save, packets, rules_of, send_udp,
                          wire)
from conftest import in_netns

pytestmark = pytest.mark.slow

SWITCH, HOST = "198.18.0.1", "198.18.0.2"


@pytest.fixture
def topology(netns):
    """(switch, host): the switch's port sw-1 (so swp+ means sw-+ here) faces the host's h1."""
    switch, host = netns("acl-sw"), netns("acl-h")
    wire(switch, "sw-1", SWITCH, host, HOST)
    return switch, host


@pytest.fixture
def service(topology, tmp_path):
    made = []

    def start(*options, **kw):
        made.append(Service(topology[0], tmp_path, *options, **kw).start())
        return made[-1]

    yield start
    for s in made:
        s.stop()


def udp_receiver(ns, address, port):
    with in_netns(ns.name):
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((address, port))
    sock.setsockopt(socket.IPPROTO_IP, socket.IP_RECVTOS, 1)
    sock.settimeout(0.5)
    return sock


def receive_tos(sock, count) -> list[int]:
    """The TOS byte of each datagram received (IP_RECVTOS ancillary data), up to `count`."""
    seen = []
    deadline = time.monotonic() + 5
    while len(seen) < count and time.monotonic() < deadline:
        try:
            _, ancillary, _, _ = sock.recvmsg(2048, socket.CMSG_SPACE(4))
        except (TimeoutError, socket.timeout):
            continue
        tos = [data[0] for level, kind, data in ancillary
               if level == socket.IPPROTO_IP and kind == socket.IP_TOS]
        seen.append(tos[0] if tos else None)
    return seen


def outside_ours(lines):
    """iptables-save lines that are not our chains, their rules or the jumps to them."""
    return [line for line in lines if "hsacld-" not in line]


def test_put_wait_makes_the_rule_live(topology, service):
    switch, host = topology
    acld = service()
    client = acld.client()
    reply = client.put("count", ["[iptables]",
                                 "-A INPUT --in-interface swp+ -p udp --dport 5001 -j ACCEPT"])
    assert reply.status == 201, reply
    assert reply.json == ["[iptables]", "-A INPUT -i swp+ -p udp -m udp --dport 5001 -j ACCEPT"]
    [rule] = rules_of(switch, "count")
    assert "-i sw-+" in rule and packets(rule) == 0
    send_udp(host, HOST, SWITCH, 5001, 7)
    send_udp(host, HOST, SWITCH, 5009, 3)  # another port: not counted
    assert packets(rules_of(switch, "count")[0]) == 7


def test_drop_rule_drops(topology, service):
    switch, host = topology
    client = service().client()
    receiver = udp_receiver(switch, SWITCH, 5002)
    try:
        send_udp(host, HOST, SWITCH, 5002, 1)
        assert len(receive_tos(receiver, 1)) == 1
        assert client.put("block", ["[iptables]", "-A INPUT -i swp+ -s 198.18.0.2 -p udp "
                                                  "--dport 5002 -j DROP"]).status == 201
        send_udp(host, HOST, SWITCH, 5002, 5)
        assert receive_tos(receiver, 1) == []
        assert packets(rules_of(switch, "block")[0]) == 5
        assert client.delete("/acl/block?wait=1").status == 204
        send_udp(host, HOST, SWITCH, 5002, 1)
        assert len(receive_tos(receiver, 1)) == 1
    finally:
        receiver.close()


def test_setqos_marks_dscp_the_receiver_sees(topology, service):
    switch, host = topology
    client = service().client()
    receiver = udp_receiver(host, HOST, 5003)
    try:
        reply = client.put("qos", ["[iptables]",
                                   "-t mangle -A POSTROUTING -o swp+ -p udp --dport 5003 "
                                   "-j SETQOS --set-dscp 10 --set-cos 3",
                                   "-t mangle -A POSTROUTING -o swp+ -p udp --dport 5004 "
                                   "-j SETQOS --set-dscp-class ef"])
        assert reply.status == 201, reply
        send_udp(switch, SWITCH, HOST, 5003, 4)
        assert receive_tos(receiver, 4) == [10 << 2] * 4
        # the cos part became a CLASSIFY rule that saw the same packets
        classify, dscp = [r for r in rules_of(switch, "qos") if "--dport 5003" in r]
        assert "CLASSIFY --set-class 0000:0003" in classify and packets(classify) == 4
        assert "DSCP --set-dscp 0x0a" in dscp and packets(dscp) == 4
    finally:
        receiver.close()
    receiver = udp_receiver(host, HOST, 5004)
    try:
        send_udp(switch, SWITCH, HOST, 5004, 2)
        assert receive_tos(receiver, 2) == [46 << 2] * 2  # EF
    finally:
        receiver.close()


def test_api_behaves_as_acl_server(topology, service):
    switch, _ = topology
    client = service().client()
    assert client.get("/acl/").json == []
    assert client.get("/acl/lasterror").status == 204
    a = ["[iptables]", "-A FORWARD -i swp+ -d 198.18.0.10 -p udp --sport 53 -j DROP"]
    b = ["[ip6tables]", "-A INPUT -s 2001:db8::/32 -p tcp --dport 22 -j DROP"]
    reply = client.put("a", a, wait=False)
    assert reply.status == 202 and reply.headers["Location"].startswith("/requests/")
    outcome = client.get(reply.headers["Location"] + "?wait=1").json
    assert outcome["state"] == "installed" and outcome["acls"] == ["a"]
    assert client.put("b", b).status == 201
    assert client.get("/acl/").json == ["a", "b"]
    got = client.get("/acl/a")
    assert got.status == 200
    assert got.json == ["[iptables]", "-A FORWARD -i swp+ -d 198.18.0.10 -p udp -m udp --sport 53 -j DROP"]
    assert client.get("/acl/missing").status == 404
    assert rules_of(switch, "b", family=6)
    assert client.delete("/acl/a?wait=1").status == 204
    assert client.delete("/acl/a?wait=1").status == 204  # not there: still 204
    assert client.get("/acl/a").status == 404 and not rules_of(switch, "a")
    assert client.put("a", a).status == 201
    assert client.delete("/acl/?wait=1").status == 204
    assert client.get("/acl/").json == []
    assert not any(line.startswith("-A hsacld-") for line in iptables_save(switch))
    assert not any(line.startswith("-A hsacld-") for line in iptables_save(switch, 6))
    assert client.request("PUT", "/acl/lasterror", a).status == 403


def test_etag_and_preconditions(topology, service):
    client = service().client()
    first = client.put("e", ["[iptables]", "-A INPUT -p tcp --dport 80 -j ACCEPT"])
    tag = first.headers["ETag"]
    assert client.get("/acl/e").headers["ETag"] == tag
    assert client.get("/acl/e", headers={"If-None-Match": tag}).status == 304
    newer = ["[iptables]", "-A INPUT -p tcp --dport 81 -j ACCEPT"]
    assert client.put("e", newer, headers={"If-Match": '"stale"'}).status == 412
    assert client.put("e", newer, headers={"If-None-Match": "*"}).status == 412
    second = client.put("e", newer, headers={"If-Match": tag})
    assert second.status == 200 and second.headers["ETag"] != tag
    assert client.delete("/acl/e?wait=1", headers={"If-Match": tag}).status == 412
    assert client.delete("/acl/e?wait=1", headers={"If-Match": second.headers["ETag"]}).status == 204
    assert client.put("new", newer, headers={"If-Match": "*"}).status == 412


def test_auth_matrix(topology, service):
    acld = service()
    anonymous = acld.client(token=None)
    reply = anonymous.get("/acl/")
    assert reply.status == 401 and reply.headers["WWW-Authenticate"].startswith("Bearer")
    assert anonymous.get("/no/such/path").status == 401  # before anything else
    wrong = acld.client(token="not-the-token-0123456789")
    reply = wrong.put("x", ["[iptables]", "-A INPUT -j ACCEPT"])
    assert reply.status == 401 and 'error="invalid_token"' in reply.headers["WWW-Authenticate"]
    assert anonymous.get("/acl/", headers={"Authorization": f"Basic {TOKEN}"}).status == 401
    assert acld.client(token=TOKEN[:-1]).get("/acl/").status == 401
    reader = acld.client(token=READ_TOKEN)
    assert reader.get("/acl/").status == 200
    assert reader.get("/health").status == 200
    assert reader.put("x", ["[iptables]", "-A INPUT -j ACCEPT"]).status == 403
    assert reader.delete("/acl/").status == 403
    good = acld.client()
    assert good.put("x", ["[iptables]", "-A INPUT -j ACCEPT"]).status == 201
    assert good.get("/acl/").json == ["x"]


def test_tls(topology, tmp_path):
    import ssl
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    acld = Service(topology[0], tmp_path, "--tls-cert", str(cert), "--tls-key", str(key)).start()
    try:
        with pytest.raises((OSError, http.client.HTTPException)):  # no plain HTTP
            acld.client().get("/acl/")
        acld.tls = ssl.create_default_context(cafile=str(cert))
        secure = acld.client()
        assert secure.get("/acl/").status == 200
        assert acld.client(token=None).get("/acl/").status == 401
        assert secure.put("t", ["[iptables]", "-A INPUT -j ACCEPT"]).status == 201
        acld.tls = ssl.create_default_context()  # no trust in a self-signed certificate
        with pytest.raises(ssl.SSLError):
            acld.client().get("/acl/")
    finally:
        acld.stop()


HOSTILE = [
    # (what it tries, the ACL name, the JSON body, the status, words the error must contain)
    ("shell command", "x", ["[iptables]", "-A INPUT -j DROP; iptables -F"], 400, "metacharacter"),
    ("command substitution", "x", ["[iptables]", "-A INPUT -s $(reboot) -j DROP"], 400, "metacharacter"),
    ("backticks", "x", ["[iptables]", "-A INPUT -j `id`"], 400, "metacharacter"),
    ("newline: a second rule", "x", ["[iptables]", "-A INPUT -j ACCEPT\n-A INPUT -j DROP"], 400, "U+000A"),
    ("newline: a whole section", "x", ["[iptables]", "-A INPUT -j ACCEPT\n[ebtables]\n-A FORWARD -j DROP"], 400, "control"),
    ("restore commands", "x", ["[iptables]", "-A INPUT -j ACCEPT\nCOMMIT\n*nat\n-F"], 400, "control"),
    ("NUL byte", "x", ["[iptables]", "-A INPUT\u0000 -j ACCEPT"], 400, "U+0000"),
    ("unknown option", "x", ["[iptables]", "-A INPUT --frobnicate 1 -j ACCEPT"], 400, "unknown option"),
    ("string match", "x", ["[iptables]", "-A INPUT -m string --string x --algo bm -j DROP"], 400, "string"),
    ("insert", "x", ["[iptables]", "-I INPUT 1 -j DROP"], 400, "-I"),
    ("flush", "x", ["[iptables]", "-F"], 400, "flush"),
    ("delete chain", "x", ["[iptables]", "-X"], 400, "delete-chain"),
    ("new chain", "x", ["[iptables]", "-N evil"], 400, "new-chain"),
    ("policy", "x", ["[iptables]", "-P INPUT DROP"], 400, "policy"),
    ("jump to a chain", "x", ["[iptables]", "-A INPUT -j hsacld-INPUT"], 400, "not allowed"),
    ("goto", "x", ["[iptables]", "-A INPUT -g other"], 400, "jumps"),
    ("our own chain", "x", ["[iptables]", "-A hsacld-INPUT -j DROP"], 400, "built-in"),
    ("nat table", "x", ["[iptables]", "-t nat -A PREROUTING -j DROP"], 400, "nat"),
    ("raw table", "x", ["[iptables]", "-t raw -A PREROUTING -j DROP"], 400, "raw"),
    ("ebtables", "x", ["[ebtables]", "-A FORWARD -j DROP"], 400, "section"),
    ("no section", "x", ["-A INPUT -j DROP"], 400, "section"),
    ("quotes", "x", ["[iptables]", "-A INPUT -j LOG --log-prefix 'a b'"], 400, "metacharacter"),
    ("long interface", "x", ["[iptables]", "-A INPUT -i abcdefghijklmnopq -j DROP"], 400, "interface"),
    ("long line", "x", ["[iptables]", "-A INPUT " + "-p tcp " * 100 + "-j DROP"], 400, "characters long"),
    ("non-ASCII", "x", ["[iptables]", "-A INPUT -s 198.18.0.1\u2215 -j DROP"], 400, "not allowed"),
    ("bad address", "x", ["[iptables]", "-A INPUT -s 198.18.0.300 -j DROP"], 400, "address"),
    ("port service name", "x", ["[iptables]", "-A INPUT -p tcp --dport ssh -j DROP"], 400, "port"),
    ("object, not array", "x", {"lines": ["-A INPUT -j DROP"]}, 400, "array"),
    ("string, not array", "x", "[iptables]\n-A INPUT -j DROP", 400, "array"),
    ("number line", "x", ["[iptables]", 42], 400, "string"),
    ("null line", "x", ["[iptables]", None], 400, "string"),
    ("nested array", "x", [["[iptables]", "-A INPUT -j DROP"]], 400, "string"),
    ("upper-case name", "Evil", ["[iptables]", "-A INPUT -j DROP"], 400, "name"),
    ("dotted name", "a.b", ["[iptables]", "-A INPUT -j DROP"], 400, "name"),
    ("dot-dot name", "..", ["[iptables]", "-A INPUT -j DROP"], 400, "name"),
    ("encoded traversal", "%2e%2e%2fetc", ["[iptables]", "-A INPUT -j DROP"], 400, "name"),
    ("long name", "n" * 65, ["[iptables]", "-A INPUT -j DROP"], 400, "at most"),
    ("reserved name", "lasterror", ["[iptables]", "-A INPUT -j DROP"], 403, "not an ACL name"),
]


def test_hostile_input_is_refused_and_changes_nothing(topology, service):
    switch, _ = topology
    client = service("--max-body", "65536", "--max-rules", "20").client()
    assert client.put("keep", ["[iptables]", "-A INPUT -p udp --dport 9 -j DROP"]).status == 201
    before4, before6 = iptables_save(switch), iptables_save(switch, 6)
    for what, name, body, status, words in HOSTILE:
        reply = client.put(name, body)
        assert reply.status == status, (what, reply)
        assert words.lower() in reply.json["error"].lower(), (what, reply.json)
    # a JSON error names the line and the problem
    reply = client.put("x", ["[iptables]", "-A INPUT -j ACCEPT", "-A INPUT -j DROP; reboot"])
    assert reply.json["line"] == 3 and reply.json["rule"] == "-A INPUT -j DROP; reboot"
    assert reply.json["acl"] == "x" and "metacharacter" in reply.json["problem"]
    # what is not JSON, or not said to be
    assert client.request("PUT", "/acl/x", raw=b"[not json", headers={
        "Content-Type": "application/json"}).status == 400
    assert client.request("PUT", "/acl/x", raw=b'["[iptables]"]', headers={
        "Content-Type": "text/plain"}).status == 415
    assert client.request("PUT", "/acl/x", raw=b"\xff\xfe", headers={
        "Content-Type": "application/json"}).status == 400
    # bodies over the size limit, too many rules
    huge = ["[iptables]"] + ["-A INPUT -p tcp --dport 1 -j DROP"] * 3000
    assert client.put("x", huge).status == 413
    many = ["[iptables]"] + [f"-A INPUT -p tcp --dport {n} -j DROP" for n in range(30)]
    reply = client.put("x", many)
    assert reply.status == 507 and reply.json["max_rules"] == 20
    # a PATCH with one bad ACL changes none
    reply = client.request("PATCH", "/acl/?wait=1", {"ok": ["[iptables]", "-A INPUT -j ACCEPT"],
                                                     "bad": ["[iptables]", "-A INPUT -j EVIL"]})
    assert reply.status == 400 and reply.json["acl"] == "bad"
    assert iptables_save(switch) == before4 and iptables_save(switch, 6) == before6
    assert client.get("/acl/").json == ["keep"]
    assert client.get("/acl/lasterror").status == 204


def test_batch_with_a_bad_acl_installs_the_good_ones(topology, service):
    switch, _ = topology
    client = service("--commit-interval", "1.5").client()
    assert client.put("first", ["[iptables]", "-A INPUT -p udp --dport 1 -j ACCEPT"]).status == 201
    installs = client.get("/health").json["installs"]
    # within the commit interval: all of these go into one batch
    good = {f"good{n}": ["[iptables]", f"-A INPUT -p udp --dport {100 + n} -j ACCEPT"] for n in range(6)}
    bad = ["[iptables]", "-t mangle -A PREROUTING -p udp -j SETQOS --set-cos 3"]  # CLASSIFY: not there
    requests = {}
    for name, lines in list(good.items())[:3] + [("bad", bad)] + list(good.items())[3:]:
        reply = client.put(name, lines, wait=False)
        assert reply.status == 202
        requests[name] = reply.headers["Location"]
    outcomes = {name: client.get(location + "?wait=1").json for name, location in requests.items()}
    assert {name: o["state"] for name, o in outcomes.items()} == {
        **{name: "installed" for name in good}, "bad": "failed"}
    assert "RULE_APPEND failed" in " ".join(outcomes["bad"]["error"]["lines"])
    assert client.get("/health").json["installs"] - installs <= 1 + 2 * 3  # one try, then halves
    for name in good:
        assert rules_of(switch, name), name
    assert not rules_of(switch, "bad")
    assert client.get("/acl/").json == sorted(["first", *good])  # the bad one is not kept
    last = client.get("/acl/lasterror")
    assert last.status == 200 and last.json["acls"] == ["bad"]
    assert last.headers["Warning"] == '199 - "check lasterror"'
    # a failed ACL never blocks a later one, and a good install clears lasterror
    reply = client.put("bad", ["[iptables]", "-t mangle -A POSTROUTING -p udp -j SETQOS --set-cos 3"])
    assert reply.status == 201, reply
    assert client.get("/acl/lasterror").status == 204
    # with ?wait=1, a refused install is the answer
    reply = client.put("worse", bad)
    assert reply.status == 422 and reply.json["install"]["acls"] == ["worse"]


def test_patch_is_atomic(topology, service):
    switch, _ = topology
    client = service().client()
    assert client.put("old", ["[iptables]", "-A INPUT -p udp --dport 7 -j DROP"]).status == 201
    reply = client.request("PATCH", "/acl/?wait=1", {
        "one": ["[iptables]", "-A INPUT -p udp --dport 8 -j DROP"],
        "two": ["[iptables]", "-t mangle -A PREROUTING -p udp -j SETQOS --set-cos 1"],
        "old": None})
    assert reply.status == 422
    assert client.get("/acl/").json == ["old"] and rules_of(switch, "old") and not rules_of(switch, "one")
    reply = client.request("PATCH", "/acl/?wait=1", {
        "one": ["[iptables]", "-A INPUT -p udp --dport 8 -j DROP"], "old": None})
    assert reply.status == 200 and reply.json["old"] is None
    assert client.get("/acl/").json == ["one"] and not rules_of(switch, "old")


def test_other_rules_are_never_changed(topology, service):
    switch, _ = topology
    foreign = ("*filter\n:INPUT ACCEPT [0:0]\n:FORWARD DROP [0:0]\n:OUTPUT ACCEPT [0:0]\n"
               ":other - [0:0]\n-A INPUT -p tcp --dport 22 -j ACCEPT\n-A FORWARD -j other\n"
               "-A other -s 198.18.1.0/24 -j DROP\nCOMMIT\n"
               "*nat\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n"
               ":POSTROUTING ACCEPT [0:0]\n-A POSTROUTING -o sw-1 -j MASQUERADE\nCOMMIT\n"
               "*mangle\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n"
               ":OUTPUT ACCEPT [0:0]\n:POSTROUTING ACCEPT [0:0]\n-A PREROUTING -p udp -j MARK --set-mark 5\n"
               "COMMIT\n")
    switch.run("iptables-restore", input=foreign)
    before = iptables_save(switch)
    client = service().client()
    for n in range(3):
        assert client.put(f"a{n}", ["[iptables]", f"-A INPUT -p udp --dport {n} -j DROP",
                                    "-t mangle -A PREROUTING -p tcp -j SETQOS --set-dscp 8"]).status == 201
    assert client.delete("/acl/a1?wait=1").status == 204
    during = iptables_save(switch)
    assert outside_ours(during) == outside_ours(before)
    # our jumps come first in the built-in chains, the other rules keep their order after them
    input_rules = [line for line in during if line.startswith("-A INPUT ")]
    assert input_rules == ["-A INPUT -j hsacld-INPUT", "-A INPUT -p tcp -m tcp --dport 22 -j ACCEPT"]
    assert client.delete("/acl/?wait=1").status == 204
    assert outside_ours(iptables_save(switch)) == outside_ours(before)


def test_restart_keeps_every_acl(topology, tmp_path):
    switch, _ = topology
    acld = Service(switch, tmp_path).start()
    client = acld.client()
    acls = {f"keep{n}": ["[iptables]", f"-A INPUT -p tcp --dport {2000 + n} -j DROP"] for n in range(4)}
    for name, lines in acls.items():
        assert client.put(name, lines).status == 201
    # accepted but not waited for: SIGTERM finishes their install before exiting
    late = {f"late{n}": ["[iptables]", f"-A INPUT -p tcp --dport {3000 + n} -j DROP"] for n in range(20)}
    for name, lines in late.items():
        assert client.put(name, lines, wait=False).status == 202
    client.close()
    assert acld.stop() == 0
    for name in [*acls, *late]:
        assert rules_of(switch, name), f"{name} not live after SIGTERM"
    saved = json.loads((acld.state_dir / "acls.json").read_text())["acls"]
    assert sorted(saved) == sorted([*acls, *late])
    # a reboot: the kernel forgets; the restarted service installs everything again
    for table in ("filter", "mangle"):
        switch.run("iptables", "-t", table, "-F")
        switch.run("iptables", "-t", table, "-X")
    assert not rules_of(switch, "keep0")
    acld = Service(switch, tmp_path).start()
    try:
        client = acld.client()
        assert client.get("/acl/").json == sorted([*acls, *late])
        for name in [*acls, *late]:
            assert rules_of(switch, name), f"{name} not re-installed"
        assert client.get("/acl/keep1").json == ["[iptables]", "-A INPUT -p tcp -m tcp --dport 2001 -j DROP"]
    finally:
        acld.stop()


def test_refuses_to_start_insecurely(topology, tmp_path):
    switch, _ = topology
    acld = Service(switch, tmp_path)
    acld.tokens.chmod(0o644)
    done = switch.run(*acld.argv, check=False, timeout=30)
    assert done.returncode == 2 and "chmod 600" in done.stderr
    acld.tokens.write_text("short\n")
    acld.tokens.chmod(0o600)
    done = switch.run(*acld.argv, check=False, timeout=30)
    assert done.returncode == 2 and "tokens:1" in done.stderr


def test_insecure_no_auth_is_explicit_and_loud(topology, tmp_path):
    switch, _ = topology
    acld = Service(switch, tmp_path, "--insecure-no-auth").start()
    try:
        assert acld.client(token=None).get("/acl/").status == 200
    finally:
        acld.stop()
    assert "AUTHENTICATION IS OFF" in acld.log_text()


def test_sighup_rereads_the_token_file(topology, tmp_path):
    import signal
    switch, _ = topology
    acld = Service(switch, tmp_path).start()
    try:
        new = "rotated-token-0123456789abc"
        acld.tokens.write_text(f"{new}\n")
        acld.process.send_signal(signal.SIGHUP)
        old_client = acld.client()
        deadline = time.monotonic() + 10
        while old_client.get("/acl/").status != 401 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert old_client.get("/acl/").status == 401
        assert acld.client(token=new).get("/acl/").status == 200
        # a file others can read is refused, and the tokens in force stay
        acld.tokens.write_text(f"{TOKEN}\n")
        acld.tokens.chmod(0o644)
        acld.process.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 10
        while "keeping the old tokens" not in acld.log_text() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert "keeping the old tokens" in acld.log_text()
        assert acld.client(token=new).get("/acl/").status == 200
        assert acld.client().get("/acl/").status == 401
    finally:
        acld.stop()
