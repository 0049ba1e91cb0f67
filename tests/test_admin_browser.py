"""The admin page in a real browser: Playwright driving Debian's Chromium.

The edge, a matcher and a forwarder run as real processes (``postback edge|matcher|
forwarder``) on this test's namespace of the real Redis, with a local partner sink: one
partner answers, one is down, so the page has received postbacks, deliveries and dead
letters to show. Chromium is ``/usr/bin/chromium`` (``apt-get install -y chromium``,
which ``.ci/run`` does); without it the test is skipped, except under
``POSTBACK_REQUIRE_BROWSER=1`` (CI), where it fails. A screenshot of the page is saved
to ``$POSTBACK_SCREENSHOT_DIR`` (default: the test's tmp dir) and its path printed.
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
import requests

from core.offers import Offer
from core.partners import Partner
from core.sources import Source
from scripts.embedded_redis import free_port
from storage import lag_history
from tests.sink import Reply, sink_fixture, until  # noqa: F401 - the ``sink`` fixture
from tests.test_logs import add_received

CHROMIUM = os.environ.get("POSTBACK_CHROMIUM", "/usr/bin/chromium")
TOKEN = "browser-test-admin-token"
KEY = "browserTestSourceKey0123456789"
OTHER_KEY = "browserTestOtherSourceKey01234"
#: Postbacks of the second source, unknown clicks all: enough rows for two pages of 10.
OTHER_POSTBACKS = 12
INJECTION = "<img src=x onerror=alert(1)>"
TIMEZONE = "Asia/Tokyo"  # far from UTC, so local time and UTC differ on screen

pytestmark = pytest.mark.slow
playwright_api = pytest.importorskip("playwright.sync_api")
expect = playwright_api.expect
expect.set_options(timeout=15_000)

if not Path(CHROMIUM).exists() and os.environ.get("POSTBACK_REQUIRE_BROWSER") != "1":
    pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install -y chromium)", allow_module_level=True)


@pytest.fixture
def settings(settings):
    """Two partitions, so the page reads every partition's logs and dead letters."""
    return settings.with_overrides(partitions=2, admin_token=TOKEN)


class System:
    """The edge, a matcher and a forwarder as child processes; their output in log files."""

    def __init__(self, settings, workdir: Path, token: str | None = TOKEN) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.workdir = workdir
        self.env = {
            **os.environ,
            "REDIS_URL": settings.redis_url,
            "POSTBACK_NAMESPACE": settings.namespace,
            "POSTBACK_PARTITIONS": str(settings.partitions),
            "POSTBACK_BLOCK_MS": "200",
            # One quick retry, then the dead-letter stream: the down partner's jobs die fast.
            "POSTBACK_RETRY_SCHEDULE": "0",
            "POSTBACK_PAUSE_AFTER_FAILURES": "1000",
            "PYTHONUNBUFFERED": "1",
        }
        self.env.pop("POSTBACK_ADMIN_TOKEN", None)
        if token is not None:
            self.env["POSTBACK_ADMIN_TOKEN"] = token
        self.procs: list[tuple[str, subprocess.Popen]] = []

    def start(self, name: str, *args: str) -> None:
        log = open(self.workdir / f"{name}.log", "w")  # noqa: SIM115 - closed in stop()
        proc = subprocess.Popen(
            [sys.executable, "-m", "scripts.cli", name, *args],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()  # the child holds its own copy
        self.procs.append((name, proc))

    def up(self, *, workers: bool = True) -> None:
        self.start("edge", "--host", "127.0.0.1", "--port", str(self.port), "--threads", "4")
        if workers:
            self.start("matcher", "--consumer", "m-browser")
            self.start("forwarder", "--consumer", "f-browser")

        def ready() -> bool:
            self.check_alive()
            try:
                return requests.get(self.base + "/ready", timeout=1).status_code == 200
            except requests.ConnectionError:
                return False

        until(ready, timeout=30, message="the edge answering /ready")

    def check_alive(self) -> None:
        for name, proc in self.procs:
            if proc.poll() is not None:
                raise AssertionError(f"{name} exited {proc.returncode}:\n{self.logs()}")

    def logs(self) -> str:
        return "\n".join(
            f"--- {path.name}\n{path.read_text()[-3000:]}"
            for path in sorted(self.workdir.glob("*.log"))
        )

    def admin(self, path: str, **params) -> dict:
        reply = requests.get(
            self.base + path,
            params=params,
            headers={"Authorization": f"Bearer {TOKEN}"},
            timeout=5,
        )
        reply.raise_for_status()
        return reply.json()

    def stop(self) -> None:
        for _, proc in self.procs:
            proc.terminate()
        for _, proc in self.procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)


