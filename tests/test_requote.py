"""Partner URLs are re-quoted by core's own stdlib function exactly as requests would.

requests is the reference here (the forwarder sends with it); core may not import it.
"""

from __future__ import annotations

import pytest
import requests.utils
from hypothesis import given
from hypothesis import strategies as st

from core.delivery_request import build_request, requote_uri

TRICKY = [
    "https://p.example/pb",
    "https://p.example/a b?q=c d",  # spaces
    "https://p.example/caf\u00e9?name=J\u00fcrgen&city=\u6771\u4eac",  # non-ASCII
    "https://p.example/pb?x=%41%42%7E",  # escapes of unreserved characters: undone
    "https://p.example/pb?x=%2F%3F%26%3D%23%25",  # escapes of reserved ones: kept
    "https://p.example/pb?x=%2f%e9",  # lower-case escapes: kept as written
    "https://p.example/pb?x=100%",  # a lone percent at the end
    "https://p.example/pb?x=%4",  # a truncated escape
    "https://p.example/pb?x=%zz&y=%41",  # a bad escape: every % is escaped
    "https://p.example/pb?x=%%41",
    "https://p.example/pb?x=%\u0663\u0663",  # Arabic-Indic digits read as hex by int()
    'https://user:p%40ss@p.example:8443/pb;params?q=[1]&r={x}|y^z`\\"<>',
    "https://p.example/pb?a=!$&'()*+,;=:@/?#frag",
    "https://[2001:db8::1]:8080/pb?x=1",
    "https://p.example/pb?emoji=\U0001f600&tab=\t&nl=\n",
    "",
]


@pytest.mark.parametrize("url", TRICKY)
def test_tricky_urls_are_quoted_as_requests_quotes_them(url):
    assert requote_uri(url) == requests.utils.requote_uri(url)


@given(st.text())
def test_any_text_is_quoted_as_requests_quotes_it(text):
    assert requote_uri(text) == requests.utils.requote_uri(text)


@given(
    st.text(
        alphabet=st.sampled_from("%0123456789abcdefABCDEFgz/?&=#+ \u00e9~._-"),
        max_size=30,
    )
)
def test_text_dense_in_escapes_is_quoted_as_requests_quotes_it(text):
    assert requote_uri(text) == requests.utils.requote_uri(text)


def test_a_partner_url_is_sent_as_requests_would_send_it():
    request = build_request("https://p.example/a b?k=%41 1", "GET", {"click_id": "C1"})
    assert request.url == "https://p.example/a%20b?k=A%201&click_id=C1"
