"""One delivery over HTTP: the pooled session, sending a built request, reading the answer.

The pure parts are in ``core.delivery_request`` (URL, body, signature) and
``core.delivery`` (judging the answer); this
module is the I/O around them, called from the forwarder's delivery threads.
"""

from __future__ import annotations

import http.cookiejar
import logging
import time

import requests
from requests.adapters import HTTPAdapter
from requests.models import PreparedRequest
from requests.structures import CaseInsensitiveDict
from requests.utils import get_encoding_from_headers
from urllib3 import Timeout

from core import delivery
from core.addresses import is_private_host
from core.delivery import Outcome
from core.delivery_request import DeliveryRequest, PrivateAddressRefused, build_request
from core.partners import Partner
from storage.dns import resolve_host

log = logging.getLogger(__name__)

#: How long a host's "resolves to a public address" check is believed.
ADDRESS_TTL_S = 60.0
#: Most of a partner's answer read (the log keeps its first 500 characters).
RESPONSE_READ_LIMIT = 65536
USER_AGENT = "postback-relay/0.1"


class DeliveryAdapter(HTTPAdapter):
    """requests' pooled adapter, less the per-request work a delivery has no use for.

    Deliveries never go through a proxy (the session ignores the environment and names
    none), yet ``HTTPAdapter`` parses each URL twice more looking for one; and its
    ``build_response`` files every answer's ``Set-Cookie`` into the session's jar (which
    refuses them all, see :func:`make_session`). Together about 10 us of a delivery's
    ~250 us of HTTP work (measured single-threaded). With a proxy given, requests' own
    code runs.
    """

    def get_connection_with_tls_context(self, request, verify, proxies=None, cert=None):
        if proxies:
            return super().get_connection_with_tls_context(request, verify, proxies, cert)
        try:
            host_params, pool_kwargs = self.build_connection_pool_key_attributes(
                request, verify, cert
            )
        except ValueError as exc:  # as requests does: a bad port, say
            raise requests.exceptions.InvalidURL(exc, request=request) from exc
        return self.poolmanager.connection_from_host(**host_params, pool_kwargs=pool_kwargs)

    def request_url(self, request: PreparedRequest, proxies) -> str:
        return super().request_url(request, proxies) if proxies else request.path_url

    def build_response(self, req: PreparedRequest, resp) -> requests.Response:
        response = requests.Response()
        response.status_code = resp.status
        response.headers = CaseInsensitiveDict(resp.headers)
        response.encoding = get_encoding_from_headers(response.headers)
        response.raw = resp
        response.reason = resp.reason
        response.url = req.url
        response.request = req
        response.connection = self
        return response


def make_session(concurrency: int) -> requests.Session:
    """A pooled session: keep-alive connections, up to ``concurrency`` per partner host.

    ``trust_env`` is off: no proxy or ~/.netrc lookup per request (it is slow, and netrc
    credentials must never be sent to partners). Cookies are refused: one delivery's
    cookie must not ride along on the next, nor pile up in memory. Headers are the few a
    partner needs, each costing CPU on every request: http.client asks for an answer
    as is (``Accept-Encoding: identity``: the log keeps 500 characters of it, compression
    buys nothing) and ``Connection: keep-alive`` is HTTP/1.1's default anyway.
    """
    session = requests.Session()
    session.trust_env = False
    session.cookies.set_policy(http.cookiejar.DefaultCookiePolicy(allowed_domains=[]))
    adapter = DeliveryAdapter(pool_connections=256, pool_maxsize=concurrency, max_retries=0)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    session.headers = CaseInsensitiveDict({"User-Agent": USER_AGENT, "Accept": "*/*"})
    return session


def send(session: requests.Session, request: DeliveryRequest, timeout: Timeout | tuple):
    """Send one delivery through the session's pooled adapter; redirects are not followed.

    ``build_request`` already gave an ASCII URL quoted the way requests would, so the
    request is prepared here directly: ``Session.request`` would parse, re-quote and
    IDNA-check it again, a third of the CPU a delivery costs, and then run cookie and
    redirect machinery we do not use. Anything else (a Unicode host name) goes the
    general way.
    """
    if not request.url.isascii():
        return session.request(
            request.method,
            request.url,
            data=request.body,
            headers=request.headers,
            timeout=timeout,
            allow_redirects=False,
        )
    prepared = PreparedRequest()
    prepared.method = request.method
    prepared.url = request.url
    # A plain dict, its names distinct and spelled as sent: urllib3 copies the headers
    # of every request, which costs a CaseInsensitiveDict ten times more.
    prepared.headers = dict(session.headers)
    prepared.headers.update(request.headers)
    if request.body is not None:
        prepared.body = request.body
        prepared.headers["Content-Length"] = str(len(request.body))
    elif request.method != "GET":
        prepared.headers["Content-Length"] = "0"
    return session.get_adapter(request.url).send(prepared, timeout=timeout)


