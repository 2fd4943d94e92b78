"""Which hosts and addresses an outbound request may reach.

Decided on the addresses a name resolves to (never on how the URL spells the host), so
`localhost`, `127.1`, `2130706433`, `0x7f.1`, `[::ffff:127.0.0.1]` and a DNS name pointing at a
private address are all judged as what they are. The operator's allow-list opens a host (by
name, `*.suffix`, address or network) for one purpose.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from outbound.errors import Refused

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

_NAT64 = ipaddress.ip_network("64:ff9b::/96")
# Special-purpose space (IANA registries), listed so the rule does not depend on the Python
# version's idea of `is_global`.
SPECIAL = tuple(
    ipaddress.ip_network(n)
    for n in (
        "0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16",
        "172.16.0.0/12", "192.0.0.0/24", "192.0.2.0/24", "192.88.99.0/24", "192.168.0.0/16",
        "198.18.0.0/15", "198.51.100.0/24", "203.0.113.0/24", "224.0.0.0/4", "240.0.0.0/4",
        "::/128", "::1/128", "64:ff9b:1::/48", "100::/64", "2001::/23", "2001:db8::/32",
        "fc00::/7", "fe80::/10", "fec0::/10", "ff00::/8",
    )
)  # fmt: skip


def embedded_ipv4(address: IPAddress) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address carries (mapped, 6to4, Teredo, NAT64), if any."""
    if not isinstance(address, ipaddress.IPv6Address):
        return None
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address.teredo is not None:
        return address.teredo[1]
    if address in _NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def is_public(address: IPAddress) -> bool:
    """A globally routable unicast address: not loopback, link-local (cloud metadata),
    private, shared, unspecified, multicast, reserved or documentation space."""
    inner = embedded_ipv4(address)
    if inner is not None and not is_public(inner):
        return False
    if any(address in net for net in SPECIAL if net.version == address.version):
        return False
    return address.is_global and not address.is_multicast


def parse_address(text: str) -> IPAddress:
    """An address from a resolver answer (IPv6 zone ids such as `%eth0` dropped)."""
    return ipaddress.ip_address(text.split("%", 1)[0])


def from_addrinfo(infos: Iterable[tuple[Any, ...]]) -> list[IPAddress]:
    """The distinct addresses of a `getaddrinfo` answer, in its order."""
    out: list[IPAddress] = []
    for info in infos:
        address = parse_address(str(info[4][0]))
        if address not in out:
            out.append(address)
    return out


@dataclass(frozen=True, slots=True)
class HostList:
    """Allow-list entries: `name`, `*.suffix`, an address, a network (CIDR) or `*` (any)."""

    names: frozenset[str] = frozenset()
    suffixes: tuple[str, ...] = ()
    networks: tuple[IPNetwork, ...] = ()
    anything: bool = False

    @classmethod
    def parse(cls, entries: Iterable[str]) -> HostList:
        names: set[str] = set()
        suffixes: list[str] = []
        networks: list[IPNetwork] = []
        anything = False
        for raw in entries:
            entry = raw.strip().lower().rstrip(".")
            if entry.startswith("[") and entry.endswith("]"):
                entry = entry[1:-1]
            if not entry:
                continue
            if entry == "*":
                anything = True
            elif entry.startswith("*."):
                suffixes.append(entry[1:])
            else:
                try:
                    networks.append(ipaddress.ip_network(entry, strict=False))
                except ValueError:
                    names.add(entry)
        return cls(frozenset(names), tuple(suffixes), tuple(networks), anything)

    @classmethod
    def from_text(cls, text: str) -> HostList:
        """Comma- or space-separated entries (the form of an `INTEROP_OUTBOUND_ALLOW_*`)."""
        return cls.parse(text.replace(",", " ").split())

    def __or__(self, other: HostList) -> HostList:
        return HostList(
            self.names | other.names,
            self.suffixes + other.suffixes,
            self.networks + other.networks,
            self.anything or other.anything,
        )

    def has_name(self, host: str) -> bool:
        host = host.lower().rstrip(".")
        return self.anything or host in self.names or host.endswith(self.suffixes)

    def has_address(self, address: IPAddress) -> bool:
        return self.anything or any(address in net for net in self.networks if
                                    net.version == address.version)  # fmt: skip

    def __bool__(self) -> bool:
        return self.anything or bool(self.names or self.suffixes or self.networks)


def judge(host: str, addresses: Sequence[IPAddress], allow: HostList, listed_only: bool) -> None:
    """Raise `Refused` unless `host` (resolved to `addresses`) may be contacted.

    An allow-listed name, or addresses that are all allow-listed, may be anything (an operator
    opened them). Otherwise every address must be public, and with `listed_only` nothing else
    is allowed at all.
    """
    if not addresses:
        raise Refused(f"{host} did not resolve to any address")
    if allow.has_name(host) or all(allow.has_address(a) for a in addresses):
        return
    if listed_only:
        raise Refused(f"{host} is not on this server's allow-list for this purpose")
    for address in addresses:
        if not is_public(address):
            raise Refused(
                f"{host} resolves to {address}, a non-public address "
                "(loopback, private, link-local or reserved) that is not on the allow-list"
            )
