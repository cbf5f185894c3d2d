"""Which URLs a webhook may be sent to (no HTTP client imported: the API's schemas use it).

A webhook makes relayq's workers send requests to a URL a caller chose, so
a caller could aim them at the services next to relayq (a cloud metadata
endpoint, an internal admin port). Only http and https URLs are taken, and
addresses that are not globally routable (private, loopback, link-local,
shared, reserved, multicast, unspecified) are refused unless the operator
allows private destinations. The check runs when an endpoint is registered
and again at each delivery, where
:class:`~relayq.webhooks.transport.GuardedResolver` checks the very
addresses the connection is made to, so a DNS answer that changed in
between (DNS rebinding) is refused too.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit

__all__ = [
    "MAX_URL_LENGTH",
    "Destination",
    "DestinationRefused",
    "WebhookURLRefused",
    "address_refusal",
    "check_destination",
    "check_webhook_url",
    "literal_refusal",
    "parse_destination",
]

MAX_URL_LENGTH = 2048
_MAX_NAME_LENGTH = 253
_LABEL = re.compile(r"[a-z0-9_-]{1,63}")
"""A label of a domain name in ASCII (IDNA) form; ``_`` is not a letter of host
names, but some DNS names carry it and resolvers look them up."""

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class DestinationRefused(OSError):
    """A webhook URL whose host is, or resolves to, an address we do not call.

    An :class:`OSError`, so aiohttp treats it as the failed DNS lookup it
    stands for when :class:`~relayq.webhooks.transport.GuardedResolver` raises it.
    """


class WebhookURLRefused(Exception):
    """A webhook URL a request names (at ``param``, such as ``webhook.url``) that
    webhooks may not be sent to; ``reason`` says why."""

    def __init__(self, reason: str, *, param: str) -> None:
        super().__init__(reason)
        self.reason = reason
        self.param = param


@dataclass(frozen=True, kw_only=True)
class Destination:
    scheme: str
    host: str
    port: int


def parse_destination(url: str) -> Destination:
    """The scheme, host and port of an http(s) URL; ValueError says what is wrong."""
    if len(url) > MAX_URL_LENGTH:
        raise ValueError(f"the URL is longer than {MAX_URL_LENGTH} characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"not a valid URL ({exc})") from exc
    scheme = parts.scheme.lower()
    if scheme not in {"http", "https"}:
        raise ValueError("only http and https URLs are accepted")
    if not parts.hostname:
        raise ValueError("the URL has no host")
    if _literal(parts.hostname) is None:
        _check_name(parts.hostname)
    default = 443 if scheme == "https" else 80
    return Destination(scheme=scheme, host=parts.hostname, port=port or default)


def _check_name(host: str) -> None:
    """Refuse a host that is no domain name, before it reaches the resolver.

    The resolver encodes a name with the ``idna`` codec first, which raises
    UnicodeError (not OSError, as a failed lookup does) for an empty label
    (``a..b``) or one over 63 characters; a name it does encode but that no
    DNS server could hold is refused here too, without a lookup.
    """
    name = host.removesuffix(".")  # one final dot: the root, as in "example.com."
    labels = name.split(".")
    if not all(labels):
        raise ValueError(
            f"the host {host[:80]!r} has an empty label (two dots in a row, or a dot first)"
        )
    for label in labels:
        if len(label) > 63:
            raise ValueError(
                f"the host has a label of {len(label)} characters ({label[:20]!r}…): "
                "a dot-separated part of a domain name has at most 63"
            )
    try:
        ascii_name = name.encode("idna").decode("ascii")
    except UnicodeError as exc:
        raise ValueError(f"the host {host[:80]!r} is not a valid domain name ({exc})") from exc
    if len(ascii_name) > _MAX_NAME_LENGTH:
        raise ValueError(f"the host is longer than {_MAX_NAME_LENGTH} characters")
    for label in ascii_name.lower().split("."):
        if not _LABEL.fullmatch(label):
            raise ValueError(
                f"the host {host[:80]!r} is not a valid domain name: each dot-separated part "
                "must be 1 to 63 letters, digits or hyphens"
            )


def address_refusal(address: IPAddress, *, allow_private: bool) -> str | None:
    """Why ``address`` may not be called, or None when it may."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if address.is_unspecified:
        return f"{address} is the unspecified address"
    if address.is_multicast:
        return f"{address} is a multicast address"
    if allow_private:
        return None
    for kind, flag in (
        ("loopback", address.is_loopback),
        ("link-local", address.is_link_local),
        ("private", address.is_private),
        ("reserved", address.is_reserved),
    ):
        if flag:
            return f"{address} is a {kind} address"
    if not address.is_global:
        return f"{address} is not a globally routable address"
    return None


def _literal(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None


def literal_refusal(url: str, *, allow_private: bool) -> str | None:
    """Why ``url``'s host may not be called when it is an IP address (names: None)."""
    address = _literal(parse_destination(url).host)
    return None if address is None else address_refusal(address, allow_private=allow_private)


async def check_destination(url: str, *, allow_private: bool) -> None:
    """Refuse ``url`` unless every address its host resolves to may be called.

    Raises :class:`DestinationRefused` with a message fit for the caller
    (also when the name does not resolve) and ValueError for a URL that is
    not http(s).
    """
    destination = parse_destination(url)
    literal = _literal(destination.host)
    if literal is not None:
        addresses: list[IPAddress] = [literal]
    else:
        addresses = await _resolve(destination)
    for address in addresses:
        refusal = address_refusal(address, allow_private=allow_private)
        if refusal is not None:
            raise DestinationRefused(f"{destination.host} is refused: {refusal}")


async def check_webhook_url(url: str, *, allow_private: bool, param: str) -> None:
    """Refuse a caller's webhook URL, named at ``param`` in its request, whose host is
    (or resolves to) an address webhooks may not call (:class:`WebhookURLRefused`);
    ValueError for a URL that is not http(s), as :func:`check_destination`."""
    try:
        await check_destination(url, allow_private=allow_private)
    except DestinationRefused as exc:
        raise WebhookURLRefused(str(exc), param=param) from exc


async def _resolve(destination: Destination) -> list[IPAddress]:
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(destination.host, destination.port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as exc:
        # UnicodeError: the resolver's idna encoding refused the name (parse_destination
        # refuses those names first; this is for any it lets through).
        raise DestinationRefused(f"{destination.host} does not resolve ({exc})") from exc
    return [ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in infos]
