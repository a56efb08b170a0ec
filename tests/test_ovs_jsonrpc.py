"""JSON-RPC as OVSDB speaks it: framing of back-to-back objects, replies, the server's echo;
and the OVS sync's connection rules (probing an idle server, backoff) against a scripted one."""

from __future__ import annotations

import json
import socket
import time

import pytest
from hypothesis import given, strategies as st

from hsagent.ovs.jsonrpc import Connection, ConnectionLost, Splitter
from hsagent.ovs.sync import PROBE_INTERVAL, RETRY_AFTER_ERROR, OvsSync
from hsagent.settings import Collector, Settings


MESSAGES = [
    {"method": "update", "params": ["hsagent", {"Bridge": {"u1": {"new": {"name": "br{0}"}}}}], "id": None},
    {"id": 7, "result": [{"rows": [{"next_cfg": 3}]}], "error": None},
    {"id": "echo", "method": "echo", "params": ["quote \" and \\ and } { inside"]},
    {"id": 8, "result": "snowman \u2603 and more", "error": None},
]


def test_splitter_finds_every_message_at_every_split_point():
    stream = b"".join(json.dumps(m, ensure_ascii=False).encode() for m in MESSAGES)
    for cut in range(len(stream) + 1):
        splitter = Splitter()
        assert splitter.feed(stream[:cut]) + splitter.feed(stream[cut:]) == MESSAGES


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=5), children, max_size=4),
    max_leaves=12)


@given(st.lists(st.dictionaries(st.text(max_size=6), json_values, max_size=4), min_size=1, max_size=5),
       st.lists(st.integers(min_value=1, max_value=40), max_size=20))
def test_splitter_any_objects_any_chunks(objects, chunk_sizes):
    stream = b"".join(json.dumps(o).encode() for o in objects)
    splitter, received, at = Splitter(), [], 0
    for size in chunk_sizes:
        received += splitter.feed(stream[at:at + size])
        at += size
    received += splitter.feed(stream[at:])
    assert received == objects


def test_splitter_rejects_what_is_not_json_rpc():
    with pytest.raises(ConnectionLost):
        Splitter().feed(b"HTTP/1.1 400 Bad Request\r\n")
    with pytest.raises(ConnectionLost, match="malformed"):
        Splitter().feed(b'{"id": 1,, }')




class FakeServer:
    """A listening unix socket in the test's directory, to play ovsdb-server's part."""

    def __init__(self, path):
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(str(path))
        self.listener.listen()
        self.path = str(path)

    def accept(self):
        conn, _ = self.listener.accept()
        conn.settimeout(5)
        return conn


def _read_json(conn) -> dict:
    splitter = Splitter()
    while True:
        messages = splitter.feed(conn.recv(4096))
        if messages:
            return messages[0]


def _receive_until(client, condition, rounds=100):
    """Call client.receive() until condition(notifications so far) holds."""
    seen = []
    for _ in range(rounds):
        seen += client.receive()
        if condition(seen):
            return seen
        time.sleep(0.01)
    return seen


def test_calls_replies_echo_and_notifications(tmp_path):
    server = FakeServer(tmp_path / "db.sock")
    client = Connection(server.path)
    peer = server.accept()
    replies = []
    client.call("monitor", ["Open_vSwitch", "m", {}], lambda result, error: replies.append((result, error)))
    request = _read_json(peer)
    assert request == {"method": "monitor", "params": ["Open_vSwitch", "m", {}], "id": request["id"]}

    # the server's inactivity probe, split mid-object, then an update and the reply
    peer.sendall(b'{"id":"echo","meth')
    assert client.receive() == []
    peer.sendall(b'od":"echo","params":["x"]}')
    update = {"method": "update", "params": ["m", {"Bridge": {}}], "id": None}
    peer.sendall(json.dumps(update).encode() + json.dumps({"id": request["id"], "result": {}, "error": None}).encode())
    notifications = _receive_until(client, lambda seen: replies)
    assert _read_json(peer) == {"result": ["x"], "error": None, "id": "echo"}
    assert notifications == [update] and replies == [({}, None)] and client.pending == 0

    peer.close()
    with pytest.raises(ConnectionLost, match="closed"):
        _receive_until(client, lambda seen: False)
    client.close()


def test_connecting_to_nothing_fails_at_once(tmp_path):
    with pytest.raises(FileNotFoundError):
        Connection(str(tmp_path / "absent.sock"))


# --- the sync's own rules, against a scripted server ----------------------------------------

class FakeClock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def _drive(sync, rounds=50):
    for _ in range(rounds):
        sync.handle_events()
        time.sleep(0.005)


def test_an_ovsdb_server_that_stops_answering_is_dropped_and_retried(tmp_path):
    server, clock = FakeServer(tmp_path / "db.sock"), FakeClock()
    sync = OvsSync(f"unix:{server.path}", clock=clock)
    sync.tick(clock.now)  # connects
    peer = server.accept()
    monitor = _read_json(peer)
    assert monitor["method"] == "monitor" and set(monitor["params"][2]) >= {"Bridge", "sFlow"}
    peer.sendall(json.dumps({"id": monitor["id"], "result": {}, "error": None}).encode())
    _drive(sync)
    assert sync.status()["connected"]

    clock.now += PROBE_INTERVAL
    sync.tick(clock.now)
    assert _read_json(peer)["method"] == "echo"  # idle: are you there?
    clock.now += PROBE_INTERVAL
    sync.tick(clock.now)  # no answer
    status = sync.status()
    assert not status["connected"] and "no answer to echo" in status["last_error"]
    sync.tick(clock.now)
    with pytest.raises(socket.timeout):
        server.listener.settimeout(0.2)
        server.accept()  # backoff: not yet
    clock.now += 1
    sync.tick(clock.now)
    assert server.accept()  # and again after it
    sync.close(remove_rows=False)


def test_a_refused_transaction_is_reported_and_tried_again_later(tmp_path):
    server, clock = FakeServer(tmp_path / "db.sock"), FakeClock()
    sync = OvsSync(f"unix:{server.path}", clock=clock)
    sync.configure(Settings(collectors=(Collector("192.0.2.1"),)), "198.18.0.1")  # connects
    peer = server.accept()
    monitor = _read_json(peer)
    tables = {"Open_vSwitch": {"r": {"new": {"bridges": ["uuid", "b"], "next_cfg": 1, "cur_cfg": 1}}},
              "Bridge": {"b": {"new": {"name": "br0", "sflow": ["set", []], "ports": ["set", []]}}}}
    peer.sendall(json.dumps({"id": monitor["id"], "result": tables, "error": None}).encode())
    _drive(sync)
    transact = _read_json(peer)
    assert transact["method"] == "transact" and [op["op"] for op in transact["params"][1:]] == [
        "comment", "wait", "insert", "update", "mutate", "select"]
    peer.sendall(json.dumps({"id": transact["id"], "error": None, "result": [
        {}, {}, {"error": "constraint violation", "details": "no"}]}).encode())
    _drive(sync)
    status = sync.status()
    assert status["last_transaction"]["result"] == "constraint violation: no"
    assert "br0: add sFlow" in status["last_error"]

    clock.now += RETRY_AFTER_ERROR
    sync.tick(clock.now)
    assert _read_json(peer)["method"] == "transact"  # the same plan, again
    sync.close(remove_rows=False)
