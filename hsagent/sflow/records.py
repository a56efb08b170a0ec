"""Every sFlow v5 flow and counter record hsagent knows, each declared once.

Each declaration lists the fields in the spec's order as (name, XDR type, sflowtool label).
The value class (a namedtuple) is what pollers and samplers build and what the decoder returns;
`ValueClass.spec` is its `Struct`, and `spec.tag` its data_format, `(enterprise << 12) | format`.
Layouts, units and "unknown" values: the sFlow Version 5 specification (sflow.org,
sflow_version_5.txt), sFlow Host Structures (sflow_host.txt) and sFlow Host TCP/IP Counters
(sflow_host_ip.txt).
"""

from __future__ import annotations

from .xdr import F32, IP4, IP6, MAC, PERCENT100, U32, U64, UUID, Array, Opaque, String, Struct

FLOW_RECORDS: dict[int, Struct] = {}
COUNTER_RECORDS: dict[int, Struct] = {}


def tag_text(tag: int) -> str:
    """`enterprise:format`, as sflowtool writes data_format values."""
    return f"{tag >> 12}:{tag & 0xFFF}"


def _declare(registry, fmt, name, fields, enterprise=0, min_fields=None):
    spec = Struct(name, fields, min_fields=min_fields)
    spec.tag = (enterprise << 12) | fmt
    spec.value_type.spec = spec
    spec.value_type.__module__ = __name__  # so values pickle (tests pass them between processes)
    registry[spec.tag] = spec
    return spec.value_type


def flow_record(fmt, name, fields, **kw):
    return _declare(FLOW_RECORDS, fmt, name, fields, **kw)


def counter_record(fmt, name, fields, **kw):
    return _declare(COUNTER_RECORDS, fmt, name, fields, **kw)


def _same(names, xtype=U32):
    """Fields whose Python name is the label sflowtool prints (MIB object names)."""
    return [(n, xtype, n) for n in names]


# --- flow records (sFlow v5 flow_data) ----------------------------------------------------

HEADER_PROTOCOL_ETHERNET = 1
HEADER_PROTOCOL_IPV4 = 11
HEADER_PROTOCOL_IPV6 = 12

SampledHeader = flow_record(1, "sampled_header", [
    ("header_protocol", U32, "headerProtocol"),
    ("frame_length", U32, "sampledPacketSize"),  # original length incl. FCS
    ("stripped", U32, "strippedBytes"),  # bytes removed before `header` (FCS: 4)
    ("header", Opaque(), "headerBytes"),
])

SampledEthernet = flow_record(2, "sampled_ethernet", [
    ("length", U32, "ethernet_len"),
    ("src_mac", MAC, "ethernet_src"),
    ("dst_mac", MAC, "ethernet_dst"),
    ("type", U32, "ethernet_type"),
])

# sflowtool names the ports of 0:3/0:4 after the protocol (TCPSrcPort, UDPDstPort, ICMPType):
# sflow/text.py prints them that way.
SampledIpv4 = flow_record(3, "sampled_ipv4", [
    ("length", U32, "sampledPacketSize"),
    ("protocol", U32, "IPProtocol"),
    ("src_ip", IP4, "srcIP"),
    ("dst_ip", IP4, "dstIP"),
    ("src_port", U32, "srcPort"),
    ("dst_port", U32, "dstPort"),
    ("tcp_flags", U32, "TCPFlags"),
    ("tos", U32, "IPTOS"),
])

SampledIpv6 = flow_record(4, "sampled_ipv6", [
    ("length", U32, "sampledPacketSize"),
    ("protocol", U32, "IPProtocol"),
    ("src_ip", IP6, "srcIP6"),
    ("dst_ip", IP6, "dstIP6"),
    ("src_port", U32, "srcPort"),
    ("dst_port", U32, "dstPort"),
    ("tcp_flags", U32, "TCPFlags"),
    ("priority", U32, "priority"),
])

