"""`hsagent decode` as a program: pcap input, JSON output, live UDP on IPv4 and IPv6, errors."""

from __future__ import annotations

import ipaddress
import json
import os
import re
import select
import signal
import socket
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from hsagent.sflow import records as r
from hsagent.sflow.datagram import CountersSample, Datagram, encode_datagram
from hsagent.sflow.pcap import write_udp

PCAP = Path(__file__).parent / "data" / "hsflowd-docker.pcap"
DECODE = [sys.executable, "-m", "hsagent", "decode"]
CLOCK_KEYS = ("unixSecondsUTC", "unixSecondsUTC_uS", "localtime")
TIMEOUT = 20


def _run(*args) -> subprocess.CompletedProcess:
    return subprocess.run(DECODE + list(args), capture_output=True, text=True, timeout=120)


def _datagrams(text: str) -> list[list[str]]:
    """Text output split per datagram, without the start/end marker lines."""
    blocks = text.split("startDatagram =================================\n")[1:]
    return [[line for line in block.splitlines() if not line.startswith(("start", "end"))]
            for block in blocks]


def _flatten(obj: dict) -> list[tuple[str, object]]:
    """A datagram's JSON object as (key, value) pairs in text order."""
    pairs = [(k, v) for k, v in obj.items() if k != "samples"]
    for sample in obj["samples"]:
        pairs += [(k, v) for k, v in sample.items() if k != "elements"]
        for element in sample.get("elements", []):
            pairs += list(element.items())
    return pairs


def _same(text: str, value) -> bool:
    if isinstance(value, float):
        return float(text) == value
    if value is None:
        return text == "unknown"
    return text == str(value)


def test_pcap_text_and_json_agree():
    text, as_json = _run("--pcap", str(PCAP)), _run("--pcap", str(PCAP), "--json")
    assert text.returncode == as_json.returncode == 0
    assert text.stderr == as_json.stderr == ""
    objects = [json.loads(line) for line in as_json.stdout.splitlines()]
    blocks = _datagrams(text.stdout)
    assert len(objects) == len(blocks) == 100
    for block, obj in zip(blocks, objects):
        lines = [line.split(" ", 1) for line in block]
        pairs = _flatten(obj)
        assert [key for key, _ in lines] == [key for key, _ in pairs]
        for (key, text_value), (_, json_value) in zip(lines, pairs):
            if key not in CLOCK_KEYS:
                assert _same(text_value, json_value), (key, text_value, json_value)
    # Numbers are JSON numbers.
    first = objects[0]
    assert first["packetSequenceNo"] == 1 and first["agent"] == "192.0.2.2"
    assert isinstance(first["samples"][0]["elements"][0]["timestamp_nS"], int)


def test_pcap_count_stops_early():
    run = _run("--pcap", str(PCAP), "--count", "3")
    assert run.returncode == 0
    assert run.stdout.count("startDatagram") == 3


@pytest.mark.parametrize("path,message", [
    ("/nonexistent/hsw-missing.pcap", "No such file"),
    (str(Path(__file__)), "not a classic pcap file"),
    (str(Path(__file__).parent), "Is a directory"),
])
def test_bad_pcap_exits_2_with_a_message(path, message):
    run = _run("--pcap", path)
    assert run.returncode == 2
    assert message in run.stderr and path in run.stderr
    assert run.stdout == ""


def _datagram(seq: int) -> bytes:
    sample = CountersSample(3, 100000 + seq, [r.HostParent(2, 1)], sequence=seq)
    return encode_datagram(Datagram(ipaddress.ip_address("198.18.0.7"), 0, seq, 1000, [sample]))


