"""psample: the parser on generic netlink messages built byte by byte; the real channel
when the kernel has it (this one is built without CONFIG_PSAMPLE, so that test skips)."""

import struct

import pytest

from hsagent.netlink import messages
from hsagent.sampling import flows, psample
from hsagent.sflow.datagram import UNKNOWN_INTERFACE

FAMILY = 0x1F  # a generic netlink family id, as the controller would assign it
FRAME = bytes.fromhex("0200000000020200000000010800") + bytes.fromhex(
    "4500002e00004000401100000a0000010a000002") + b"p" * 26


def attr(kind, value):
    return struct.pack("=HH", 4 + len(value), kind) + value + b"\0" * (-len(value) % 4)


def sample_message(group, seq, rate=256, iif=4, oif=0, data=FRAME, origsize=1514, family=FAMILY):
    attrs = b"".join([
        attr(psample.PSAMPLE_ATTR_IIFINDEX, struct.pack("=H", iif)) if iif else b"",
        attr(psample.PSAMPLE_ATTR_OIFINDEX, struct.pack("=H", oif)) if oif else b"",
        attr(psample.PSAMPLE_ATTR_ORIGSIZE, struct.pack("=I", origsize)),
        attr(psample.PSAMPLE_ATTR_SAMPLE_GROUP, struct.pack("=I", group)),
        attr(psample.PSAMPLE_ATTR_GROUP_SEQ, struct.pack("=I", seq)),
        attr(psample.PSAMPLE_ATTR_SAMPLE_RATE, struct.pack("=I", rate)) if rate else b"",
        attr(psample.PSAMPLE_ATTR_DATA, data),
    ])
    body = struct.pack("=BBH", psample.PSAMPLE_CMD_SAMPLE, 1, 0) + attrs
    return struct.pack("=IHHII", 16 + len(body), family, 0, 0, 0) + body


def test_parse_sample():
    (kind, _, _, payload), = messages(sample_message(3, 41, oif=7))
    assert kind == FAMILY
    assert psample.parse_sample(payload) == psample.PsamplePacket(3, 41, 256, 4, 7, 1514, FRAME)


def test_ingress_sample_record():
    (_, _, _, payload), = messages(sample_message(3, 1))
    sample = psample.packet_sample(psample.parse_sample(payload), 256, 256, 0, 40)
    (header,) = sample.records
    assert (sample.ds_index, sample.input.value, sample.output) == (4, 4, UNKNOWN_INTERFACE)
    assert (header.header_protocol, header.frame_length, header.stripped) == (1, 1518, 4)
    assert header.header == FRAME[:40]


def test_other_commands_are_not_samples():
    body = struct.pack("=BBH", 2, 1, 0) + struct.pack("=HHI", 8, 7, 1)  # NEW_GROUP
    assert psample.parse_sample(body) is None


def test_decode_keeps_our_group_and_counts_gaps():
    buf = b"".join([
        sample_message(3, 10), sample_message(9, 500),  # another group: ignored
        sample_message(3, 13, rate=0, iif=0, oif=6),  # egress, no rate: the fallback
        sample_message(3, 14, family=FAMILY + 1),  # another family: ignored
    ])
    samples = psample.decode_samples(buf, FAMILY, 3, flows.SampleCounts(), 1000, 128)
    assert [(s.ds_index, s.sampling_rate, s.sample_pool, s.drops, s.input.value, s.output.value)
            for s in samples] == [(4, 256, 256, 0, 4, 0), (6, 1000, 1000, 2, 0, 6)]


def test_real_kernel_channel():
    try:
        sampler = psample.PsampleSampler(1)
    except psample.PsampleUnavailable as e:
        assert "psample" in str(e)
        pytest.skip(f"generic netlink family 'psample' is missing here: {e}")
    try:
        assert sampler.read() == []  # nothing configured to sample: nothing queued
    finally:
        sampler.close()
