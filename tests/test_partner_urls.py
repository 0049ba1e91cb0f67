"""Partner postback URLs: http(s) only, no loopback/private/link-local unless allowed."""

from __future__ import annotations

import pytest

from core.entities import Partner, ValidationError, check_partner_url


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
