"""Partner postback URLs: http(s) only, no loopback/private/link-local unless allowed."""

from __future__ import annotations

import ipaddress
import socket

import pytest
from hypothesis import given
from hypothesis import strategies as st

from core.addresses import check_partner_url, is_private_host
from core.partners import Partner
from core.validation import ValidationError


@pytest.mark.parametrize(
    "url",
    [
        "https://partner.example.com/postback",
        "http://93.184.216.34/pb?token=abc",
        "https://partner.example.com/cb/{click_id}?amount={payout}&s={sub1}",
        "https://partner.example.com:8443/pb",
    ],
)
def test_public_http_urls_are_accepted(url):
    assert check_partner_url(url) == url


@pytest.mark.parametrize(
    "url",
    [
        "ftp://partner.example.com/pb",
        "javascript:alert(1)",
        "file:///etc/passwd",
        "partner.example.com/pb",
        "https:///no-host",
        "https://partner.example.com/a b",
        "https://partner.example.com:99999/pb",
        "",
        None,
    ],
)
def test_anything_but_an_http_url_with_a_host_is_refused(url):
    with pytest.raises(ValidationError) as err:
        check_partner_url(url)
    assert err.value.field == "url"


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8080/pb",
        "http://localhost/pb",
        "http://localhost./pb",
        "http://api.localhost/pb",
        "http://10.1.2.3/pb",
        "http://172.16.0.5/pb",
        "http://192.168.1.10/pb",
        "http://169.254.169.254/latest/meta-data",  # cloud metadata
        "http://[::1]/pb",
        "http://[fe80::1]/pb",
        "http://[::ffff:127.0.0.1]/pb",
        "http://0.0.0.0/pb",
        "http://2130706433/pb",  # 127.0.0.1 written as a number
        "http://127.1/pb",
        "http://user:pw@127.0.0.1/pb",
        "http://100.100.100.200/latest/meta-data",  # shared space (100.64/10): cloud metadata
        "http://100.64.0.1/pb",
        "http://100.127.255.254/pb",
        "http://[::ffff:100.100.100.200]/pb",
        "http://[64:ff9b::a9fe:a9fe]/pb",  # NAT64 of 169.254.169.254
        "http://198.18.0.1/pb",  # benchmarking
    ],
)
def test_loopback_private_and_link_local_hosts_are_refused_unless_allowed(url):
    with pytest.raises(ValidationError, match="allow-private") as err:
        check_partner_url(url)
    assert err.value.field == "url"
    assert check_partner_url(url, allow_private=True) == url


def test_a_partner_is_built_through_the_same_check():
    with pytest.raises(ValidationError, match="url"):
        Partner.build("p1", url="http://192.168.0.1/pb")
    partner = Partner.build("p1", url="http://192.168.0.1/pb", allow_private=True)
    assert partner.allow_private and partner.to_redis()["allow_private"] == "1"


def test_a_name_is_judged_by_where_the_resolver_says_it_points():
    private = {"rebind.example": ["203.0.113.9", "10.0.0.7"], "public.example": ["93.184.216.34"]}
    resolve = lambda host: private.get(host, [])  # noqa: E731
    assert is_private_host("rebind.example", resolve)
    assert not is_private_host("public.example", resolve)
    assert not is_private_host("unknown.example", resolve)  # does not resolve: by its text
    assert not is_private_host("rebind.example")  # core alone does no look-up
    with pytest.raises(ValidationError, match="allow-private"):
        Partner.build("p1", url="https://rebind.example/pb", resolve=resolve)
    assert Partner.build("p1", url="https://public.example/pb", resolve=resolve)


@given(st.text(alphabet=st.sampled_from("0123456789xXabcdef."), min_size=1, max_size=18))
def test_numeric_hosts_are_read_as_the_resolver_reads_them(host):
    # 2130706433, 127.1 and 0x7f.1 are all 127.0.0.1 to inet_aton (and getaddrinfo);
    # a trailing dot is dropped first ("localhost." is localhost)
    host = host.rstrip(".")
    try:
        expected = ipaddress.IPv4Address(socket.inet_aton(host))
    except OSError:
        expected = None
    assert is_private_host(host) == (expected is not None and is_private_host(str(expected)))
