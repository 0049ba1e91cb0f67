"""``GET /click/{offer_id}?partner=P&user=U&sub1=..``: record a click, send the user on.

The answer is a 302 to the offer's landing URL with its macros filled in, URL-encoded:
``{click_id}`` (SPEC §3) and also ``{offer_id}``, ``{partner_id}``, ``{user_id}`` and
``{sub1}``..``{sub5}``. An offer without a landing URL answers 200 with the click as JSON.
"""

from __future__ import annotations

from urllib.parse import quote

import falcon
import orjson

from core.clicks import SUB_IDS, Click
from edge.context import EdgeContext
from edge.postbacks import caller_ip
from storage.repositories import NotFound


def landing_url(template: str, click: Click) -> str:
    """The offer's landing URL with the click's values in place of its macros.

    >>> landing_url("https://o.example/?c={click_id}", Click("CLK 1", "o", "p", "u"))
    'https://o.example/?c=CLK%201'
    """
    values = {
        "click_id": click.click_id,
        "offer_id": click.offer_id,
        "partner_id": click.partner_id,
        "user_id": click.user_id,
        **{name: click.subs.get(name, "") for name in SUB_IDS},
    }
    url = template
    for name, value in values.items():
        macro = "{" + name + "}"
        if macro in url:
            url = url.replace(macro, quote(value, safe=""))
    return url


class ClickResource:
    def __init__(self, ctx: EdgeContext) -> None:
        self.ctx = ctx

    def on_get(self, req: falcon.Request, resp: falcon.Response, offer_id: str) -> None:
        params = {k: (v[-1] if isinstance(v, list) else v) for k, v in req.params.items()}
        for name in ("partner", "user"):
            if not params.get(name, "").strip():
                raise falcon.HTTPBadRequest(description=f"{name} required")
        try:
            offer = self.ctx.store.get_offer(offer_id)
        except NotFound:
            raise falcon.HTTPNotFound(description=f"offer {offer_id!r} not found") from None
        if not offer.active:
            raise falcon.HTTPNotFound(description=f"offer {offer_id!r} is not active")
        click = self.ctx.store.add_click(
            offer_id=offer_id,
            partner_id=params["partner"].strip(),
            user_id=params["user"].strip(),
            ip=caller_ip(req, self.ctx),
            subs={name: params[name] for name in SUB_IDS if params.get(name)},
            offer=offer,
            fallback_window_s=self.ctx.settings.fallback_window_s,
        )
        # Every click is new: no cache may replay a redirect (and its click_id).
        resp.cache_control = ["no-store"]
        if offer.url:
            resp.status = falcon.HTTP_302
            resp.location = landing_url(offer.url, click)
            resp.data = orjson.dumps({"status": "success", "click_id": click.click_id})
        else:
            resp.data = orjson.dumps(
                {"status": "success", "click_id": click.click_id, "offer_id": offer.offer_id}
            )


def register(app: falcon.App, ctx: EdgeContext) -> None:
    app.add_route("/click/{offer_id}", ClickResource(ctx))
