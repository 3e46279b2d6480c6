"""One policy for every request to a URL a user gave us: LLM configurations today, webhooks and MCP servers next.

An organization admin chooses a `base_url`; the worker then sends requests there. Unchecked, that
lets them reach the service's own network: loopback ports, private ranges, the cloud metadata
service at 169.254.169.254. So, by default, such a URL may only lead to public addresses:

- only `http` and `https`, and no credentials in the URL;
- refused: loopback, private (RFC 1918, fc00::/7), link-local (169.254/16, fe80::/10), shared
  100.64/10, unspecified, multicast, reserved and documentation ranges, any IPv6 outside 2000::/3,
  the IPv4 inside IPv6 forms of these (mapped, compatible, NAT64, 6to4), `localhost` and the
  well-known metadata host names. IPv4 is read as the C resolver reads it, so `0x7f000001`,
  `2130706433` and `0177.1` are 127.0.0.1;
- a host name is resolved once per connection and every address it gives must pass; the connection
  then goes to a checked address, never through a second lookup (DNS rebinding), while the Host
  header and the TLS server name stay the host name;
- `AGENTMEM_OUTBOUND_ALLOW` lists exceptions: networks or addresses (`10.0.0.0/8`, `127.0.0.1`)
  and host names, each optionally on one port (`127.0.0.1:11434`, `[::1]:8080`, `llm.lan:8000`).

`check_url` applies the policy when a URL is stored (a clear 422 instead of a job failing later);
`guarded_client` is the `httpx` client every request to such a URL goes through (no redirects, no
proxies or .netrc from the environment). A refusal is `URLNotAllowed` (422 `url_not_allowed`, a
permanent job failure).
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import re
import socket
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

import httpcore
import httpx

from core.errors import InvalidInput, URLNotAllowed, URLUnresolvable
from core.settings import get_settings

__all__ = ["Allowance", "GuardedBackend", "OutboundPolicy", "address_rule", "check_url", "current_policy",
           "guarded_client", "guarded_transport", "literal_address", "parse_allow", "resolve"]

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Resolver = Callable[[str, int], Awaitable[list[Address]]]

DEFAULT_PORTS = {"http": 80, "https": 443}
RESOLVE_SECONDS = 10.0
# As the openai package's own client: the provider semaphore, not the pool, bounds calls in flight.
LIMITS = httpx.Limits(max_connections=1000, max_keepalive_connections=100)

# What a refusal says about each rule: which kind of address, never what (if anything) answers there.
RULES = {
    "loopback": "a loopback address",
    "private": "a private address",
    "link_local": "a link-local address (where cloud metadata services answer)",
    "shared": "a shared (carrier-grade NAT) address",
    "unspecified": "an unspecified address",
    "multicast": "a multicast address",
    "reserved": "a reserved or documentation address",
    "metadata": "a cloud metadata service",
}

_V4_RULES = [(ipaddress.IPv4Network(net), rule) for net, rule in (
    ("0.0.0.0/8", "unspecified"), ("10.0.0.0/8", "private"), ("100.64.0.0/10", "shared"),
    ("127.0.0.0/8", "loopback"), ("169.254.0.0/16", "link_local"), ("172.16.0.0/12", "private"),
    ("192.0.0.0/24", "reserved"), ("192.0.2.0/24", "reserved"), ("192.88.99.0/24", "reserved"),
    ("192.168.0.0/16", "private"), ("198.18.0.0/15", "reserved"), ("198.51.100.0/24", "reserved"),
    ("203.0.113.0/24", "reserved"), ("224.0.0.0/4", "multicast"), ("240.0.0.0/4", "reserved"))]
_V6_RULES = [(ipaddress.IPv6Network(net), rule) for net, rule in (
    ("::/128", "unspecified"), ("::1/128", "loopback"), ("64:ff9b:1::/48", "private"), ("100::/64", "reserved"),
    ("2001::/23", "reserved"), ("2001:db8::/32", "reserved"), ("3fff::/20", "reserved"), ("fc00::/7", "private"),
    ("fe80::/10", "link_local"), ("fec0::/10", "private"), ("ff00::/8", "multicast"))]
_V6_GLOBAL_UNICAST = ipaddress.IPv6Network("2000::/3")
_V6_COMPATIBLE = ipaddress.IPv6Network("::/96")
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")

METADATA_NAMES = frozenset({"metadata", "metadata.google.internal", "metadata.goog", "instance-data",
                            "instance-data.ec2.internal"})
# The forms the C resolver's inet_aton reads as IPv4: 1 to 4 parts, each decimal, octal (0…) or hex (0x…).
_IPV4_FORM = re.compile(r"(0x[0-9a-f]*|[0-9]+)(\.(0x[0-9a-f]*|[0-9]+)){0,3}", re.IGNORECASE)
_HOST_NAME = re.compile(r"(?!-)[a-z0-9_-]{1,63}(?<!-)(\.(?!-)[a-z0-9_-]{1,63}(?<!-))*")


def literal_address(host: str) -> Address | None:
    """The address a host written as an IP literal stands for (every IPv4 form the C resolver reads), else None."""
    host = unquote(host).strip("[]")
    if ":" in host:
        try:
            return ipaddress.ip_address(host)
        except ValueError:
            return None
    if _IPV4_FORM.fullmatch(host):
        try:
            return ipaddress.IPv4Address(socket.inet_aton(host))
        except OSError:
            return None
    return None


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip in _NAT64 or ip in _V6_COMPATIBLE:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def address_rule(ip: Address) -> str | None:
    """The rule that refuses `ip` (a key of RULES), or None for a public address."""
    if isinstance(ip, ipaddress.IPv4Address):
        return next((rule for net, rule in _V4_RULES if ip in net), None)
    ip = ipaddress.IPv6Address(int(ip))  # without a %scope
    rule = next((rule for net, rule in _V6_RULES if ip in net), None)
    if rule is not None:
        return rule
    embedded = _embedded_ipv4(ip)
    if embedded is not None:
        return address_rule(embedded)
    return None if ip in _V6_GLOBAL_UNICAST else "reserved"


def _name_rule(name: str) -> str | None:
    if name == "localhost" or name.endswith(".localhost"):
        return "loopback"
    return "metadata" if name in METADATA_NAMES else None


def _normal_name(host: str) -> str:
    return unquote(host).strip("[]").lower().rstrip(".")


@dataclass(frozen=True)
class Allowance:
    """One exception of AGENTMEM_OUTBOUND_ALLOW: a network or a host name, on one port or on all."""

    network: Network | None = None
    host: str | None = None
    port: int | None = None

    def admits_name(self, name: str, port: int) -> bool:
        """Whether this entry names the host (then whatever it resolves to is allowed)."""
        return self.host is not None and self.host == name and self.port in (None, port)

    def admits_address(self, ip: Address, port: int) -> bool:
        """Whether `ip` (or the IPv4 address it carries) is in this entry's network, on its port."""
        if self.network is None or self.port not in (None, port):
            return False
        forms = [ip]
        if isinstance(ip, ipaddress.IPv6Address):
            ip = ipaddress.IPv6Address(int(ip))
            forms = [ip, *filter(None, [_embedded_ipv4(ip)])]
        return any(form.version == self.network.version and form in self.network for form in forms)


