"""Issue 12's "done when", end to end: an advertiser sending
``?aff_sub=…&sum=…&tid=…&status=1`` and a publisher wanting ``?subid=…&amount=…&status=1``
are integrated with admin commands alone, and a held reward becomes spendable by itself,
once. Real Redis, the edge app, a ``postback matcher`` process, the forwarder, and a
local HTTP publisher."""

from __future__ import annotations

import orjson
import pytest
from falcon import testing

from edge.app import create_app
from tests.sink import make_forwarder_fixture, sink_fixture, until  # noqa: F401 - fixtures
from tests.test_matcher_worker import Worker, wait_for


@pytest.fixture
def admin(admin):
    """conftest's ``admin`` for commands that must succeed: their output, stripped."""

    def run(*argv: str) -> str:
        code, out, err = admin(*argv)
        assert code == 0, err
        return out.strip()

    return run


def test_an_advertiser_and_a_publisher_integrated_by_admin_commands_alone(
    admin, settings, redis_client, keys, sink, make_forwarder, tmp_path
):
    key = admin(
        "source", "add", "--name", "Advertiser", "--param", "click_id=aff_sub",
        "--param", "payout=sum", "--param", "transaction_id=tid", "--status-map", "1=approved",
        "--status-map", "0=rejected",
    )  # fmt: skip
    admin("offer", "add", "APP", "--revshare", "80", "--hold", "5s")
    admin(
        "partner", "add", "PUB", "--url", sink.url("/pub"), "--param", "click_id=subid",
        "--param", "payout=amount", "--status-map", "approved=1", "--status-map", "rejected=0",
        "--allow-private",
    )  # fmt: skip
    click_id = admin("click", "add", "--offer", "APP", "--partner", "PUB", "--user", "u1")

    edge = testing.TestClient(create_app(settings))
    matcher = Worker(settings, tmp_path / "matcher.log")
    try:
        resp = edge.simulate_get(
            f"/postback/{key}", query_string=f"aff_sub={click_id}&sum=5.00&tid=T-1&status=1"
        )
        assert resp.status_code == 200, resp.text
        # the publisher hears of it in its own words
        forwarder = make_forwarder()
        [request] = until(lambda: sink.received("/pub"), step=forwarder.process_batch)
        assert request.params["subid"] == click_id
        assert request.params["amount"] == "4.00"
        assert request.params["status"] == "1"
        assert request.params["transaction_id"] == "T-1"
        # the reward is held first ...
        user = orjson.loads(admin("user", "show", "u1", "--json"))
        assert user == {"user_id": "u1", "points": "0.00", "held": "4.00"}
        assert admin("user", "show", "u1") == "0.00 points (held: 4.00)"
        # ... and becomes spendable by itself, with no postback
        wait_for(
            lambda: orjson.loads(admin("user", "show", "u1", "--json"))["points"] == "4.00",
            timeout=30,
            what="the held reward to be credited",
        )
        assert orjson.loads(admin("user", "show", "u1", "--json"))["held"] == "0.00"
        # once: nothing is left due, and the conversion says when it was credited
        assert sum(redis_client.zcard(keys.holds_due(n)) for n in keys.all_partitions()) == 0
        assert matcher.stop() == 0, matcher.log()
    finally:
        matcher.kill()
        edge.app.ctx.redis.close()
    assert orjson.loads(admin("user", "show", "u1", "--json")) == {
        "user_id": "u1",
        "points": "4.00",
        "held": "0.00",
    }
    [conversion_id] = [
        c
        for n in keys.all_partitions()
        for c in redis_client.zrange(keys.conversion_index(n), 0, -1)
    ]
    conversion = orjson.loads(admin("conversion", "show", conversion_id, "--json"))
    assert conversion["credited"] == "4.00" and conversion["held"] == "0.00"
    assert conversion["hold_released"] >= conversion["hold_until"]
    assert conversion["transaction_id"] == "T-1"
