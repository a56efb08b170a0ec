"""Command line: argument parsing and sub-commands; the work is done elsewhere."""

from __future__ import annotations

import argparse
import sys

from . import __version__
from .settings import DEFAULT_AUTO_FILE, DEFAULT_CONFIG_FILE


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="hsagent", description="Host sFlow agent (sFlow v5).")
    p.add_argument("--version", action="version", version=f"hsagent {__version__}")
    p.add_argument("-c", "--config", default=DEFAULT_CONFIG_FILE, metavar="FILE",
                   help=f"configuration file (default {DEFAULT_CONFIG_FILE})")
    p.add_argument("-d", "--debug", action="count", default=0,
                   help="more logging; repeat for more (-dd)")
    p.add_argument("-f", "--foreground", action="store_true", help="do not daemonise")
    p.add_argument("--once", action="store_true",
                   help="poll every data source once, send, and exit")
    p.add_argument("--print", dest="print_datagrams", action="store_true",
                   help="run in the foreground and print every datagram sent, as `hsagent decode` would")
    p.add_argument("--pidfile", metavar="FILE", help="write the daemon's pid here")
    p.add_argument("--auto-file", default=DEFAULT_AUTO_FILE, metavar="FILE",
                   help=f"where to write the settings in force (default {DEFAULT_AUTO_FILE})")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    check = sub.add_parser("check", help="validate the configuration and print the settings in force")
    check.add_argument("-c", "--config", dest="sub_config", metavar="FILE")

    decode = sub.add_parser("decode", help="decode sFlow datagrams from UDP or a pcap file")
    source = decode.add_mutually_exclusive_group()
    source.add_argument("--port", type=int, default=6343, help="UDP port to listen on (default 6343)")
    source.add_argument("--pcap", metavar="FILE", help="read datagrams from a classic pcap file")
    decode.add_argument("--bind", default="::", metavar="ADDR",
                        help="address to listen on (default all, IPv4 and IPv6)")
    decode.add_argument("--json", action="store_true", help="one JSON object per datagram")
    decode.add_argument("--count", type=int, metavar="N", help="stop after N datagrams")
    return p


def _load(path: str):
    """Settings from the config file; a bad file is reported on stderr and exits 2."""
    from .config import conffile

    try:
        settings, warnings = conffile.load(path)
    except conffile.ConfigError as err:
        print(f"hsagent: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    for warning in warnings:
        print(f"hsagent: warning: {warning}", file=sys.stderr)
    return settings


def _check(args) -> int:
    from .settings_report import report

    settings = _load(args.sub_config or args.config)
    print(report(settings))
    return 0


def _print_datagram(data: bytes) -> None:
    from .sflow.datagram import decode_datagram
    from .sflow.text import datagram_lines

    print("\n".join(datagram_lines(decode_datagram(data), len(data))), flush=True)


def _run(args) -> int:
    from . import daemon, logs
    from .agent import Agent
    from .config import conffile

    settings = _load(args.config)  # a bad file is reported before detaching
    foreground = args.foreground or args.print_datagrams or args.once
    logs.setup(args.debug, syslog=not foreground)
    if not foreground:
        daemon.daemonize(args.pidfile)  # before any thread or socket exists
    elif args.pidfile:
        daemon.write_pidfile(args.pidfile)
    agent = Agent(settings, reload_config=lambda: conffile.load(args.config)[0],
                  on_datagram=_print_datagram if args.print_datagrams else None,
                  auto_file=args.auto_file)
    try:
        agent.apply(settings)
        if args.once:
            agent.run_once()
            return 0
        daemon.notify("READY=1")
        agent.run()
    finally:
        agent.close()
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "decode":
        from . import decode

        return decode.main(args)
    if args.command == "check":
        return _check(args)
    return _run(args)


if __name__ == "__main__":
    sys.exit(main())