ExtendedSwitch = flow_record(1001, "extended_switch", [
    ("src_vlan", U32, "in_vlan"),
    ("src_priority", U32, "in_priority"),
    ("dst_vlan", U32, "out_vlan"),
    ("dst_priority", U32, "out_priority"),
])

ExtendedTimestamp = flow_record(1043, "extended_timestamp", [
    ("nanoseconds", U64, "timestamp_nS"),  # since the Unix epoch, UTC
])

# --- counter records (sFlow v5 counter_data) ----------------------------------------------

IfCounters = counter_record(1, "if_counters", [
    ("if_index", U32, "ifIndex"),
    ("if_type", U32, "networkType"),  # IANA ifType, 6 = ethernetCsmacd
    ("if_speed", U64, "ifSpeed"),  # bits per second, 0 = unknown
    ("if_direction", U32, "ifDirection"),  # 0 unknown, 1 full, 2 half, 3 in, 4 out
    ("if_status", U32, "ifStatus"),  # bit 0 admin up, bit 1 oper up
    ("in_octets", U64, "ifInOctets"),
    ("in_ucast_pkts", U32, "ifInUcastPkts"),
    ("in_multicast_pkts", U32, "ifInMulticastPkts"),
    ("in_broadcast_pkts", U32, "ifInBroadcastPkts"),
    ("in_discards", U32, "ifInDiscards"),
    ("in_errors", U32, "ifInErrors"),
    ("in_unknown_protos", U32, "ifInUnknownProtos"),
    ("out_octets", U64, "ifOutOctets"),
    ("out_ucast_pkts", U32, "ifOutUcastPkts"),
    ("out_multicast_pkts", U32, "ifOutMulticastPkts"),
    ("out_broadcast_pkts", U32, "ifOutBroadcastPkts"),
    ("out_discards", U32, "ifOutDiscards"),
    ("out_errors", U32, "ifOutErrors"),
    ("promiscuous_mode", U32, "ifPromiscuousMode"),
])

EthernetCounters = counter_record(2, "ethernet_counters", _same([
    "dot3StatsAlignmentErrors", "dot3StatsFCSErrors", "dot3StatsSingleCollisionFrames",
    "dot3StatsMultipleCollisionFrames", "dot3StatsSQETestErrors",
    "dot3StatsDeferredTransmissions", "dot3StatsLateCollisions", "dot3StatsExcessiveCollisions",
    "dot3StatsInternalMacTransmitErrors", "dot3StatsCarrierSenseErrors",
    "dot3StatsFrameTooLongs", "dot3StatsInternalMacReceiveErrors", "dot3StatsSymbolErrors",
]))

PortName = counter_record(1005, "port_name", [
    ("name", String(255), "ifName"),
])

MACHINE_TYPE_X86 = 2
MACHINE_TYPE_X86_64 = 3
MACHINE_TYPE_ARM = 10
OS_NAME_LINUX = 2

HostDescr = counter_record(2000, "host_descr", [
    ("hostname", String(64), "hostname"),
    ("uuid", UUID, "UUID"),  # 16 raw bytes, canonical string order
    ("machine_type", U32, "machine_type"),
    ("os_name", U32, "os_name"),
    ("os_release", String(32), "os_release"),
])

ADAPTER = Struct("adapter", [
    ("if_index", U32, "ifIndex"),
    ("macs", Array(MAC), "MACs"),
])
Adapter = ADAPTER.value_type
Adapter.__module__ = __name__

HostAdapters = counter_record(2001, "host_adapters", [
    ("adapters", Array(ADAPTER), "adaptors"),
])

HostParent = counter_record(2002, "host_parent", [
    ("container_type", U32, "parent_dsClass"),
    ("container_index", U32, "parent_dsIndex"),
])