@pytest.fixture
def system(settings, store, sink, tmp_path, redis_client, keys):
    """The running relay with data: matched, unmatched and injected postbacks; one
    partner that answers, one that is down (so its deliveries end as dead letters)."""
    store.add_source(Source.build(name="Survey wall", key=KEY))
    store.add_source(Source.build(name="Offerwall B", key=OTHER_KEY))
    store.add_offer(Offer.build("VBFS6", revshare=80))
    sink.respond("/pub1", 200)
    store.add_partner(
        Partner.build(
            "pub1", name="Publisher One", url=sink.url("/pub1"), scope="own", allow_private=True
        )
    )
    sink.respond("/down", Reply(503, body="partner down"))
    store.add_partner(
        Partner.build(
            "downnet",
            name="Down Network",
            url=sink.url("/down"),
            method="POST",
            scope="all",
            allow_private=True,
        )
    )
    # A partner paused after failing again and again (as the forwarder records it).
    store.add_partner(Partner.build("sleepy", url=sink.url("/sleepy"), allow_private=True))
    redis_client.hset(
        keys.partner_health("sleepy"),
        mapping={
            "failures": "12",
            "paused": "1",
            "paused_since": str(int(time.time() * 1000)),
            "last_error": "HTTP 502",
        },
    )
    # Five minutes ago the matcher was 7 behind: the chart starts with the edge's history.
    burst = {"groups": [{"group": "matcher", "lag": 7, "pending": 2}]}
    lag_history.record(redis_client, keys, burst, int(time.time() * 1000) - 300_000)
    for click_id, user_id in (("CLK-1", "u1"), ("CLK-XSS", "u2")):
        store.add_click(offer_id="VBFS6", partner_id="pub1", user_id=user_id, click_id=click_id)

    relay = System(settings, tmp_path)
    relay.up()
    try:
        postback = f"{relay.base}/postback/{KEY}"
        sent = [
            requests.get(
                postback,
                params={"click_id": "CLK-1", "payout": "5.00", "transaction_id": "TXN-1"},
                timeout=5,
            ),
            requests.post(
                postback,
                json={
                    "click_id": "CLK-XSS",
                    "payout": "2.50",
                    "transaction_id": "TXN-XSS",
                    "note": INJECTION,
                },
                timeout=5,
            ),
            requests.get(postback, params={"click_id": "CLK-NOPE", "payout": "1.00"}, timeout=5),
        ]
        assert [r.status_code for r in sent] == [200, 200, 200], [r.text for r in sent]
        batch = [
            {"click_id": f"CLK-B-{i}", "transaction_id": f"{INJECTION} {i}"}
            for i in range(OTHER_POSTBACKS)
        ]
        reply = requests.post(f"{relay.base}/postback/{OTHER_KEY}/batch", json=batch, timeout=5)
        assert reply.json()["accepted"] == OTHER_POSTBACKS, reply.text

        def settled() -> bool:
            relay.check_alive()
            dead = relay.admin("/api/admin/dead-letters", partner="downnet")["total"]
            received = relay.admin("/api/admin/received-postbacks")["total"]
            return (
                dead == 2 and len(sink.received("/pub1")) == 2 and received == 3 + OTHER_POSTBACKS
            )

        until(settled, timeout=60, message="deliveries done and the down partner's dead-lettered")
        yield relay
    finally:
        relay.stop()
        print(relay.logs())  # shown by pytest only when the test failed


@contextlib.contextmanager
def browser_page(url: str, *, fake_clock: bool = False):
    """A Chromium page at 1280x800 in a zone far from UTC, recording dialogs and API calls.

    With ``fake_clock`` the page's timers run only when the test moves its clock on.
    """
    with playwright_api.sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=CHROMIUM,
            headless=True,
            args=["--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"],
        )
        context = browser.new_context(
            viewport={"width": 1280, "height": 800}, locale="en-GB", timezone_id=TIMEZONE
        )
        context.set_default_timeout(15_000)
        page = context.new_page()
        page.dialogs = []  # any alert() the page fires (an injection that ran)
        page.on("dialog", lambda dialog: (page.dialogs.append(dialog.message), dialog.dismiss()))
        page.requested = []  # every URL the page loaded or called
        page.on("request", lambda request: page.requested.append(request.url))
        page.api_calls = []
        page.on(
            "request",
            lambda request: (
                "/api/" in request.url
                and page.api_calls.append((request.url, request.headers.get("authorization")))
            ),
        )
        if fake_clock:
            page.clock.install()
        page.goto(url)
        try:
            yield page
        finally:
            context.close()
            browser.close()


