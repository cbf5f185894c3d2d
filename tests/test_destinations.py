"""Which webhook URLs parse: a host must be an IP address or a domain name (in-process, no DNS)."""

from __future__ import annotations

import re

import pytest

from relayq.schemas.destinations import parse_destination


@pytest.mark.parametrize(
    ("url", "host", "port"),
    [
        ("https://example.com/hook", "example.com", 443),
        ("http://Example.COM.:8080/hook", "example.com.", 8080),
        ("http://b\u00fccher.example/hook", "b\u00fccher.example", 80),
        ("http://_dmarc.example.com/", "_dmarc.example.com", 80),
        (f"http://{'a' * 63}.example/", f"{'a' * 63}.example", 80),
        ("http://[::1]:9/", "::1", 9),
        ("http://127.0.0.1/", "127.0.0.1", 80),
    ],
)
def test_urls_with_a_name_or_an_address_parse(url: str, host: str, port: int) -> None:
    destination = parse_destination(url)

    assert (destination.host, destination.port) == (host, port)


@pytest.mark.parametrize(
    ("url", "words"),
    [
        ("http://a..invalid/", "empty label"),
        ("https://.invalid/", "empty label"),
        (f"http://{'a' * 64}.invalid/", "label of 64 characters"),
        (f"http://{'a.' * 127}invalid/", "longer than 253"),
        ("http://exa mple.com/", "not a valid domain name"),
        ("http://a%2e.example/", "not a valid domain name"),
        ("http://a\x00b.example/", "not a valid domain name"),
        ("http://\u2488.example/", "not a valid domain name"),
        ("ftp://example.com/", "only http and https"),
        ("http:///path", "no host"),
        ("http://[zz]/", "not a valid URL"),
    ],
)
def test_a_host_that_no_resolver_could_look_up_is_refused_before_any_lookup(
    url: str, words: str
) -> None:
    with pytest.raises(ValueError, match=re.escape(words)):
        parse_destination(url)