HostCpu = counter_record(2003, "host_cpu", [
    ("load_one", F32, "cpu_load_one"),  # -1.0 = unknown
    ("load_five", F32, "cpu_load_five"),
    ("load_fifteen", F32, "cpu_load_fifteen"),
    ("proc_run", U32, "cpu_proc_run"),
    ("proc_total", U32, "cpu_proc_total"),
    ("cpu_num", U32, "cpu_num"),
    ("cpu_speed", U32, "cpu_speed"),  # MHz
    ("uptime", U32, "cpu_uptime"),  # seconds
    ("cpu_user", U32, "cpu_user"),  # ms, summed over CPUs, wraps
    ("cpu_nice", U32, "cpu_nice"),
    ("cpu_system", U32, "cpu_system"),
    ("cpu_idle", U32, "cpu_idle"),
    ("cpu_wio", U32, "cpu_wio"),
    ("cpu_intr", U32, "cpuintr"),  # sflowtool's spelling
    ("cpu_sintr", U32, "cpu_sintr"),
    ("interrupts", U32, "cpuinterrupts"),
    ("contexts", U32, "cpu_contexts"),
    ("cpu_steal", U32, "cpu_steal"),  # fields 18-20 were appended in 2014
    ("cpu_guest", U32, "cpu_guest"),
    ("cpu_guest_nice", U32, "cpu_guest_nice"),
], min_fields=17)

HostMemory = counter_record(2004, "host_memory", [
    ("mem_total", U64, "mem_total"),  # bytes
    ("mem_free", U64, "mem_free"),
    ("mem_shared", U64, "mem_shared"),
    ("mem_buffers", U64, "mem_buffers"),
    ("mem_cached", U64, "mem_cached"),
    ("swap_total", U64, "swap_total"),
    ("swap_free", U64, "swap_free"),
    ("page_in", U32, "page_in"),
    ("page_out", U32, "page_out"),
    ("swap_in", U32, "swap_in"),
    ("swap_out", U32, "swap_out"),
])

HostDiskIo = counter_record(2005, "host_disk_io", [
    ("disk_total", U64, "disk_total"),  # bytes
    ("disk_free", U64, "disk_free"),
    ("part_max_used", PERCENT100, "disk_partition_max_used"),  # percent x 100, -1 unknown
    ("reads", U32, "disk_reads"),
    ("bytes_read", U64, "disk_bytes_read"),
    ("read_time", U32, "disk_read_time"),  # ms
    ("writes", U32, "disk_writes"),
    ("bytes_written", U64, "disk_bytes_written"),
    ("write_time", U32, "disk_write_time"),
])

HostNetIo = counter_record(2006, "host_net_io", [
    ("bytes_in", U64, "nio_bytes_in"),
    ("pkts_in", U32, "nio_pkts_in"),
    ("errs_in", U32, "nio_errs_in"),
    ("drops_in", U32, "nio_drops_in"),
    ("bytes_out", U64, "nio_bytes_out"),
    ("pkts_out", U32, "nio_pkts_out"),
    ("errs_out", U32, "nio_errs_out"),
    ("drops_out", U32, "nio_drops_out"),
])

