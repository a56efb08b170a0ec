"""PacketSampler on a veth pair in namespaces: 1-in-N statistics, sample_pool against the
interface counters, decoded headers (ours and tshark's), drops under overload, live rate change.

Topology: hss-ap-a (hss-ap0, 198.18.1.1/24) <-> hss-ap-b (hss-ap1, no address, so it drops
what it receives silently). IPv6 is off in both so no stray neighbour discovery packets
disturb the counts. The sampler runs in a process started with `ip netns exec`.
"""

import io
import shutil
import socket
import subprocess

import pytest
from conftest import (
    DST_PORT,
    PAYLOAD,
    SAMPLING_DST as DST,
    SAMPLING_SRC as SRC,
    SRC_PORT,
    decoded_samples,
    delete_namespaces,
    ip,
    make_veth_pair,
    read_while,
    run_in_netns,
    start_sender,
    to_datagrams,
    udp_fields,
    within_4_sd,
)

from hsagent.sflow import pcap
from hsagent.sflow.datagram import IF_INTERNAL

pytestmark = pytest.mark.root  # namespaces and AF_PACKET sockets

NS_A, NS_B = "hss-ap-a", "hss-ap-b"
DEV_A, DEV_B = "hss-ap0", "hss-ap1"
@pytest.fixture(scope="module")
def veth():
    try:
        make_veth_pair(NS_A, NS_B, DEV_A, DEV_B, SRC)
        ip("-n", NS_A, "neigh", "add", DST, "lladdr", "02:00:00:00:00:02", "dev", DEV_A,
           "nud", "permanent")
        yield
    finally:
        delete_namespaces(NS_A, NS_B)


# --- scenarios: run inside hss-ap-a --------------------------------------------------------

def sample_one_in_100(count):
    from hsagent.sampling.afpacket import PacketSampler, read_packet_count
    sampler = PacketSampler(DEV_A, 100)
    start = read_packet_count(DEV_A)
    samples = read_while(sampler, start_sender(count))
    seen = read_packet_count(DEV_A) - start
    passed, drops = sampler.passed, sampler.drops
    sampler.close()
    return to_datagrams(samples), seen, passed, drops, socket.if_nametoindex(DEV_A)


def overload(count):
    from hsagent.sampling.afpacket import PacketSampler
    sampler = PacketSampler(DEV_A, 1, rcvbuf=4096)
    sender = start_sender(count)
    sender.wait(timeout=30)  # no reads during the burst
    samples = read_while(sampler, sender)
    passed, drops = sampler.passed, sampler.drops
    sampler.close()
    return to_datagrams(samples), passed, drops


def change_rate():
    from hsagent.sampling.afpacket import PacketSampler
    sampler = PacketSampler(DEV_A, 0)
    fileno = sampler.fileno()
    results = [len(read_while(sampler, start_sender(2_000)))]
    sampler.set_rate(1)
    results.append(len(read_while(sampler, start_sender(1_000))))
    sampler.set_rate(10)
    samples = read_while(sampler, start_sender(20_000))
    results.append((len(samples), {s.sampling_rate for s in samples}))
    assert sampler.fileno() == fileno
    results.append(sampler.drops)
    sampler.close()
    return results


# --- tests ---------------------------------------------------------------------------------

@pytest.mark.slow
def test_one_in_100_of_200000_packets(veth, tmp_path):
    datagrams, seen, passed, drops, ifindex = run_in_netns(NS_A, sample_one_in_100, 200_000)
    samples = decoded_samples(datagrams)
    assert 200_000 <= seen < 200_100  # the interface's own count of what it carried
    assert within_4_sd(len(samples), seen, 100), (len(samples), seen)
    # the kernel passed Python only the sampled packets, and we lost none of them
    assert drops == 0 and passed == len(samples)
    # sample_pool is the interface's packet counter since the sampler started, read when the
    # sample was: the last one lags the final count only by the packets sent after it (the
    # odds of 1,000 unsampled packets in a row at 1 in 100 are e^-10)
    pools = [s.sample_pool for s in samples]
    assert pools == sorted(pools) and 0 <= seen - pools[-1] < 1_000
    # sent by this host: from "internal" out of the sampled interface
    assert {(s.ds_index, s.input.value, s.output.value, s.sampling_rate, s.drops)
            for s in samples} == {(ifindex, IF_INTERNAL, ifindex, 100, 0)}

    assert [s.sequence for s in samples] == list(range(1, len(samples) + 1))
    for sample in samples:
        (header,) = sample.records
        assert (header.header_protocol, header.stripped) == (1, 4)
        assert header.frame_length == 14 + 20 + 8 + PAYLOAD + 4
        assert len(header.header) == 128
        assert udp_fields(header.header) == (0x0800, SRC, DST, 17, SRC_PORT, DST_PORT)

    if shutil.which("tshark") is None:
        pytest.skip("tshark is not installed: the decoded-header check above still ran")
    stream = io.BytesIO()
    pcap.write_udp(stream, datagrams[:3])
    path = tmp_path / "samples.pcap"
    path.write_bytes(stream.getvalue())
    out = subprocess.run(["tshark", "-r", str(path), "-T", "fields", "-E", "separator=;",
                          "-e", "ip.src", "-e", "udp.dstport", "-e", "sflow_245.header_protocol"],
                         capture_output=True, text=True, check=True).stdout
    assert len(out.splitlines()) == 3
    for line in out.splitlines():
        sources, ports, protocols = line.split(";")
        assert SRC in sources.split(",")  # the sampled packet, inside the sFlow header
        assert str(DST_PORT) in ports.split(",")
        assert set(protocols.split(",")) == {"1"}


def test_overload_shows_as_drops(veth):
    datagrams, passed, drops = run_in_netns(NS_A, overload, 5_000)
    samples = decoded_samples(datagrams)
    assert drops > 0 and samples, (len(samples), drops)
    assert passed == len(samples) + drops  # nothing lost silently
    assert samples[0].drops == drops  # the flow samples carry the loss


def test_set_rate_changes_the_filter_without_reopening(veth):
    off, every, (tenth, rates), drops = run_in_netns(NS_A, change_rate)
    assert off == 0
    assert every == 1_000
    assert within_4_sd(tenth, 20_000, 10) and rates == {10}
    assert drops == 0
