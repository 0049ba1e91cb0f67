"""The edge shares one bounded Redis pool among all its threads (issue #8, defect 1).

Before: each waitress thread kept a pooled connection per postback resource; after a
few dozen concurrent single and batch postbacks the pool (16) was empty for good and
``/click``, ``/ready``, ``/metrics`` and the admin API answered 503 "Too many
connections" until a restart.
"""

from __future__ import annotations

import threading

import orjson
from falcon import testing

from core.offers import Offer
from core.partners import Partner
from edge.app import create_app

CALLERS = 24  # far more threads than the edge's pool holds connections


def test_concurrent_postbacks_leave_connections_for_clicks_and_readiness(settings, store, source):
    store.add_offer(Offer.build("OFFER-1", revshare=80))
    store.add_partner(Partner.build("pub-1", url="https://pub.example/pb"))
    app = create_app(settings.with_overrides(threads=2))
    client = testing.TestClient(app)
    pool_size = app.ctx.redis.connection_pool.max_connections
    assert pool_size < CALLERS * 2
    statuses: list[int] = []
    start = threading.Barrier(CALLERS)

    def caller(n: int) -> None:
        start.wait(timeout=30)
        for i in range(3):
            single = client.simulate_get(
                f"/postback/{source.key}", query_string=f"click_id=C-{n}-{i}"
            )
            batch = client.simulate_post(
                f"/postback/{source.key}/batch",
                body=orjson.dumps([{"click_id": f"B-{n}-{i}"}, {"click_id": f"D-{n}-{i}"}]),
                headers={"Content-Type": "application/json"},
            )
            statuses.extend((single.status_code, batch.status_code))

    threads = [threading.Thread(target=caller, args=(n,)) for n in range(CALLERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    try:
        assert statuses == [200] * (CALLERS * 6)
        # Every other path still gets a connection afterwards.
        assert client.simulate_get("/ready").status_code == 200
        assert client.simulate_get("/metrics").status_code == 200
        click = client.simulate_get("/click/OFFER-1", query_string="partner=pub-1&user=u1")
        assert click.status_code == 200, click.text
    finally:
        app.ctx.redis.close()
