"""Whose address a request comes from: the TCP peer, or behind proxies the operator trusts,
the address the nearest untrusted hop connected from.

    proxies = TrustedProxies.parse("10.0.0.0/8")
    proxies.client("10.1.2.3", ["198.51.100.9, 203.0.113.5"])   # -> "203.0.113.5"

A proxy appends the address it received the request from to `X-Forwarded-For`; everything
left of what trusted proxies wrote is whatever the client sent. So only when the peer is a
trusted proxy is the header read, right to left, and the first address that is not a
trusted proxy is the client (an entry that is no address ends the walk at the last trusted
hop). `Forwarded` and `X-Real-IP` are never read. With no trusted proxies (the default)
every header is ignored and the peer is the client.

On a Hugging Face Space the app is reached only through Spaces' own proxy, which connects
from the Space's private network and passes the visitor's address in `X-Forwarded-For`
(`request.client.host` is a 10.x address there); whether it appends to a header the visitor
sent or replaces it is not documented. `SPACE_PROXIES` trusts private, shared, loopback and
link-local networks, so the rightmost public address is taken: the one Spaces' proxy wrote
in either case, never one the visitor chose.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from typing import Any

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

SPACE_PROXIES = ("10.0.0.0/8, 172.16.0.0/12, 192.168.0.0/16, 100.64.0.0/10, 127.0.0.0/8, "
                 "169.254.0.0/16, ::1/128, fc00::/7, fe80::/10")  # a Space's own network
MAX_ADDRESS_CHARS = 64  # an address from a header is cut to this (it is logged and counted)


def parse_address(text: str) -> Address | None:
    """The IP address in a header entry or a peer (`198.51.100.9`, `198.51.100.9:4711`,
    `2001:db8::1`, `[2001:db8::1]:4711`; an IPv4-mapped IPv6 address as IPv4), else None."""
    text = text.strip()
    if text.startswith("["):
        text = text[1:].partition("]")[0]
    elif text.count(":") == 1:
        text = text.partition(":")[0]
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        return address.ipv4_mapped
    return address


class TrustedProxies:
    """The proxies whose `X-Forwarded-For` is believed (see the module doc)."""

    def __init__(self, networks: Iterable[Network] = ()):
        self.networks = tuple(networks)

    @classmethod
    def parse(cls, text: str) -> TrustedProxies:
        """Addresses and networks separated by commas or spaces (`10.0.0.0/8, 192.0.2.7`);
        an empty text trusts no proxy. Raises ValueError naming an entry that is neither."""
        networks = []
        for entry in text.replace(",", " ").split():
            try:
                networks.append(ipaddress.ip_network(entry, strict=False))
            except ValueError:
                raise ValueError(f"Trusted proxy {entry!r} is not an IP address or network; "
                                 "give addresses or networks such as 192.0.2.7 or "
                                 "10.0.0.0/8, separated by commas.") from None
        return cls(networks)

    def trusts(self, address: Address | None) -> bool:
        """Whether `address` is one of the trusted proxies."""
        return address is not None and any(address in n for n in self.networks)

    def address(self, request: Any) -> str:
        """The client's address of a request (Starlette's or Gradio's: anything with
        `.client` and `.headers`), its `X-Forwarded-For` believed as far as `client` says."""
        peer = request.client.host if request.client else ""
        return self.client(peer, request.headers.getlist("x-forwarded-for"))

    def client(self, peer: str, forwarded_for: Iterable[str] = ()) -> str:
        """The client's address for a request from `peer` (the TCP peer) carrying these
        `X-Forwarded-For` header values (in the order received)."""
        hop = parse_address(peer)
        if not self.trusts(hop):
            return str(hop) if hop is not None else peer[:MAX_ADDRESS_CHARS]
        entries = ",".join(forwarded_for).split(",")
        for entry in reversed(entries):
            address = parse_address(entry)
            if not self.trusts(address):
                return str(address) if address is not None else str(hop)
            hop = address
        return str(hop)  # every hop is a trusted proxy: the furthest one
