#!/usr/bin/env bash
# A private Open vSwitch (ovsdb-server + ovs-vswitchd, userspace datapath) inside a network namespace.
#   ovs.sh start NETNS DIR      create DIR/conf.db, start both daemons; prints unix:DIR/db.sock
#   ovs.sh start-db NETNS DIR   start ovsdb-server again on the existing DIR/conf.db (a restart)
#   ovs.sh stop-db DIR          stop ovsdb-server only
#   ovs.sh stop DIR             stop both
# Every file OVS uses (db, sockets, pidfiles, logs, bridge management sockets) is in DIR;
# nothing under /run/openvswitch, /var/log or /etc is touched, and no system OVS is used. The
# namespace must exist. Bridges need `datapath_type=netdev` (no kernel module here):
#   OVS_RUNDIR=DIR ovs-vsctl --db=unix:DIR/db.sock add-br br0 -- set bridge br0 datapath_type=netdev
# Measured: vswitchd logs "Generic Netlink family 'ovs_datapath' does not exist" (harmless); the
# userspace datapath reads veths through AF_PACKET and drops unpaced bursts (keep test traffic
# under ~1,000 packets/s); TCP over veth may fail on checksum offload, so test with UDP/ICMP.
# Needs root; installs openvswitch-switch if missing, without starting its services.
set -euo pipefail

install_ovs() {
  command -v ovs-vswitchd >/dev/null 2>&1 && return
  export DEBIAN_FRONTEND=noninteractive
  local made_policy=
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod 755 /usr/sbin/policy-rc.d && made_policy=1
  fi
  apt-get update -qq >/dev/null
  apt-get install -y -qq openvswitch-switch >/dev/null
  if [ -n "$made_policy" ]; then rm -f /usr/sbin/policy-rc.d; fi
}

start_db() {  # NETNS DIR
  ip netns exec "$1" ovsdb-server "$2/conf.db" --remote="punix:$2/db.sock" \
    --pidfile="$2/ovsdb.pid" --unixctl="$2/ovsdb.ctl" --log-file="$2/ovsdb.log" --detach --no-chdir
}

stop_pid() {  # PIDFILE: TERM, then wait up to 5 s for the process to go
  local pid
  pid=$(cat "$1" 2>/dev/null) || return 0
  kill "$pid" 2>/dev/null || return 0
  for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.1; done
  kill -9 "$pid" 2>/dev/null || true
}

cmd=$1; shift
case $cmd in
  start)
    ns=$1 dir=$(mkdir -p "$2" && readlink -f "$2")
    install_ovs
    export OVS_RUNDIR=$dir OVS_LOGDIR=$dir OVS_DBDIR=$dir OVS_SYSCONFDIR=$dir
    rm -f "$dir/conf.db"
    ovsdb-tool create "$dir/conf.db" /usr/share/openvswitch/vswitch.ovsschema
    start_db "$ns" "$dir"
    ovs-vsctl --db="unix:$dir/db.sock" --timeout=10 --no-wait init
    ip netns exec "$ns" ovs-vswitchd "unix:$dir/db.sock" --pidfile="$dir/vsd.pid" \
      --unixctl="$dir/vsd.ctl" --log-file="$dir/vsd.log" --detach --no-chdir 2>/dev/null
    echo "unix:$dir/db.sock" ;;
  start-db)
    dir=$(readlink -f "$2")
    OVS_RUNDIR=$dir start_db "$1" "$dir" ;;
  stop-db)
    stop_pid "$1/ovsdb.pid" ;;
  stop)
    stop_pid "$1/vsd.pid"
    stop_pid "$1/ovsdb.pid" ;;
  *)
    echo "usage: $0 start|start-db NETNS DIR | stop|stop-db DIR" >&2; exit 2 ;;
esac
