"""Whose address a request comes from: the peer, unless it is a trusted proxy; then the
rightmost X-Forwarded-For address that is not one."""

from __future__ import annotations

import pytest

import app
from voiceface.proxies import SPACE_PROXIES, TrustedProxies

SPOOFS = ["203.0.113.66", "1.2.3.4, 203.0.113.66", "unknown", "127.0.0.1"]


@pytest.mark.parametrize("forwarded", SPOOFS)
def test_with_no_trusted_proxy_every_header_is_ignored(forwarded):
    none = TrustedProxies()
    assert none.client("127.0.0.1", [forwarded]) == "127.0.0.1"
    assert none.client("198.51.100.7", [forwarded]) == "198.51.100.7"


def test_behind_a_trusted_proxy_the_rightmost_untrusted_address_is_the_client():
    proxies = TrustedProxies.parse("127.0.0.1, 10.0.0.0/8")
    # the client wrote "1.2.3.4"; the outer proxy appended 203.0.113.9, the inner 10.0.0.2
    assert proxies.client("127.0.0.1", ["1.2.3.4, 203.0.113.9, 10.0.0.2"]) == "203.0.113.9"
    assert proxies.client("127.0.0.1", ["1.2.3.4", "203.0.113.9"]) == "203.0.113.9"  # 2 lines
    assert proxies.client("127.0.0.1", []) == "127.0.0.1"  # no header: the proxy itself
    assert proxies.client("127.0.0.1", ["10.0.0.3, 10.0.0.2"]) == "10.0.0.3"  # all trusted
    # a hop that is no address was not written by a trusted proxy: the last trusted one
    assert proxies.client("127.0.0.1", ["203.0.113.9, garbage, 10.0.0.2"]) == "10.0.0.2"
    # a peer that is not a trusted proxy is the client, whatever it sends
    assert proxies.client("198.51.100.7", ["203.0.113.9"]) == "198.51.100.7"


def test_addresses_with_ports_brackets_and_ipv4_in_ipv6():
    proxies = TrustedProxies.parse("::1 127.0.0.1")
    assert proxies.client("::ffff:127.0.0.1", ["203.0.113.9:4711"]) == "203.0.113.9"
    assert proxies.client("::1", ["[2001:db8::5]:443"]) == "2001:db8::5"
    assert proxies.client("::1", ["2001:db8::5"]) == "2001:db8::5"


def test_on_a_space_the_address_spaces_proxy_wrote_is_the_client():
    space = TrustedProxies.parse(SPACE_PROXIES)
    peer = "10.16.3.80"  # what request.client.host is on a Space
    assert space.client(peer, ["203.0.113.50"]) == "203.0.113.50"  # the proxy replaced it
    assert space.client(peer, ["198.51.100.1, 203.0.113.50"]) == "203.0.113.50"  # appended
    assert space.client(peer, ["203.0.113.50, 10.16.0.1"]) == "203.0.113.50"  # two hops
    assert space.client("203.0.113.7", ["198.51.100.1"]) == "203.0.113.7"  # not its proxy


def test_a_bad_trusted_proxy_is_refused_with_what_to_write(capsys):
    with pytest.raises(ValueError, match="'10.0.0.0/33' is not an IP address or network"):
        TrustedProxies.parse("127.0.0.1, 10.0.0.0/33")
    with pytest.raises(SystemExit) as exit_info:  # before any model is loaded
        app.main(["--trusted-proxies", "proxy.example"])
    assert exit_info.value.code == 2
    assert "'proxy.example' is not an IP address or network" in capsys.readouterr().err