class Listener:
    """`hsagent decode` on a free port; waits until it announces that it listens."""

    def __init__(self, *args):
        self.proc = subprocess.Popen(DECODE + ["--port", "0", *args], stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE)
        self._pending = {self.proc.stdout: b"", self.proc.stderr: b""}
        line = self._readline(self.proc.stderr)
        match = re.search(r"listening on \[(.*)\]:(\d+)$", line)
        assert match, line
        self.port = int(match.group(2))

    def _readline(self, stream) -> str:
        """One line, read from the pipe's descriptor directly so select() sees what is left."""
        while b"\n" not in self._pending[stream]:
            ready, _, _ = select.select([stream], [], [], TIMEOUT)
            assert ready, "hsagent decode printed nothing in time"
            chunk = os.read(stream.fileno(), 65536)
            assert chunk, "hsagent decode closed its output"
            self._pending[stream] += chunk
        line, self._pending[stream] = self._pending[stream].split(b"\n", 1)
        return line.decode()

    def send(self, payload: bytes, address: str) -> None:
        family = socket.AF_INET6 if ":" in address else socket.AF_INET
        with socket.socket(family, socket.SOCK_DGRAM) as s:
            s.sendto(payload, (address, self.port))

    def read_until(self, last: str) -> list[str]:
        lines = []
        while not lines or not lines[-1].startswith(last):
            lines.append(self._readline(self.proc.stdout))
        return lines

    def finish(self) -> tuple[int, str, str]:
        out, err = self.proc.communicate(timeout=TIMEOUT)
        return (self.proc.returncode, (self._pending[self.proc.stdout] + out).decode(),
                (self._pending[self.proc.stderr] + err).decode())

    def close(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def listen():
    started = []

    def start(*args):
        started.append(Listener(*args))
        return started[-1]

    yield start
    for listener in started:
        listener.close()


@pytest.mark.parametrize("bind,sender,source", [
    ("127.0.0.1", "127.0.0.1", "127.0.0.1"),
    ("::1", "::1", "0000:0000:0000:0000:0000:0000:0000:0001"),
    ("::", "::1", "0000:0000:0000:0000:0000:0000:0000:0001"),
    ("::", "127.0.0.1", "127.0.0.1"),  # dual-stack socket: a v4-mapped peer prints as IPv4
])
def test_live_udp(listen, bind, sender, source):
    listener = listen("--bind", bind, "--count", "2")
    listener.send(_datagram(1), sender)
    # Each datagram is flushed as it arrives, before the next one is sent.
    first = listener.read_until("endDatagram")
    assert f"datagramSourceIP {source}" in first
    assert "packetSequenceNo 1" in first and "sourceId 3:100001" in first
    listener.send(_datagram(2), sender)
    code, out, err = listener.finish()
    assert code == 0
    assert "packetSequenceNo 2" in out and "sourceId 3:100002" in out
    assert f"datagramSize {len(_datagram(2))}" in out


def test_live_json(listen):
    listener = listen("--bind", "127.0.0.1", "--count", "1", "--json")
    listener.send(_datagram(5), "127.0.0.1")
    code, out, _ = listener.finish()
    obj = json.loads(out)
    assert code == 0
    assert obj["datagramSourceIP"] == "127.0.0.1"
    assert obj["samples"][0]["elements"] == [
        {"counterBlock_tag": "0:2002", "parent_dsClass": 2, "parent_dsIndex": 1}]


def test_garbage_is_reported_and_decoding_continues(listen):
    listener = listen("--bind", "127.0.0.1", "--count", "3")
    garbage = _datagram(1)[:-6]
    listener.send(garbage, "127.0.0.1")
    listener.send(b"\x00\x00\x00\x04hello", "127.0.0.1")
    listener.send(_datagram(3), "127.0.0.1")
    code, out, err = listener.finish()
    assert code == 0
    assert out.count("startDatagram") == 1 and "packetSequenceNo 3" in out
    errors = err.strip().splitlines()
    assert len(errors) == 2
    assert re.fullmatch(rf"hsagent decode: bad datagram from 127\.0\.0\.1:\d+ "
                        rf"\({len(garbage)} bytes\) at offset \d+: .+", errors[0])
    assert "at offset 0: sFlow version 4" in errors[1]


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_signal_stops_cleanly(listen, signum):
    listener = listen("--bind", "127.0.0.1")
    listener.send(_datagram(1), "127.0.0.1")
    listener.read_until("endDatagram")
    listener.proc.send_signal(signum)
    code, out, err = listener.finish()
    assert code == 0
    assert "Traceback" not in err


def _limit_memory():
    import resource
    resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))  # far below a trusted 4 GiB


@pytest.mark.parametrize("caplen,message", [
    (0xFFFFFFFF, "captured length 4294967295 is over the 262144-byte maximum"),
    (1000, "the file ends in the middle of the packet"),
])
def test_a_hostile_pcap_record_size_is_refused(tmp_path, caplen, message):
    path = tmp_path / "hostile.pcap"
    with open(path, "wb") as f:
        write_udp(f, [_datagram(1)])
        at = f.tell()
        f.write(struct.pack("<IIII", 0, 0, caplen, caplen) + b"\0" * 64)
    run = subprocess.run(DECODE + ["--pcap", str(path)], capture_output=True, text=True,
                         timeout=120, preexec_fn=_limit_memory)
    assert run.returncode == 2
    assert run.stderr == f"hsagent decode: {path}: record 2 (byte {at}): {message}\n"
    assert run.stdout.count("startDatagram") == 1  # the good record before it is decoded



