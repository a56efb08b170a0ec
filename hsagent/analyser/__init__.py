"""A flow analyser for sFlow: the model of sFlow-RT's flows, thresholds and events, in Python.

Datagrams from any number of agents are decoded with `hsagent.sflow` and each flow sample's
sampled header is parsed into packet fields (`packets`). A flow definition names the fields
that key a flow, its value (bytes or frames) and a filter (ingress, egress, any); every agent
and data source keeps its own flows, whose rates are exponentially smoothed over `t` seconds
(`flows`). Thresholds on those rates raise one event per flow until the flow has stayed below
for `timeout` seconds (`thresholds`). `listener` is the UDP socket; the rest is pure and fed
by the tests with samples.
"""