def _port(text: str, entry: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise ValueError(f"AGENTMEM_OUTBOUND_ALLOW: {entry!r} has no valid port")
    return int(text)


def _parse_entry(entry: str) -> Allowance:
    host, port = entry, None
    if entry.startswith("["):  # [IPv6] or [IPv6]:port
        host, _, rest = entry[1:].partition("]")
        if rest:
            port = _port(rest[1:] if rest.startswith(":") else "", entry)
    elif entry.count(":") == 1:  # IPv4, network or name, with a port; more colons: a bare IPv6 address
        host, port_text = entry.split(":")
        port = _port(port_text, entry)
    try:
        return Allowance(network=ipaddress.ip_network(host, strict=False), port=port)
    except ValueError:
        pass
    name = _normal_name(host)
    if not _HOST_NAME.fullmatch(name) or _IPV4_FORM.fullmatch(name):
        raise ValueError(f"AGENTMEM_OUTBOUND_ALLOW: {entry!r} is not an address, a network (CIDR) or a host name")
    return Allowance(host=name, port=port)


def parse_allow(text: str | None) -> tuple[Allowance, ...]:
    """The entries of AGENTMEM_OUTBOUND_ALLOW (separated by commas or spaces); ValueError names a bad one."""
    return tuple(_parse_entry(entry) for entry in re.split(r"[,\s]+", text or "") if entry)


async def resolve(host: str, port: int) -> list[Address]:
    """The host's addresses as the system resolver gives them, each once, in its order."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    found: list[Address] = []
    for family, _type, _proto, _name, sockaddr in infos:
        if family in (socket.AF_INET, socket.AF_INET6):
            ip = ipaddress.ip_address(sockaddr[0])
            if ip not in found:
                found.append(ip)
    return found


def _refused(host: str, rule: str, *, resolved: bool) -> URLNotAllowed:
    # A host name's addresses are not named: an admin learns which rule refused it, not the internal address.
    what = f"{host} resolves to {RULES[rule]}" if resolved else f"{host} is {RULES[rule]}"
    return URLNotAllowed(f"this URL is not allowed: {what}; requests to internal addresses are refused "
                         "(an operator can allow some with AGENTMEM_OUTBOUND_ALLOW)",
                         details={"host": host, "rule": rule})


@dataclass(frozen=True)
class OutboundPolicy:
    """Which addresses requests to user-supplied URLs may reach; `resolver` defaults to `resolve`."""

    allow: tuple[Allowance, ...] = ()
    resolver: Resolver | None = None

    def rule_for(self, ip: Address, port: int) -> str | None:
        """The rule refusing a connection to `ip` on `port`, or None when it is allowed."""
        rule = address_rule(ip)
        if rule is None or any(entry.admits_address(ip, port) for entry in self.allow):
            return None
        return rule

    async def addresses(self, host: str, port: int, *, timeout: float = RESOLVE_SECONDS) -> list[Address]:
        """Resolve `host` once and return its addresses if the policy admits every one of them.

        URLNotAllowed when one is refused; URLUnresolvable when the host has no address; TimeoutError.
        """
        name = _normal_name(host)
        literal = literal_address(name)
        if literal is not None:
            rule = self.rule_for(literal, port)
            if rule is not None:
                raise _refused(name, rule, resolved=False)
            return [literal]
        named = any(entry.admits_name(name, port) for entry in self.allow)
        rule = None if named else _name_rule(name)
        if rule is not None:
            raise _refused(name, rule, resolved=False)
        try:
            async with asyncio.timeout(timeout):
                found = await (self.resolver or resolve)(name, port)
        except TimeoutError:  # an OSError too, but not an answer
            raise
        except (OSError, UnicodeError) as exc:  # socket.gaierror and kin; IDNA errors
            raise URLUnresolvable(f"the host name {name} does not resolve", details={"host": name}) from exc
        if not found:
            raise URLUnresolvable(f"the host name {name} does not resolve", details={"host": name})
        if not named:
            for ip in found:
                rule = self.rule_for(ip, port)
                if rule is not None:
                    raise _refused(name, rule, resolved=True)
        return found


@functools.lru_cache(maxsize=8)
def _policy_for(allow: str | None) -> OutboundPolicy:
    return OutboundPolicy(allow=parse_allow(allow))


def current_policy() -> OutboundPolicy:
    """The policy of the process's settings (AGENTMEM_OUTBOUND_ALLOW)."""
    return _policy_for(get_settings().outbound_allow)


def target_of(url: str) -> tuple[str, int]:
    """(host, port) a URL leads to; URLNotAllowed for a scheme other than http(s) or credentials in it."""
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError) as exc:
        raise InvalidInput(f"not a valid URL: {exc}") from exc
    if parsed.scheme not in DEFAULT_PORTS:
        raise URLNotAllowed("this URL is not allowed: only http:// and https:// URLs are", details={"rule": "scheme"})
    if parsed.userinfo:
        raise URLNotAllowed("this URL is not allowed: it carries credentials (user:password@); give them another way",
                            details={"rule": "credentials"})
    host, port = parsed.raw_host.decode("ascii"), parsed.port or DEFAULT_PORTS[parsed.scheme]
    if not host or not 0 < port < 65536:
        raise InvalidInput("not a valid URL: it needs a host, and a port from 1 to 65535")
    return host, port