HOSTILE_NAME = b"evil\nendDatagram   ====\nagent 6.6.6.6\x1b[2J\x00\\\xff"  # <= 64 bytes
ESCAPED_NAME = r"evil\x0aendDatagram   ====\x0aagent 6.6.6.6\x1b[2J\x00\\\xff"


def _hostile_datagram() -> bytes:
    """A host_descr whose hostname is HOSTILE_NAME (bytes no str encodes to), and a port name
    with printable UTF-8 and an invisible right-to-left override."""
    placeholder = b"A" * len(HOSTILE_NAME)
    records = [r.HostDescr(placeholder.decode(), bytes(16), 3, 2, "6.1"),
               r.PortName("p\u00f6rt\u202e")]
    sample = CountersSample(2, 1, records, sequence=1)
    data = encode_datagram(Datagram(ipaddress.ip_address("198.18.0.7"), 0, 1, 1000, [sample]))
    return data.replace(placeholder, HOSTILE_NAME)


@pytest.mark.parametrize("encoding,port_name", [
    ("ascii", r"p\xf6rt\u202e"),  # what ASCII lacks is escaped too, not fatal
    ("utf-8", "p\u00f6rt\\u202e"),
])
def test_strings_from_a_datagram_are_escaped(listen, monkeypatch, encoding, port_name):
    monkeypatch.setenv("PYTHONIOENCODING", encoding)
    listener = listen("--bind", "127.0.0.1", "--count", "2")
    listener.send(_hostile_datagram(), "127.0.0.1")
    listener.send(_datagram(2), "127.0.0.1")
    code, out, err = listener.finish()
    assert code == 0 and "Traceback" not in err, err
    lines = out.splitlines()
    assert sum(line.startswith("endDatagram") for line in lines) == 2  # one per datagram
    assert sum(line.startswith("agent ") for line in lines) == 2
    assert "\x1b" not in out and "\x00" not in out
    assert f"hostname {ESCAPED_NAME}" in lines
    assert f"ifName {port_name}" in lines


def test_json_escapes_the_same_and_keeps_repeated_keys(listen):
    listener = listen("--bind", "127.0.0.1", "--count", "1", "--json")
    listener.send(_hostile_datagram(), "127.0.0.1")
    code, out, _ = listener.finish()
    assert code == 0 and len(out.splitlines()) == 1
    elements = json.loads(out)["samples"][0]["elements"]
    assert elements[0]["hostname"] == ESCAPED_NAME
    assert elements[1]["ifName"] == "p\u00f6rt\\u202e"


def _ipv6_with_extension_headers(kinds) -> bytes:
    """IPv6 + a chain of extension headers as sflowtool walks it (2 bytes short each step)
    + UDP: the decoder reports one IP6HeaderExtension per header."""
    chain = bytearray()
    for kind, following in zip(kinds, [*kinds[1:], 17]):
        chain += bytes([following, 0, 0, 0, 0, 0])
    udp = struct.pack(">HHHH", 5000, 6343, 8, 0)
    fixed = struct.pack(">IHBB16s16s", 6 << 28, len(chain) + 8, kinds[0], 64,
                        bytes(15) + b"\1", bytes(15) + b"\2")
    return fixed + bytes(chain) + udp


def test_repeated_header_keys_are_lists_in_json():
    from hsagent.sflow.datagram import FlowSample, Interface, decode_datagram
    from hsagent.sflow.text import datagram_json, datagram_lines

    kinds = [0, 60, 43, 44, 51, 60]
    header = _ipv6_with_extension_headers(kinds)
    record = r.SampledHeader(r.HEADER_PROTOCOL_IPV6, len(header), 0, header)
    sample = FlowSample(0, 3, 400, 8000, 0, Interface(0, 3), Interface(0, 0x3FFFFFFF),
                        [record], sequence=1)
    data = encode_datagram(Datagram(ipaddress.ip_address("198.18.0.7"), 0, 1, 1000, [sample]))
    datagram = decode_datagram(data)
    text = [line.split(" ", 1)[1] for line in datagram_lines(datagram, len(data))
            if line.startswith("IP6HeaderExtension ")]
    assert text == [str(k) for k in kinds]
    element = datagram_json(datagram, len(data))["samples"][0]["elements"][0]
    assert element["IP6HeaderExtension"] == kinds
    assert element["UDPDstPort"] == 6343
