"""Printing decoded datagrams the way sflowtool does: its text layout, or one JSON object.

Both forms come from one intermediate: each datagram, sample and record becomes a list of
(key, text, value) entries, where `text` is what sflowtool prints and `value` the JSON value
(numbers stay numbers). An entry with key None is one of sflowtool's raw lines (`skipping
unknown ...`): printed as is in text, left out of JSON.

Records print generically from their Struct declaration (label, then the XDR type's text);
only the records sflowtool lays out differently have a printer of their own below.
"""

from __future__ import annotations

import time
from typing import Any, NamedTuple

from . import records as r
from .datagram import CountersSample, Datagram, FlowSample, UnknownRecord
from .headers import decode_header
from .records import tag_text
from .xdr import IP4, IP6, String

START_DATAGRAM = "startDatagram ================================="
END_DATAGRAM = "endDatagram   ================================="
START_SAMPLE = "startSample ----------------------"
END_SAMPLE = "endSample   ----------------------"
MAX_HEADER_BYTES_SHOWN = 682  # sflowtool formats values in 2048 bytes: (2048 - 1) // 3

Entry = tuple  # (key | None, text, json value)


class _Sample(NamedTuple):
    entries: list  # the sample's own lines
    elements: list  # one entry list per flow or counter record


# --- values ----------------------------------------------------------------------------------

def address_text(address) -> str:
    """An IP address as sflowtool prints it: IPv6 in full, 8 groups of 4 hex digits."""
    return address.exploded if address.version == 6 else str(address)


def printable(value: str) -> str:
    r"""A string from a datagram, safe to print on one line of a terminal.

    sflowtool prints such strings raw, so a hostname holding a newline, an escape sequence
    or a byte that is not UTF-8 can forge lines, drive the terminal, or stop an ASCII
    stdout. Here printable characters (and the space) stay as they are and everything else
    is written as a C-style escape: \\ for the backslash, \xHH for a byte that is not
    UTF-8 and for control characters, \uHHHH or \UHHHHHHHH for other invisible characters
    (format controls such as U+202E, line and paragraph separators)."""
    if value.isprintable() and "\\" not in value:
        return value
    return "".join(_escape(char) for char in value)


def _escape(char: str) -> str:
    code = ord(char)
    if char == "\\":
        return "\\\\"
    if 0xDC80 <= code <= 0xDCFF:  # a byte that was not UTF-8 (see xdr.String.unpack)
        return f"\\x{code - 0xDC00:02x}"
    if char.isprintable():
        return char
    if code < 0x100:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def _render(xtype, value) -> tuple[str, Any]:
    """(text, JSON value) of one field."""
    if isinstance(xtype, String):
        text = printable(value)
        return text, text
    return xtype.text(value), xtype.json(value)


def _port(fmt: int, value: int) -> tuple[str, Any]:
    if fmt == 0:
        return str(value), value
    prefix = {1: "dropCode ", 2: "multiple ", 3: "format==3 "}.get(fmt)
    text = "" if prefix is None else f"{prefix}{value}"
    return text, text


def _int(key: str, value: int) -> Entry:
    return key, str(value), value


def _str(key: str, text: str) -> Entry:
    return key, text, text


# --- records ---------------------------------------------------------------------------------

def _generic(record) -> list[Entry]:
    out = []
    for field, value in zip(record.spec.fields, record):
        if value is None:  # a field this (older, shorter) body did not carry
            continue
        if isinstance(field.type, String) and not value:  # sflowtool omits empty strings
            continue
        out.append((field.label, *_render(field.type, value)))
    return out


def _sampled_header(rec: r.SampledHeader) -> list[Entry]:
    shown = rec.header[:MAX_HEADER_BYTES_SHOWN]
    out = [
        _str("flowSampleType", "HEADER"),
        _int("headerProtocol", rec.header_protocol),
        _int("sampledPacketSize", rec.frame_length),
        _int("strippedBytes", rec.stripped),
        _int("headerLen", len(rec.header)),
        _str("headerBytes", shown.hex("-").upper()),
    ]
    for key, value in decode_header(rec.header_protocol, rec.header, rec.frame_length,
                                    rec.stripped):
        out.append((key, str(value), value))
    return out