# Host TCP/IP counters (2015): MIB-II names, all u32, in the spec's order.
MIB2_IP_FIELDS = [
    "ipForwarding", "ipDefaultTTL", "ipInReceives", "ipInHdrErrors", "ipInAddrErrors",
    "ipForwDatagrams", "ipInUnknownProtos", "ipInDiscards", "ipInDelivers", "ipOutRequests",
    "ipOutDiscards", "ipOutNoRoutes", "ipReasmTimeout", "ipReasmReqds", "ipReasmOKs",
    "ipReasmFails", "ipFragOKs", "ipFragFails", "ipFragCreates",
]
MIB2_ICMP_FIELDS = [  # no icmpInTimestampReps: 25 fields, not MIB-II's 26
    "icmpInMsgs", "icmpInErrors", "icmpInDestUnreachs", "icmpInTimeExcds", "icmpInParamProbs",
    "icmpInSrcQuenchs", "icmpInRedirects", "icmpInEchos", "icmpInEchoReps", "icmpInTimestamps",
    "icmpInAddrMasks", "icmpInAddrMaskReps", "icmpOutMsgs", "icmpOutErrors",
    "icmpOutDestUnreachs", "icmpOutTimeExcds", "icmpOutParamProbs", "icmpOutSrcQuenchs",
    "icmpOutRedirects", "icmpOutEchos", "icmpOutEchoReps", "icmpOutTimestamps",
    "icmpOutTimestampReps", "icmpOutAddrMasks", "icmpOutAddrMaskReps",
]
MIB2_TCP_FIELDS = [
    "tcpRtoAlgorithm", "tcpRtoMin", "tcpRtoMax", "tcpMaxConn", "tcpActiveOpens",
    "tcpPassiveOpens", "tcpAttemptFails", "tcpEstabResets", "tcpCurrEstab", "tcpInSegs",
    "tcpOutSegs", "tcpRetransSegs", "tcpInErrs", "tcpOutRsts", "tcpInCsumErrors",
]
MIB2_UDP_FIELDS = [
    "udpInDatagrams", "udpNoPorts", "udpInErrors", "udpOutDatagrams", "udpRcvbufErrors",
    "udpSndbufErrors", "udpInCsumErrors",
]
Mib2IpGroup = counter_record(2007, "mib2_ip_group", _same(MIB2_IP_FIELDS))
Mib2IcmpGroup = counter_record(2008, "mib2_icmp_group", _same(MIB2_ICMP_FIELDS))
Mib2TcpGroup = counter_record(2009, "mib2_tcp_group", _same(MIB2_TCP_FIELDS))
Mib2UdpGroup = counter_record(2010, "mib2_udp_group", _same(MIB2_UDP_FIELDS))

VirtNode = counter_record(2100, "virt_node", [
    ("mhz", U32, "vnode_mhz"),
    ("cpus", U32, "vnode_cpus"),
    ("memory", U64, "vnode_memory"),  # bytes
    ("memory_free", U64, "vnode_memory_free"),
    ("num_domains", U32, "vnode_num_domains"),
])

# libvirt virDomainState values used in virt_cpu.state
VIR_DOMAIN_NOSTATE, VIR_DOMAIN_RUNNING, VIR_DOMAIN_BLOCKED, VIR_DOMAIN_PAUSED = 0, 1, 2, 3
VIR_DOMAIN_SHUTDOWN, VIR_DOMAIN_SHUTOFF, VIR_DOMAIN_CRASHED = 4, 5, 6

VirtCpu = counter_record(2101, "virt_cpu", [
    ("state", U32, "vcpu_state"),
    ("cpu_time", U32, "vcpu_cpu_mS"),  # ms
    ("nr_virt_cpu", U32, "vcpu_cpuCount"),
])

VirtMemory = counter_record(2102, "virt_memory", [
    ("memory", U64, "vmem_memory"),  # bytes in use
    ("max_memory", U64, "vmem_maxMemory"),  # bytes allowed
])

VirtDiskIo = counter_record(2103, "virt_disk_io", [
    ("capacity", U64, "vdsk_capacity"),
    ("allocation", U64, "vdsk_allocation"),
    ("available", U64, "vdsk_available"),
    ("rd_req", U32, "vdsk_rd_req"),
    ("rd_bytes", U64, "vdsk_rd_bytes"),
    ("wr_req", U32, "vdsk_wr_req"),
    ("wr_bytes", U64, "vdsk_wr_bytes"),
    ("errs", U32, "vdsk_errs"),
])

VirtNetIo = counter_record(2104, "virt_net_io", [
    ("rx_bytes", U64, "vnio_bytes_in"),
    ("rx_packets", U32, "vnio_pkts_in"),
    ("rx_errs", U32, "vnio_errs_in"),
    ("rx_drop", U32, "vnio_drops_in"),
    ("tx_bytes", U64, "vnio_bytes_out"),
    ("tx_packets", U32, "vnio_pkts_out"),
    ("tx_errs", U32, "vnio_errs_out"),
    ("tx_drop", U32, "vnio_drops_out"),
])
