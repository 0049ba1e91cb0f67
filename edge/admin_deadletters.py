"""Dead letters in the admin API (SPEC §7): a page of them, and replay by id or partner.

    GET  /api/admin/dead-letters?partner=&page=&per_page=
         → {"dead_letters": [...], "page": 1, "pages": N, "total": T}, newest first
    POST /api/admin/dead-letters/replay   {"ids": ["3:1714…-0", ...]} or {"partner": "p1"}
         → {"status": "success", "replayed": N, "ids": [...], "not_found": [...]}

A row's ``id`` is ``<partition>:<stream entry id>`` (``deadletters.letter_id``): two
partitions can hold the same entry id, so replay by id takes exactly the listed ids.

A dead postback's fields hold its source key, a secret: rows show the source's name and
only the key's last four characters, as the logs do.
"""

from __future__ import annotations

import contextlib

import falcon
import orjson

from core.validation import ValidationError
from edge.admin_auth import AdminResource, authorize, check_entry_id, paging
from edge.admin_config import json_body
from storage import deadletters, logs

#: Most dead letters one page request reads (to count the total); past it the answer says
#: ``"truncated": true``. Dead letters are few on a healthy relay.
MAX_SCAN = 20_000
MAX_IDS = 1000


def dead_letter_row(letter: dict, source_names: dict[str, str], partner_names: dict) -> dict:
    """A dead letter as people read it: times in ISO UTC, the job's payload lifted out."""
    data = letter["data"]
    row = {
        "id": deadletters.letter_id(letter["partition"], letter["id"]),
        "partition": letter["partition"],
        "kind": letter["kind"],
        "partner_id": letter["partner_id"],
        "partner_name": partner_names.get(letter["partner_id"], ""),
        "log_id": letter["log_id"],
        "error": letter["error"],
        "time": logs.iso_ms(letter["time"]),
        "time_ms": letter["time"],
        "conversion_id": "",
        "attempt": None,
        "payload": {},
        "data": data,
    }
    if letter["kind"] == "delivery" and isinstance(data, dict):
        row["conversion_id"] = str(data.get("conversion_id") or "")
        row["attempt"] = data.get("attempt")
        payload = data.get("payload")
        row["payload"] = payload if isinstance(payload, dict) else {}
    elif letter["kind"] == "postback" and isinstance(data, dict):
        shown = dict(data)
        source_key = str(shown.pop("source", "") or "")
        shown["source"] = source_names.get(source_key, "")
        shown["source_key"] = logs.mask_key(source_key)
        if isinstance(shown.get("params"), str):
            with contextlib.suppress(orjson.JSONDecodeError):  # else shown as written
                shown["params"] = orjson.loads(shown["params"])
        row["data"] = shown
    return row


@falcon.before(authorize)
class DeadLetters(AdminResource):
    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        page, per_page = paging(req)
        partner = (req.get_param("partner") or "").strip() or None
        r, keys = self.ctx.redis, self.ctx.keys
        found = deadletters.list_dead_letters(r, keys, partner=partner, limit=MAX_SCAN)
        first = (page - 1) * per_page
        names = logs.source_names(r, keys)
        partners = {p.partner_id: p.name for p in self.ctx.store.list_partners()}
        rows = [dead_letter_row(x, names, partners) for x in found[first : first + per_page]]
        resp.media = {
            "dead_letters": rows,
            "page": page,
            "pages": -(-len(found) // per_page),
            "total": len(found),
        }
        if len(found) >= MAX_SCAN:
            resp.media["truncated"] = True


def _check_letter_id(value: object, partitions: int) -> None:
    """A dead-letter id as the listing gives it (``3:1714000000000-0``); else 400 naming ids."""
    text = value if isinstance(value, str) else ""
    place = deadletters.parse_letter_id(text, partitions)
    if place is None:
        raise ValidationError(
            "ids",
            f"must be dead-letter ids as listed (partition:entry id, partition below "
            f"{partitions}, such as 0:1714000000000-0), not {value!r}",
        )
    check_entry_id(place[1], "ids")


def _replay_request(body: dict, partitions: int) -> tuple[list[str] | None, str | None]:
    ids, partner = body.get("ids"), body.get("partner")
    if (ids is None) == (partner is None):
        raise ValidationError("body", 'give exactly one of "ids" or "partner"')
    if ids is not None:
        if not isinstance(ids, list) or not ids:
            raise ValidationError("ids", "must be a non-empty list of dead-letter ids")
        if len(ids) > MAX_IDS:
            raise ValidationError("ids", f"at most {MAX_IDS} per request")
        for letter_id in ids:
            _check_letter_id(letter_id, partitions)
        return ids, None
    if not isinstance(partner, str) or not partner.strip():
        raise ValidationError("partner", "must be a partner_id")
    return None, partner.strip()


@falcon.before(authorize)
class Replay(AdminResource):
    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        r, keys = self.ctx.redis, self.ctx.keys
        ids, partner = _replay_request(json_body(req, ("ids", "partner")), keys.partitions)
        if ids is not None:
            done = deadletters.replay_ids(r, keys, ids)
            missing = [i for i in dict.fromkeys(ids) if i not in set(done)]
            resp.media = {
                "status": "success",
                "replayed": len(done),
                "ids": done,
                "not_found": missing,
            }
            return
        count = deadletters.replay(r, keys, partner=partner)
        resp.media = {"status": "success", "replayed": count, "partner": partner}


def register(app: falcon.App, ctx) -> None:
    app.add_route("/api/admin/dead-letters", DeadLetters(ctx))
    app.add_route("/api/admin/dead-letters/replay", Replay(ctx))