@pytest.fixture
def page(system):
    with browser_page(system.base + "/admin") as page:
        yield page


def screenshot_path(tmp_path: Path, name: str) -> Path:
    folder = Path(os.environ.get("POSTBACK_SCREENSHOT_DIR") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    return folder / name


def rows(page):
    """The table's body rows (the header row is the first ``row``)."""
    return page.get_by_role("table").locator("tbody").get_by_role("row")


def test_admin_page_in_a_browser(page, system, sink, tmp_path):
    # -- sign in: refused with a wrong token, then in with the right one
    page.get_by_label("Admin token").fill("not-the-token-at-all")
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("alert").filter(has_text="refused")).to_be_visible()
    expect(page.get_by_role("tab", name="Received postbacks")).to_be_hidden()

    page.get_by_label("Admin token").fill(TOKEN)
    page.get_by_role("button", name="Sign in").click()
    received_tab = page.get_by_role("tab", name="Received postbacks")
    expect(received_tab).to_have_attribute("aria-selected", "true")
    assert page.evaluate("Object.keys(localStorage).length") == 0
    assert page.evaluate("sessionStorage.getItem('postback-relay.admin-token')") == TOKEN

    # -- received postbacks: sources by name, paging, every partition
    total = 3 + OTHER_POSTBACKS
    expect(rows(page)).to_have_count(total)
    table = page.get_by_role("table")
    expect(table).to_contain_text("Survey wall")
    expect(table).to_contain_text("Offerwall B")
    expect(table).to_contain_text(f"{INJECTION} 0")  # a value in a cell stays text too
    expect(table.locator("img")).to_have_count(0)
    page.get_by_label("Rows per page").select_option("10")
    expect(rows(page)).to_have_count(10)
    expect(page.locator("#page-info")).to_have_text(f"Page 1 of 2 · {total} rows")
    page.get_by_role("button", name="Next").click()
    expect(rows(page)).to_have_count(total - 10)
    expect(page.locator("#page-info")).to_contain_text("Page 2 of 2")
    expect(page.get_by_role("button", name="Next")).to_be_disabled()
    page.get_by_role("button", name="Previous").click()
    expect(rows(page)).to_have_count(10)
    page.get_by_label("Source", exact=True).fill("survey wall")  # by name, any case
    page.get_by_label("Source", exact=True).press("Enter")
    expect(rows(page)).to_have_count(3)
    expect(page.locator("#page-info")).to_have_text("Page 1 of 1 · 3 rows")
    expect(table).not_to_contain_text("Offerwall B")
    expect(rows(page).filter(has_text="CLK-NOPE")).to_contain_text("unmatched")
    page.get_by_label("Hours", exact=True).fill("0")
    page.get_by_label("Hours", exact=True).press("Enter")
    expect(page.get_by_role("alert").filter(has_text="hours")).to_be_visible()
    page.get_by_label("Hours", exact=True).fill("1")
    page.get_by_label("Hours", exact=True).press("Enter")
    expect(page.get_by_role("alert").filter(has_text="hours")).to_be_hidden()
    page.get_by_label("Outcome", exact=True).select_option("unmatched")
    expect(rows(page)).to_have_count(1)
    page.get_by_label("Outcome", exact=True).select_option("")
    expect(rows(page)).to_have_count(3)
    page.get_by_label("Status", exact=True).select_option("rejected")
    expect(page.get_by_text("Nothing matches these filters.")).to_be_visible()
    page.get_by_label("Status", exact=True).select_option("approved")
    expect(rows(page)).to_have_count(3)

    # times in the viewer's zone, UTC on hover
    first_time = rows(page).filter(has_text="CLK-1").locator("time")
    utc = first_time.get_attribute("datetime")
    moment = datetime.fromisoformat(utc.replace("Z", "+00:00"))
    expect(first_time).to_contain_text(moment.astimezone(ZoneInfo(TIMEZONE)).strftime("%H:%M:%S"))
    expect(first_time).to_have_attribute("title", re.compile(r"^UTC " + utc[:19].replace("T", " ")))

    # -- a row opens its whole story; the injected custom field stays text
    rows(page).filter(has_text="CLK-XSS").click()
    dialog = page.get_by_role("dialog")
    expect(dialog).to_contain_text("Custom data")
    expect(dialog).to_contain_text(INJECTION)
    expect(dialog).to_contain_text("matched")
    expect(dialog).to_contain_text("Partner payout")
    expect(dialog).to_contain_text("2.00")  # 80 % of 2.50
    expect(dialog).to_contain_text("Publisher One")  # its delivery, with the partner's answer
    assert dialog.locator("img").count() == 0
    page.keyboard.press("Escape")
    expect(dialog).to_be_hidden()
    expect(page.get_by_role("table").locator("img")).to_have_count(0)

    # -- tabs by keyboard
    received_tab.focus()
    page.keyboard.press("ArrowRight")
    forwarded_tab = page.get_by_role("tab", name="Forwarded to partners")
    expect(forwarded_tab).to_be_focused()
    expect(forwarded_tab).to_have_attribute("aria-selected", "true")

    # -- forwarded to partners, filtered by partner; a delivery's detail and attempts
    expect(rows(page)).to_have_count(6)  # pub1 ×2, downnet 2 attempts ×2
    page.get_by_label("Partner", exact=True).fill("pub1")
    page.get_by_label("Partner", exact=True).press("Enter")
    expect(rows(page)).to_have_count(2)
    expect(page.get_by_role("table")).not_to_contain_text("downnet")
    shots = [screenshot_path(tmp_path, "admin-forwarded.png")]
    page.screenshot(path=str(shots[-1]))
    rows(page).filter(has_text="cv").first.click()
    expect(dialog).to_contain_text("Payload sent")
    expect(dialog).to_contain_text("Response body")
    expect(dialog).to_contain_text(sink.url("/pub1"))
    expect(dialog).to_contain_text("Attempt 1")
    page.get_by_role("button", name="Close").click()
    expect(dialog).to_be_hidden()

    page.get_by_label("Partner", exact=True).fill("downnet")
    page.get_by_label("Success", exact=True).select_option("false")
    expect(rows(page)).to_have_count(4)
    rows(page).first.focus()
    page.keyboard.press("Enter")  # rows open from the keyboard too
    expect(dialog.locator(".attempt")).to_have_count(2)  # every attempt of that delivery
    expect(dialog).to_contain_text("partner down")
    shots.append(screenshot_path(tmp_path, "admin-delivery-detail.png"))
    page.screenshot(path=str(shots[-1]))
    page.keyboard.press("Escape")
    expect(dialog).to_be_hidden()

    # -- dead letters: replay one, then all of the partner's
    page.get_by_role("tab", name="Dead letters").click()
    expect(rows(page)).to_have_count(2)
    expect(page.get_by_role("button", name="Replay all")).to_be_disabled()
    shots.append(screenshot_path(tmp_path, "admin-dead-letters.png"))
    page.screenshot(path=str(shots[-1]))
    sink.respond("/down", 200)  # the partner is back
    rows(page).first.get_by_role("button", name="Replay", exact=True).click()
    expect(page.get_by_role("status").filter(has_text="Replayed dead letter")).to_be_visible()
    expect(rows(page)).to_have_count(1)
    page.get_by_label("Partner", exact=True).fill("downnet")
    page.get_by_label("Partner", exact=True).press("Enter")
    page.get_by_role("button", name="Replay all").click()
    expect(page.get_by_role("status")).to_contain_text(
        "Replayed 1 dead letter(s) of partner downnet"
    )
    expect(rows(page)).to_have_count(0)

    # the replayed deliveries arrive; the forwarded tab shows them without a click on Refresh
    page.get_by_role("tab", name="Forwarded to partners").click()
    page.get_by_label("Success", exact=True).select_option("true")
    expect(rows(page)).to_have_count(2, timeout=30_000)
    expect(page.get_by_role("table")).to_contain_text("delivered")

    # -- lag panel: a chart per consumer group
    for group in ("matcher", "forwarder"):
        chart = page.locator(f'figure[data-group="{group}"]')
        expect(chart.get_by_role("img")).to_have_attribute("aria-label", re.compile(r"lag \d+"))
    matcher_chart = page.locator('figure[data-group="matcher"]').get_by_role("img")
    expect(matcher_chart).to_have_attribute(
        "aria-label", re.compile(r"peak 7 over the last \d+ min")
    )
    # the old sample is drawn on its own: nobody watched in between, so no line joins it
    lag_marks = matcher_chart.locator(".lag")
    expect(lag_marks.first).to_have_attribute("class", "dot lag")
    assert lag_marks.count() >= 2
    expect(page.locator("#paused-partners")).to_contain_text("sleepy · 12 failures in a row")
    switch = page.get_by_role("switch", name="Auto-refresh every 5 s")
    expect(switch).to_be_checked()

    # -- safe: no script ran, the key never shown, the token only ever in a header
    assert page.dialogs == []
    assert KEY not in page.content() and OTHER_KEY not in page.content()
    assert all(url.startswith(system.base + "/") for url in page.requested), (
        "nothing from elsewhere"
    )
    assert page.api_calls and all(TOKEN not in url for url, _ in page.api_calls)
    signed = [auth for url, auth in page.api_calls if "/api/admin/dead-letters" in url]
    assert signed and set(signed) == {f"Bearer {TOKEN}"}

    page.get_by_role("tab", name="Received postbacks").click()
    expect(rows(page)).to_have_count(3)
    shots.append(screenshot_path(tmp_path, "admin-page.png"))
    page.screenshot(path=str(shots[-1]))
    rows(page).filter(has_text="CLK-XSS").click()
    expect(dialog).to_contain_text(INJECTION)
    shots.append(screenshot_path(tmp_path, "admin-page-detail.png"))
    page.screenshot(path=str(shots[-1]))
    print("\nadmin page screenshots:", *shots)
    page.get_by_role("button", name="Close").click()

    # -- "did partner X get conversion Y, and what did it answer?" from the conversion id
    logs = system.admin("/api/admin/received-postbacks", outcome="matched")["logs"]
    conversion_id = next(r["conversion_id"] for r in logs if r["click_id"] == "CLK-1")
    page.get_by_label("Find conversion or log ID").fill(conversion_id)
    page.get_by_role("button", name="Find").click()
    summary = dialog.locator("section").filter(has_text="Forwarded to")
    expect(summary).to_contain_text("pub1 (Publisher One)")
    expect(summary.locator("li").filter(has_text="pub1")).to_contain_text("delivered")
    expect(summary.locator("li").filter(has_text="pub1")).to_contain_text("HTTP 200")
    expect(dialog).to_contain_text("Response body")
    page.keyboard.press("Escape")
    expect(dialog).to_be_hidden()

    # -- refresh by hand, with the automatic one switched off
    switch.uncheck()
    expect(switch).not_to_be_checked()
    late = requests.get(f"{system.base}/postback/{KEY}", params={"click_id": "CLK-LATE"}, timeout=5)
    assert late.status_code == 200
    until(
        lambda: system.admin("/api/admin/received-postbacks", source="Survey wall")["total"] == 4,
        timeout=30,
        message="the late postback in the received log",
    )
    page.get_by_role("button", name="Refresh").click()
    expect(rows(page)).to_have_count(4)
    expect(rows(page).first).to_contain_text("CLK-LATE")

    # -- sign out forgets the token
    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_label("Admin token")).to_be_visible()
    assert page.evaluate("sessionStorage.getItem('postback-relay.admin-token')") is None
    assert page.dialogs == []