def _sampled_ethernet(rec: r.SampledEthernet) -> list[Entry]:
    # sflowtool's own order and names, not the wire's
    return [_str("flowSampleType", "ETHERNET"), _int("ethernet_type", rec.type),
            _int("ethernet_len", rec.length), _str("ethernet_src", rec.src_mac.hex()),
            _str("ethernet_dst", rec.dst_mac.hex())]


def _transport_ports(protocol: int, rec) -> list[Entry]:
    """Ports of a decoded IPv4/IPv6 record; for ICMP the type travels in dst_port."""
    if protocol == 1:
        return [_int("ICMPType", rec.dst_port)]
    if protocol == 6:
        return [_int("TCPSrcPort", rec.src_port), _int("TCPDstPort", rec.dst_port),
                _int("TCPFlags", rec.tcp_flags)]
    if protocol == 17:
        return [_int("UDPSrcPort", rec.src_port), _int("UDPDstPort", rec.dst_port)]
    return []


def _sampled_ipv4(rec: r.SampledIpv4) -> list[Entry]:
    return [_str("flowSampleType", "IPV4"), _int("sampledPacketSize", rec.length),
            _int("IPSize", rec.length), _str("srcIP", IP4.text(rec.src_ip)),
            _str("dstIP", IP4.text(rec.dst_ip)), _int("IPProtocol", rec.protocol),
            _int("IPTOS", rec.tos), *_transport_ports(rec.protocol, rec)]


def _sampled_ipv6(rec: r.SampledIpv6) -> list[Entry]:
    return [_str("flowSampleType", "IPV6"), _int("sampledPacketSize", rec.length),
            _int("IPSize", rec.length), _str("srcIP6", IP6.text(rec.src_ip)),
            _str("dstIP6", IP6.text(rec.dst_ip)), _int("IPProtocol", rec.protocol),
            _int("priority", rec.priority), *_transport_ports(rec.protocol, rec)]


def _host_adapters(rec: r.HostAdapters) -> list[Entry]:
    out = []
    for i, adapter in enumerate(rec.adapters):
        out.append(_int(f"adaptor_{i}_ifIndex", adapter.if_index))
        out.append(_int(f"adaptor_{i}_MACs", len(adapter.macs)))
        out += [_str(f"adaptor_{i}_MAC_{j}", mac.hex()) for j, mac in enumerate(adapter.macs)]
    return out


_PRINTERS = {
    r.SampledHeader.spec: _sampled_header,
    r.SampledEthernet.spec: _sampled_ethernet,
    r.SampledIpv4.spec: _sampled_ipv4,
    r.SampledIpv6.spec: _sampled_ipv6,
    r.HostAdapters.spec: _host_adapters,
}

# Flow records that sflowtool introduces with an `extendedType` line.
_EXTENDED_TYPES = {
    r.ExtendedSwitch.spec: "SWITCH",
    r.ExtendedTimestamp.spec: "timestamp",
}


def _record(record, flow: bool) -> list[Entry]:
    tag_key = "flowBlock_tag" if flow else "counterBlock_tag"
    if isinstance(record, UnknownRecord):
        kind = "flow_sample_element" if flow else "counters_sample_element"
        tag = tag_text(record.tag)
        return [_str(tag_key, tag),
                (None, f"skipping unknown {kind}: {tag} len={len(record.data)}", None)]
    spec = record.spec
    out = [_str(tag_key, tag_text(spec.tag))]
    extended = _EXTENDED_TYPES.get(spec)
    if extended:
        out.append(_str("extendedType", extended))
    out += _PRINTERS.get(spec, _generic)(record)
    return out


# --- samples and datagrams -------------------------------------------------------------------

