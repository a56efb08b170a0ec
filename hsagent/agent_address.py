"""The agent address: the IP that identifies this agent in every datagram header.

Order of preference, from the settings down:
  1. `agent_ip` (DNS-SD agentIP / config agentIP): used as given;
  2. `agent` (a device name): that device's global addresses;
  3. `agent_cidr`: a local address inside that prefix;
  4. automatic: a global address on a device that carries a default route;
  5. any global address; then link-local, then loopback.
Within one level IPv4 beats IPv6 and, among IPv6, global beats unique-local (fc00::/7); ties go
to the address the kernel lists first. A setting that matches nothing falls through to the next
level rather than leaving the agent without an address.

hsflowd elects the same way by priority classes (IPv4 > global IPv6 > unique-local > VLAN >
link-local > self-assigned > loopback), lets `agent` and `agent.cidr` boost a device or prefix,
and breaks ties by the lower ifIndex; with nothing else it ends up on 127.0.0.1, the address of
`lo`. It does not look at routes; we add the default-route step because on a host with several
networks it names the address collectors most likely see. With no address at all (a bare
namespace) we also fall back to 127.0.0.1, with a warning, so datagrams can still be built.

The choice is sticky: the current address is kept while it is still present and still ranks
as high as the best candidate, so an agent does not hop between equally good addresses.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
from typing import Iterable, NamedTuple

from . import netlink

log = logging.getLogger(__name__)

RT_SCOPE_UNIVERSE, RT_SCOPE_LINK, RT_SCOPE_HOST = 0, 253, 254
# Addresses not usable as a source yet or any more.
IFA_F_DADFAILED, IFA_F_DEPRECATED, IFA_F_TENTATIVE = 0x08, 0x20, 0x40
UNUSABLE_FLAGS = IFA_F_DADFAILED | IFA_F_DEPRECATED | IFA_F_TENTATIVE
FALLBACK = ("127.0.0.1", None)

UNIQUE_LOCAL = ipaddress.ip_network("fc00::/7")


class Candidate(NamedTuple):
    """One local address as the kernel lists it."""

    device: str
    address: str  # canonical text
    scope: int  # RT_SCOPE_*
    default_route: bool  # `device` carries a default route (either family)


# --- pure ----------------------------------------------------------------------------------

def address_class(candidate: Candidate) -> int:
    """How good an address is on its own: higher is better."""
    ip = ipaddress.ip_address(candidate.address)
    if ip.is_loopback or candidate.scope == RT_SCOPE_HOST:
        return 1 if ip.version == 4 else 0
    if candidate.scope == RT_SCOPE_LINK or ip.is_link_local:
        return 3 if ip.version == 4 else 2
    if ip.version == 4:
        return 6
    return 4 if ip in UNIQUE_LOCAL else 5


def is_global(candidate: Candidate) -> bool:
    return address_class(candidate) >= 4


def rank(candidate: Candidate, settings) -> tuple:
    """Sort key: settings first (device, then prefix), then default route, then the address."""
    usable = is_global(candidate)
    in_prefix = (settings.agent_cidr is not None and ipaddress.ip_address(candidate.address)
                 in ipaddress.ip_network(settings.agent_cidr, strict=False))
    return (usable and candidate.device == settings.agent,
            in_prefix,
            usable and candidate.default_route,
            address_class(candidate))


def select(candidates: Iterable[Candidate], settings,
           current: str | None = None) -> tuple[str, str | None] | None:
    """(address, device) for these settings, keeping `current` if it is still among the best.

    None when there is no candidate at all (and no agent_ip).
    """
    candidates = list(candidates)
    if settings.agent_ip:
        device = next((c.device for c in candidates if c.address == settings.agent_ip), None)
        return settings.agent_ip, device
    if not candidates:
        return None
    # max() keeps the first of equal keys: the kernel's order breaks ties.
    best = max(candidates, key=lambda c: rank(c, settings))
    best_rank = rank(best, settings)
    for c in candidates:
        if c.address == current and rank(c, settings) == best_rank:
            return c.address, c.device
    return best.address, best.device


# --- I/O -----------------------------------------------------------------------------------

def local_candidates() -> list[Candidate]:
    """Every usable local address, from one address dump and one default-route dump per family."""
    names = dict(socket.if_nameindex())
    dumper = netlink.Dumper()
    try:
        addresses = list(dumper.addresses())
        routed = dumper.default_route_devices()
    finally:
        dumper.close()
    return [Candidate(names[a.index], str(ipaddress.ip_address(a.address)), a.scope, a.index in routed)
            for a in addresses if not a.flags & UNUSABLE_FLAGS and a.index in names]


def choose(settings, current: str | None = None) -> tuple[str, str | None]:
    """(agent address, its device or None) for these settings, sticky to `current`."""
    chosen = select(local_candidates(), settings, current)
    if chosen is None:
        log.warning("no local address at all: using %s as the agent address", FALLBACK[0])
        return FALLBACK
    return chosen