async def check_url(url: str, *, policy: OutboundPolicy | None = None) -> None:
    """Refuse a URL before it is stored if the policy refuses where it leads now (its host resolved once).

    A host that does not resolve is `url_unresolvable`: a typo is better told now than by a failed job.
    Passing here is no promise: every connection is checked again when it is made.
    """
    host, port = target_of(url)
    try:
        await (policy or current_policy()).addresses(host, port, timeout=RESOLVE_SECONDS)
    except TimeoutError as exc:
        raise URLUnresolvable(f"the host name {host} did not resolve within {RESOLVE_SECONDS:g} s",
                              details={"host": host}) from exc


async def connect_checked(core: Any, policy: OutboundPolicy, inner: Any, host: str, port: int, timeout: float | None,
                          local_address: str | None, socket_options: Iterable | None) -> Any:
    """Resolve `host` once through `policy`, then connect `inner` (a network backend) to the first reachable
    admitted address. `core` is the httpcore module the caller's client uses (httpcore, or httpcore2 for the
    MCP SDK's httpx2): its connection errors are the ones raised."""
    deadline = None if timeout is None else time.monotonic() + timeout
    try:
        addresses = await policy.addresses(host, port, timeout=RESOLVE_SECONDS if timeout is None else timeout)
    except URLUnresolvable as exc:
        raise core.ConnectError(exc.message) from exc
    except TimeoutError as exc:
        raise core.ConnectTimeout(f"resolving {host} timed out") from exc
    failure: Exception = core.ConnectTimeout(f"connecting to {host} timed out")
    for address in addresses:
        remaining = None if deadline is None else deadline - time.monotonic()
        if remaining is not None and remaining <= 0:
            break
        try:
            return await inner.connect_tcp(str(address), port, timeout=remaining, local_address=local_address,
                                           socket_options=socket_options)
        except (core.ConnectError, core.ConnectTimeout) as exc:
            failure = exc
    raise failure