def _sample(sample) -> _Sample:
    if isinstance(sample, FlowSample):
        fmt = 3 if sample.expanded else 1
        entries = [
            _str("sampleType_tag", f"0:{fmt}"),
            _str("sampleType", "FLOWSAMPLE"),
            _int("sampleSequenceNo", sample.sequence),
            _str("sourceId", f"{sample.ds_class}:{sample.ds_index}"),
            _int("meanSkipCount", sample.sampling_rate),
            _int("samplePool", sample.sample_pool),
            _int("dropEvents", sample.drops),
            ("inputPort", *_port(*sample.input)),
            ("outputPort", *_port(*sample.output)),
        ]
        return _Sample(entries, [_record(rec, True) for rec in sample.records])
    if isinstance(sample, CountersSample):
        fmt = 4 if sample.expanded else 2
        entries = [
            _str("sampleType_tag", f"0:{fmt}"),
            _str("sampleType", "COUNTERSSAMPLE"),
            _int("sampleSequenceNo", sample.sequence),
            _str("sourceId", f"{sample.ds_class}:{sample.ds_index}"),
        ]
        return _Sample(entries, [_record(rec, False) for rec in sample.records])
    tag = tag_text(sample.tag)
    return _Sample([_str("sampleType_tag", tag),
                    (None, f"skipping unknown sample: {tag} len={len(sample.data)}", None)], [])


def _microseconds(t: float) -> int:
    return min(round((t - int(t)) * 1e6), 999999)


def _iso8601(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(t))


def _datagram_entries(datagram: Datagram, size: int, source_ip: str, received: float,
                      captured: float | None) -> list[Entry]:
    out = [_str("datagramSourceIP", source_ip), _int("datagramSize", size)]
    out += [_int("unixSecondsUTC", int(received)),
            _int("unixSecondsUTC_uS", _microseconds(received)),
            _str("localtime", _iso8601(received))]
    if captured is not None:
        out += [_str("pcapTimestamp", _iso8601(captured)),
                _int("pcapTimestamp_uS", _microseconds(captured))]
    out += [
        _int("datagramVersion", datagram.version),
        _int("agentSubId", datagram.sub_agent_id),
        _str("agent", address_text(datagram.agent)),
        _int("packetSequenceNo", datagram.sequence),
        _int("sysUpTime", datagram.uptime),
        _int("samplesInPacket", len(datagram.samples)),
    ]
    return out


def datagram_lines(datagram: Datagram, size: int, source_ip: str = "-",
                   received: float | None = None, captured: float | None = None) -> list[str]:
    """sflowtool's text for one datagram of `size` bytes.

    `received` is the reading clock (default: now); `captured` the pcap record time, printed
    only when reading from a capture. `source_ip` is the UDP peer, "-" when unknown.
    """
    received = time.time() if received is None else received
    lines = [START_DATAGRAM]
    lines += _lines(_datagram_entries(datagram, size, source_ip, received, captured))
    for sample in datagram.samples:
        s = _sample(sample)
        lines.append(START_SAMPLE)
        lines += _lines(s.entries)
        for element in s.elements:
            lines += _lines(element)
        lines.append(END_SAMPLE)
    lines.append(END_DATAGRAM)
    return lines


def _lines(entries: list[Entry]) -> list[str]:
    return [text if key is None else f"{key} {text}" for key, text, _ in entries]


def datagram_json(datagram: Datagram, size: int, source_ip: str = "-",
                  received: float | None = None, captured: float | None = None) -> dict:
    """The same content as `datagram_lines`, as one JSON-ready dict (sflowtool -j layout:
    `samples`, each with its `elements`), but with numbers as numbers."""
    received = time.time() if received is None else received
    out = _object(_datagram_entries(datagram, size, source_ip, received, captured))
    samples = []
    for sample in datagram.samples:
        s = _sample(sample)
        obj = _object(s.entries)
        if isinstance(sample, (FlowSample, CountersSample)):
            obj["elements"] = [_object(element) for element in s.elements]
        samples.append(obj)
    out["samples"] = samples
    return out


def _object(entries: list[Entry]) -> dict:
    """Entries as one JSON object; a key that occurs more than once (e.g. each IPv6
    extension header's IP6HeaderExtension) gets the list of its values, in order."""
    out: dict = {}
    repeated = set()
    for key, _, value in entries:
        if key is None:
            continue
        if key not in out:
            out[key] = value
        elif key in repeated:
            out[key].append(value)
        else:
            out[key] = [out[key], value]
            repeated.add(key)
    return out
