"""core/outbound.py: which URLs users may point the service at, and that connections go where the check said.

No sockets: host names resolve through a stub resolver, and connections are made on a fake network
that records where they go and answers with canned HTTP responses.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket

import httpcore
import pytest
from pydantic import ValidationError

from core import outbound
from core.errors import InvalidInput, PermanentJobError, URLNotAllowed, URLUnresolvable
from core.outbound import OutboundPolicy, check_url, guarded_client, literal_address, parse_allow
from core.settings import Settings

PUBLIC = "93.184.216.34"


class Resolver:
    """Answers per host name: a list of addresses, an exception, or a list of those answers taken in turn."""

    def __init__(self, answers: dict[str, list]) -> None:
        self.answers = answers
        self.calls: list[str] = []

    async def __call__(self, host: str, port: int) -> list:
        self.calls.append(host)
        answer = self.answers.get(host, socket.gaierror(socket.EAI_NONAME, "Name or service not known"))
        if isinstance(answer, list) and answer and isinstance(answer[0], list):
            answer = answer.pop(0) if len(answer) > 1 else answer[0]
        if isinstance(answer, BaseException):
            raise answer
        return [ipaddress.ip_address(a) for a in answer]


NAMES = {"public.example": [PUBLIC, "2606:2800:220:1::1"], "internal.example": ["10.1.2.3"],
         "mixed.example": [PUBLIC, "192.168.0.7"], "ula.example": ["fd12::1"], "mapped.example": ["::ffff:10.0.0.1"],
         "nat64.example": ["64:ff9b::5db8:d822"], "llm.lan": ["192.168.1.5"], "localhost": ["127.0.0.1"]}


def policy(allow: str | None = None, names: dict | None = None) -> OutboundPolicy:
    return OutboundPolicy(allow=parse_allow(allow), resolver=Resolver(dict(names or NAMES)))


async def refusal(url: str, allow: str | None = None) -> URLNotAllowed:
    with pytest.raises(URLNotAllowed) as caught:
        await check_url(url, policy=policy(allow))
    return caught.value


@pytest.mark.parametrize("url, rule", [
    ("http://127.0.0.1/v1", "loopback"),
    ("http://127.1/", "loopback"),
    ("http://0x7f000001/", "loopback"),
    ("http://2130706433/", "loopback"),
    ("http://017700000001/", "loopback"),
    ("http://0177.1/", "loopback"),
    ("http://0x7f.0.0.1:8080/", "loopback"),
    ("http://[::1]/", "loopback"),
    ("http://[::ffff:127.0.0.1]/", "loopback"),
    ("http://[::ffff:7f00:1]/", "loopback"),
    ("http://[::127.0.0.1]/", "loopback"),
    ("http://[64:ff9b::7f00:1]/", "loopback"),
    ("http://[2002:7f00:1::]/", "loopback"),
    ("http://localhost/", "loopback"),
    ("http://localhost./", "loopback"),
    ("http://LOCALHOST:11434/v1", "loopback"),
    ("http://api.localhost/", "loopback"),
    ("http://10.0.0.1/v1", "private"),
    ("http://172.16.5.4/", "private"),
    ("http://192.168.1.1/", "private"),
    ("http://[fd00::1]/", "private"),
    ("http://[fd00:ec2::254]/latest/meta-data/", "private"),
    ("http://[::ffff:10.0.0.1]/", "private"),
    ("http://169.254.169.254/latest/meta-data/", "link_local"),
    ("http://0xa9fea9fe/", "link_local"),
    ("http://[::ffff:169.254.169.254]/", "link_local"),
    ("http://[fe80::1]/", "link_local"),
    ("http://[fe80::1%25eth0]/", "link_local"),
    ("http://metadata.google.internal/computeMetadata/v1/", "metadata"),
    ("http://metadata.google.internal./", "metadata"),
    ("http://100.64.0.1/", "shared"),
    ("http://100.100.100.200/latest/meta-data/", "shared"),
    ("http://0.0.0.0:8000/", "unspecified"),
    ("http://0/", "unspecified"),
    ("http://[::]/", "unspecified"),
    ("http://224.0.0.1/", "multicast"),
    ("http://[ff02::1]/", "multicast"),
    ("http://240.0.0.1/", "reserved"),
    ("http://255.255.255.255/", "reserved"),
    ("http://192.0.0.192/", "reserved"),
    ("http://198.18.0.1/", "reserved"),
    ("http://[2001:db8::1]/", "reserved"),
    ("http://[100::1]/", "reserved"),
    ("http://internal.example/v1", "private"),
    ("http://mixed.example/v1", "private"),
    ("http://ula.example/", "private"),
    ("http://mapped.example/", "private"),
])
async def test_internal_addresses_are_refused(url, rule):
    refused = await refusal(url)
    assert refused.code == "url_not_allowed" and refused.status_code == 422 and refused.details["rule"] == rule
    assert isinstance(refused, PermanentJobError)


@pytest.mark.parametrize("url", [
    f"http://{PUBLIC}/v1", "https://public.example/v1", "https://public.example:8443/v1",
    "https://[2606:4700:4700::1111]/v1", "http://[64:ff9b::808:808]/", "http://nat64.example/",
    "http://[2002:808:808::1]/",
])
async def test_public_addresses_pass(url):
    await check_url(url, policy=policy())


async def test_a_refusal_names_the_rule_but_not_the_address_a_name_resolves_to():
    refused = await refusal("http://internal.example/v1")
    assert "internal.example resolves to a private address" in refused.message
    assert "10.1.2.3" not in refused.message and "10.1.2.3" not in str(refused.details)


@pytest.mark.parametrize("url, rule", [("ftp://public.example/", "scheme"), ("file:///etc/passwd", "scheme"),
                                       (f"http://user:secret@{PUBLIC}/v1", "credentials"),
                                       (f"http://user@{PUBLIC}/v1", "credentials")])
async def test_only_http_without_credentials(url, rule):
    refused = await refusal(url)
    assert refused.details["rule"] == rule and "secret" not in refused.message


async def test_a_name_that_does_not_resolve_is_unresolvable():
    with pytest.raises(URLUnresolvable) as caught:
        await check_url("https://nowhere.example/v1", policy=policy())
    assert caught.value.code == "url_unresolvable" and caught.value.status_code == 422
    with pytest.raises(URLUnresolvable):
        await check_url("https://empty.example/v1", policy=policy(names={"empty.example": []}))


async def test_a_resolver_that_never_answers_is_unresolvable_after_the_deadline(monkeypatch):
    never = asyncio.Event()

    async def hang(host: str, port: int) -> list:
        await never.wait()
        return []

    monkeypatch.setattr(outbound, "RESOLVE_SECONDS", 0.01)
    with pytest.raises(URLUnresolvable, match="did not resolve within"):
        await check_url("https://slow.example/v1", policy=OutboundPolicy(resolver=hang))


@pytest.mark.parametrize("url", ["http://0177.0.0.1/", f"http://{PUBLIC}:99999999/", "http:///v1"])
async def test_a_url_httpx_would_not_request_is_invalid_input(url):
    with pytest.raises(InvalidInput) as caught:
        await check_url(url, policy=policy())
    assert caught.value.code == "invalid_input"


# --- exceptions: AGENTMEM_OUTBOUND_ALLOW ---------------------------------------------------------------

ALLOW = "127.0.0.1:11434, 10.0.0.0/8 [::1]:8080,llm.lan:8000"


@pytest.mark.parametrize("url", ["http://127.0.0.1:11434/v1", "http://0x7f000001:11434/v1",
                                 "http://[::ffff:127.0.0.1]:11434/v1", "http://10.9.8.7/v1",
                                 "http://internal.example:8000/v1", "http://[::1]:8080/", "http://llm.lan:8000/v1",
                                 "http://LLM.LAN.:8000/v1"])
async def test_allowed_exceptions_pass(url):
    await check_url(url, policy=policy(ALLOW))


@pytest.mark.parametrize("url, rule", [
    ("http://127.0.0.1:11435/v1", "loopback"),  # another port
    ("http://localhost:11434/v1", "loopback"),  # a name is not its address: allow `localhost:11434` for it
    ("http://169.254.169.254/", "link_local"),
    ("http://192.168.1.5:8000/", "private"),  # llm.lan's address, by address
    ("http://llm.lan:8001/v1", "private"),
    ("http://[::1]:8081/", "loopback"),
])
async def test_exceptions_allow_no_more_than_they_say(url, rule):
    assert (await refusal(url, ALLOW)).details["rule"] == rule


def test_allow_entries_are_read_or_refused_by_name():
    entries = parse_allow(" 10.0.0.0/8,[fd00::]:443 fd00::/8 llm.lan. ")
    assert [(str(e.network) if e.network else e.host, e.port) for e in entries] == [
        ("10.0.0.0/8", None), ("fd00::/128", 443), ("fd00::/8", None), ("llm.lan", None)]
    assert parse_allow(None) == parse_allow("") == ()
    for bad in ("10.0.0.0/33", "127.0.0.1:0", "127.0.0.1:99999", "llm.lan:http", "bad_host!", "0x7f000001",
                "[::1]8080"):
        with pytest.raises(ValueError, match="AGENTMEM_OUTBOUND_ALLOW"):
            parse_allow(bad)


def test_a_bad_entry_in_the_setting_stops_the_process_at_start():
    with pytest.raises(ValidationError, match="'bad_host!' is not an address"):
        Settings(outbound_allow="10.0.0.0/8, bad_host!")
    assert Settings(outbound_allow="10.0.0.0/8, llm.lan:8000").outbound_allow == "10.0.0.0/8, llm.lan:8000"


def test_ipv4_literals_are_read_as_the_c_resolver_reads_them():
    assert {str(literal_address(h)) for h in ("0x7f000001", "2130706433", "0177.0.0.1", "127.1", "0x7f.1")} == \
        {"127.0.0.1"}
    assert literal_address("0127.0.0.1") == ipaddress.ip_address("87.0.0.1")  # octal, as inet_aton reads it
    assert literal_address("256.1.1.1") is None and literal_address("llm.example") is None


# --- connections: resolved once, made to the checked address -------------------------------------------

class FakeStream(httpcore.AsyncNetworkStream):
    def __init__(self, network: FakeNetwork, reply: bytes) -> None:
        self.network, self.reply, self.sent = network, reply, b""

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        reply, self.reply = self.reply, b""
        return reply

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self.sent += buffer

    async def aclose(self) -> None:
        pass

    async def start_tls(self, ssl_context, server_hostname: str | None = None,
                        timeout: float | None = None) -> httpcore.AsyncNetworkStream:
        self.network.server_names.append(server_hostname)
        return self

    def get_extra_info(self, info: str):
        return None


class FakeNetwork(httpcore.AsyncNetworkBackend):
    """Records each connection (address, port) and answers it with the next canned response."""

    def __init__(self, *replies: bytes, refuse: tuple[str, ...] = ()) -> None:
        self.replies = list(replies) or [b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}"]
        self.refuse = refuse
        self.connects: list[tuple[str, int]] = []
        self.server_names: list[str | None] = []
        self.streams: list[FakeStream] = []

    async def connect_tcp(self, host: str, port: int, timeout: float | None = None, local_address: str | None = None,
                          socket_options=None) -> httpcore.AsyncNetworkStream:
        self.connects.append((host, port))
        if host in self.refuse:
            raise httpcore.ConnectError("[Errno 111] Connection refused")
        self.streams.append(FakeStream(self, self.replies.pop(0) if len(self.replies) > 1 else self.replies[0]))
        return self.streams[-1]

    async def connect_unix_socket(self, path: str, timeout: float | None = None, socket_options=None):
        raise AssertionError("not used")

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


async def test_the_connection_goes_to_the_checked_address_with_the_name_as_host_and_tls_server_name():
    network, resolver = FakeNetwork(), Resolver({"llm.example": [PUBLIC]})
    async with guarded_client(policy=OutboundPolicy(resolver=resolver), network_backend=network) as client:
        response = await client.get("https://llm.example/v1/models")
    assert response.status_code == 200
    assert network.connects == [(PUBLIC, 443)] and resolver.calls == ["llm.example"]
    assert network.server_names == ["llm.example"]
    assert b"\r\nHost: llm.example\r\n" in network.streams[0].sent


async def test_a_name_that_resolves_elsewhere_when_called_is_refused_without_connecting():
    # DNS rebinding: public when the URL was stored, private when the request is made.
    network, resolver = FakeNetwork(), Resolver({"rebind.example": [[PUBLIC], ["127.0.0.1"]]})
    guard = OutboundPolicy(resolver=resolver)
    await check_url("http://rebind.example/v1", policy=guard)
    async with guarded_client(policy=guard, network_backend=network) as client:
        with pytest.raises(URLNotAllowed) as caught:
            await client.post("http://rebind.example/v1/chat/completions", json={})
    assert caught.value.details["rule"] == "loopback" and network.connects == []
    assert resolver.calls == ["rebind.example", "rebind.example"]


async def test_every_address_of_a_name_must_pass_not_just_the_first():
    network = FakeNetwork()
    async with guarded_client(policy=policy(), network_backend=network) as client:
        with pytest.raises(URLNotAllowed):
            await client.get("http://mixed.example/")
    assert network.connects == []


async def test_the_next_checked_address_is_tried_when_one_refuses():
    network = FakeNetwork(refuse=(PUBLIC,))
    async with guarded_client(policy=policy(), network_backend=network) as client:
        assert (await client.get("http://public.example/")).status_code == 200
    assert network.connects == [(PUBLIC, 80), ("2606:2800:220:1::1", 80)]


async def test_redirects_are_not_followed():
    network = FakeNetwork(b"HTTP/1.1 307 Temporary Redirect\r\nLocation: http://public.example/v1\r\n"
                          b"Content-Length: 0\r\n\r\n")
    resolver = Resolver({"llm.example": [PUBLIC], "public.example": [PUBLIC]})
    async with guarded_client(policy=OutboundPolicy(resolver=resolver), network_backend=network) as client:
        response = await client.post("http://llm.example/v1/chat/completions", json={})
    assert response.status_code == 307 and len(network.connects) == 1 and resolver.calls == ["llm.example"]


async def test_the_settings_policy_applies_when_none_is_given(override_settings):
    network = FakeNetwork()
    override_settings(outbound_allow=None)
    async with guarded_client(network_backend=network) as client:
        with pytest.raises(URLNotAllowed):
            await client.get("http://127.0.0.1:11434/v1/models")
        override_settings(outbound_allow="127.0.0.1:11434")
        assert (await client.get("http://127.0.0.1:11434/v1/models")).status_code == 200
    assert network.connects == [("127.0.0.1", 11434)]