class GuardedBackend(httpcore.AsyncNetworkBackend):
    """An httpcore network backend that resolves each host once, checks it, and connects to a checked address.

    httpcore hands it the URL's host and does TLS itself afterwards with that host as server name, so
    only the TCP connection goes to the address.
    """

    def __init__(self, policy: OutboundPolicy | None = None, inner: httpcore.AsyncNetworkBackend | None = None) -> None:
        self._policy = policy
        self._inner = inner or httpcore.AnyIOBackend()

    async def connect_tcp(self, host: str, port: int, timeout: float | None = None, local_address: str | None = None,
                          socket_options: Iterable | None = None) -> httpcore.AsyncNetworkStream:
        """Connect to the first reachable address of `host`, all of which the policy admits."""
        return await connect_checked(httpcore, self._policy or current_policy(), self._inner, host, port, timeout,
                                     local_address, socket_options)

    async def connect_unix_socket(self, path: str, timeout: float | None = None,
                                  socket_options: Iterable | None = None) -> httpcore.AsyncNetworkStream:
        """Never: a user-supplied URL does not reach a local socket."""
        raise httpcore.ConnectError("unix sockets are not reachable through the outbound policy")

    async def sleep(self, seconds: float) -> None:
        """As the inner backend sleeps."""
        await self._inner.sleep(seconds)


class GuardedTransport(httpx.AsyncHTTPTransport):
    """httpx's own transport, its connection pool connecting through a GuardedBackend."""

    def __init__(self, policy: OutboundPolicy | None = None, *,
                 network_backend: httpcore.AsyncNetworkBackend | None = None) -> None:
        super().__init__(limits=LIMITS, trust_env=False)
        # httpx takes no network backend: replace the pool it built with the same pool over ours.
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=httpx.create_ssl_context(), max_connections=LIMITS.max_connections,
            max_keepalive_connections=LIMITS.max_keepalive_connections, keepalive_expiry=LIMITS.keepalive_expiry,
            network_backend=GuardedBackend(policy, network_backend))


def guarded_transport(policy: OutboundPolicy | None = None, *,
                      network_backend: httpcore.AsyncNetworkBackend | None = None) -> httpx.AsyncHTTPTransport:
    """A transport whose every connection passes the policy (`policy` None: the settings' at each connection)."""
    return GuardedTransport(policy, network_backend=network_backend)


def guarded_client(*, timeout: float | httpx.Timeout = 60.0, policy: OutboundPolicy | None = None,
                   network_backend: httpcore.AsyncNetworkBackend | None = None) -> httpx.AsyncClient:
    """The HTTP client for user-supplied URLs: the policy on every connection, no redirects, nothing from the
    environment (proxies would resolve the host themselves, .netrc would add credentials)."""
    return httpx.AsyncClient(transport=guarded_transport(policy, network_backend=network_backend),
                             follow_redirects=False, trust_env=False, timeout=timeout)
