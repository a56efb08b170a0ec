"""Open vSwitch: sFlow on every bridge, kept in step with the agent's settings.

hsflowd's `ovs { }` module (once the sflowovsd daemon) writes the agent's sFlow settings into
Open vSwitch's database so that one configuration drives both the host's counters and the
virtual switch's packet sampling. Here that is four pieces, each usable alone, and two small
ones for `hsagent check`:

  jsonrpc.py    JSON-RPC 1.0 over a stream socket as OVSDB speaks it (RFC 7047 section 4):
                message framing, request ids, answering the server's `echo`
  ovsdb.py      OVSDB's JSON value notation and a replica of the monitored tables
  reconcile.py  pure: the sFlow rows the settings call for, and the transaction that gets
                from what OVSDB holds to that
  sync.py       the event source the agent's loop drives: connect, `monitor`, `transact`,
                reconnect with backoff, status
  access.py     may the agent's user connect to the OVSDB socket, and how to let it
  check.py      what `hsagent check` says about ovs { }
"""