def read_body(response: requests.Response, limit: int = RESPONSE_READ_LIMIT) -> bytes:
    """The start of a response's body; the connection goes back to the pool unless more is left.

    Reading the raw stream skips requests' chunked generator; a partner answering with
    megabytes costs us a closed connection, not the memory. Decoding (gzip…) is only
    set up when the partner compressed the answer anyway.
    """
    raw = response.raw
    data = raw.read(limit, decode_content="Content-Encoding" in raw.headers)
    if not raw.closed:
        response.close()
    return data


class AddressGuard:
    """Refuses hosts that resolve to a private address (DNS rebinding), cached per host.

    A cheap check at send time, not a guarantee: the name is resolved again when
    connecting. Partners created with ``allow_private`` skip it.
    """

    def __init__(self, ttl_s: float = ADDRESS_TTL_S) -> None:
        self.ttl_s = ttl_s
        self._seen: dict[str, tuple[float, bool]] = {}

    def check(self, host: str) -> None:
        now = time.monotonic()
        cached = self._seen.get(host)
        if cached is None or now - cached[0] > self.ttl_s:
            cached = (now, is_private_host(host, resolve_host))
            self._seen[host] = cached
        if cached[1]:
            raise PrivateAddressRefused(f"{host} resolves to a private address")


def attempt(
    session: requests.Session,
    guard: AddressGuard,
    partner: Partner,
    payload: dict,
    timeout: Timeout | tuple[float, float],
) -> tuple[DeliveryRequest | None, Outcome, float]:
    """Deliver ``payload`` to ``partner`` once: (request sent or None, outcome, start time).

    Never raises: every attempt must come back to be recorded. The request is None when
    it could not be built.
    """
    started = time.time()
    request = None
    t0 = time.perf_counter()
    try:
        request = build_request(
            partner.url,
            partner.method,
            payload,
            secret=partner.secret,
            now=started,
            dialect=partner.dialect if partner.params or partner.status_map else None,
        )
        if not partner.allow_private:
            guard.check(request.host)
        t0 = time.perf_counter()
        response = send(session, request, timeout)
        ms = round((time.perf_counter() - t0) * 1000)
        outcome = delivery.outcome_from_response(
            response.status_code, response.headers, read_body(response), ms, now=started
        )
    except Exception as exc:  # every attempt must come back to be recorded
        ms = round((time.perf_counter() - t0) * 1000)
        outcome = outcome_from_exception(exc, ms if request else None)
        if not isinstance(exc, PrivateAddressRefused | requests.RequestException):
            log.exception("delivery to %s could not be made", partner.partner_id)
    return request, outcome, started


def outcome_from_exception(exc: BaseException, response_ms: int | None) -> Outcome:
    """Timeouts and connection errors are retried; a refused or invalid URL is not."""
    if isinstance(exc, PrivateAddressRefused):
        return Outcome(delivery.FAILED, error=f"refused: {exc}", response_ms=None)
    if isinstance(exc, requests.exceptions.InvalidURL | requests.exceptions.InvalidSchema):
        return Outcome(delivery.FAILED, error=f"invalid URL: {exc}"[: delivery.RESPONSE_BODY_CHARS])
    if isinstance(exc, requests.exceptions.ConnectTimeout):
        kind = "connect timeout"
    elif isinstance(exc, requests.exceptions.Timeout):
        kind = "timeout"
    elif isinstance(exc, requests.exceptions.ConnectionError):
        kind = "connection error"
    else:
        kind = type(exc).__name__
    return Outcome(
        delivery.RETRY,
        error=f"{kind}: {exc}"[: delivery.RESPONSE_BODY_CHARS],
        response_ms=response_ms,
    )