def test_the_page_says_so_when_the_admin_api_is_off(settings, store, tmp_path):
    relay = System(settings, tmp_path, token=None)
    relay.up(workers=False)
    try:
        with browser_page(relay.base + "/admin") as page:
            page.get_by_label("Admin token").fill(TOKEN)
            page.get_by_role("button", name="Sign in").click()
            expect(page.get_by_role("alert")).to_contain_text("The admin API is off")
            expect(page.get_by_role("alert")).to_contain_text("POSTBACK_ADMIN_TOKEN")
            assert page.evaluate("sessionStorage.length") == 0
            assert page.dialogs == []
    finally:
        relay.stop()


def sign_in(page) -> None:
    page.get_by_label("Admin token").fill(TOKEN)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("tab", name="Received postbacks")).to_be_visible()


def test_auto_refresh_every_5_s_until_switched_off(settings, store, redis_client, keys, tmp_path):
    relay = System(settings, tmp_path)
    relay.up(workers=False)  # the received log is written here, as the matcher writes it
    t = int(time.time() * 1000)
    add_received(redis_client, keys, t, i=0)
    try:
        with browser_page(relay.base + "/admin", fake_clock=True) as page:
            sign_in(page)
            expect(rows(page)).to_have_count(1)

            def table_loads() -> int:
                return sum("/received-postbacks" in url for url, _ in page.api_calls)

            add_received(redis_client, keys, t + 1, i=1)
            page.clock.run_for(5_500)
            expect(rows(page)).to_have_count(2)  # refreshed by itself

            page.get_by_role("switch", name="Auto-refresh every 5 s").uncheck()
            add_received(redis_client, keys, t + 2, i=2)
            before = table_loads()
            page.clock.run_for(20_000)  # four refreshes' worth, and none may happen
            with page.expect_response(lambda r: "/received-postbacks" in r.url):
                page.get_by_role("button", name="Refresh").click()
            expect(rows(page)).to_have_count(3)
            assert table_loads() == before + 1  # only the one asked for by hand
            assert page.dialogs == []
    finally:
        relay.stop()
