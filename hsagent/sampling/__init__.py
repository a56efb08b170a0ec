"""Packet sampling done by the kernel, turned into sFlow flow samples.

Three samplers share one shape, which is all the agent's selector loop relies on:

    fileno() -> int                 readable when sampled packets are queued
    read() -> list[FlowSample]      non-blocking; drains at most a bounded batch per call;
                                    samples carry sequence 0 (DatagramBuilder numbers them)
    set_rate(n)                     change the 1-in-N rate live, keeping the socket open
    close()

- afpacket.PacketSampler: one interface, an AF_PACKET socket with a BPF 1-in-N filter (bpf.py)
- nflog.NflogSampler: an iptables `statistic` + NFLOG rule feeding a netlink group
- psample.PsampleSampler: the kernel's psample channel (tc `sample` action, switch ASICs)

flows.py builds the samples for all three, so header and interface conventions live in one place.
"""
