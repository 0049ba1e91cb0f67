"""``GET /openapi.json``: an OpenAPI 3.1 document of every edge and admin path.

Written by hand, not generated from the routes, so it can say what each parameter and
answer means; ``tests/test_openapi.py`` walks the routes registered on the app and fails
when one (or one of its methods) is missing here.
"""

from __future__ import annotations

import falcon
import orjson

from core.clicks import SUB_IDS
from core.postback import STATUSES
from storage.formats import OUTCOMES

POSTBACK_STATUSES = list(STATUSES)


# -- small builders -----------------------------------------------------------------------
def _ref(name: str) -> dict:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict, description: str) -> dict:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _error(description: str) -> dict:
    return _json(_ref("Error"), description)


def _query(name: str, description: str, schema: dict | None = None, **extra) -> dict:
    return {
        "name": name,
        "in": "query",
        "description": description,
        "schema": schema or {"type": "string"},
        **extra,
    }


def _path(name: str, description: str) -> dict:
    return {
        "name": name,
        "in": "path",
        "required": True,
        "description": description,
        "schema": {"type": "string"},
    }


def _obj(properties: dict, required: list[str] | None = None, **extra) -> dict:
    schema = {"type": "object", "properties": properties, **extra}
    if required:
        schema["required"] = required
    return schema


STR = {"type": "string"}
INT = {"type": "integer"}
BOOL = {"type": "boolean"}
AMOUNT = {"type": "string", "pattern": r"^-?\d+\.\d{2}$", "examples": ["2.80"]}
ANY_OBJECT = {"type": "object", "additionalProperties": True}

ADMIN_ERRORS = {
    "401": _error("Missing or wrong bearer token"),
    "403": _error("Admin API off: no POSTBACK_ADMIN_TOKEN configured"),
    "429": _error("More than 20 wrong tokens from this address this minute (Retry-After)"),
    "503": _error("Redis unreachable"),
}


def _admin(summary: str, responses: dict, *, parameters=(), body: dict | None = None) -> dict:
    operation = {
        "tags": ["admin"],
        "summary": summary,
        "security": [{"bearer": []}],
        "responses": {**responses, **ADMIN_ERRORS},
    }
    if parameters:
        operation["parameters"] = list(parameters)
    if body is not None:
        operation["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": body}},
        }
    return operation


# -- schemas ----------------------------------------------------------------------------------
_NAME_MAP = {"type": "object", "additionalProperties": STR}
SOURCE_PARAMS = {
    **_NAME_MAP,
    "description": "aliases: our field -> the name the source sends, e.g. "
    '{"click_id": "aff_sub"}; replaced as a whole by PATCH',
}
SOURCE_STATUS_MAP = {
    "type": "object",
    "additionalProperties": {"type": "string", "enum": POSTBACK_STATUSES},
    "description": 'status values the source sends -> ours, e.g. {"1": "approved"}',
}
PARTNER_PARAMS = {
    **_NAME_MAP,
    "description": 'our field -> the name the partner wants, e.g. {"click_id": "subid"}',
}
PARTNER_STATUS_MAP = {
    **_NAME_MAP,
    "description": 'our status -> the value the partner wants, e.g. {"approved": "1"}',
}
SOURCE_DIALECT_NOTE = (
    "A source with parameter aliases (its `params`, e.g. `aff_sub` for `click_id`) and a "
    "status map (its `status_map`, e.g. `1` for `approved`) is read in its own names "
    "first: an aliased name counts as its field and is not kept as custom data, the "
    "field's own name still works, and a mapped status value becomes the status."
)
GOALS = {
    "type": "object",
    "additionalProperties": {
        "oneOf": [
            _obj({"revshare": {"type": ["string", "number"]}}, ["revshare"]),
            _obj({"fixed": {"type": ["string", "number"]}}, ["fixed"]),
        ]
    },
    "description": 'per-goal payout models, e.g. {"install": {"fixed": "1.00"}, '
    '"purchase": {"revshare": "50"}}',
}
HOLD_S = {
    "type": "integer",
    "minimum": 0,
    "description": "seconds an approval's points are held before they are credited; 0 = none",
}

SCHEMAS = {
    "Error": _obj({"status": {"const": "error"}, "error": STR}, ["status", "error"]),
    "Accepted": _obj(
        {"status": {"const": "success"}, "message": STR, "log_id": STR},
        ["status", "message", "log_id"],
    ),
    "BatchResult": _obj(
        {
            "status": {"const": "success"},
            "accepted": INT,
            "rejected": INT,
            "results": {
                "type": "array",
                "items": _obj({"index": INT, "log_id": STR, "error": STR}, ["index"]),
            },
        }
    ),
    "Postback": _obj(
        {
            "click_id": STR,
            "status": {"type": "string", "enum": POSTBACK_STATUSES},
            "payout": {"type": ["string", "number"], "examples": ["5.00"]},
            "currency": {"type": "string", "examples": ["USD"]},
            "transaction_id": STR,
            "offer_id": STR,
            "survey_id": STR,
            "goal": STR,
            "reason": STR,
        },
        additionalProperties=True,
        description="Any other field is kept verbatim as custom data.",
    ),
    "ReceivedLog": _obj(
        {
            "log_id": STR,
            "time": {"type": "string", "format": "date-time"},
            "time_ms": INT,
            "source": {"type": "string", "description": "the source's name"},
            "source_key": {"type": "string", "description": "last 4 characters of the key"},
            "method": STR,
            "ip": STR,
            "status": STR,
            "outcome": {"type": "string", "enum": list(OUTCOMES)},
            "reason": STR,
            "conversion_id": STR,
            "click_id": STR,
            "offer_id": STR,
            "partner_id": STR,
            "user_id": STR,
            "matched_by": STR,
            "warning": STR,
            "transaction_id": STR,
            "goal": STR,
            "payout": AMOUNT,
            "currency": STR,
            "params": ANY_OBJECT,
        }
    ),
    "ForwardedLog": _obj(
        {
            "id": STR,
            "time": {"type": "string", "format": "date-time"},
            "time_ms": INT,
            "partner_id": STR,
            "partner_name": STR,
            "partner_email": STR,
            "method": STR,
            "url": STR,
            "success": BOOL,
            "result": {"type": "string", "enum": ["delivered", "retry", "failed", "dead-lettered"]},
            "status_code": {"type": ["integer", "null"]},
            "response_ms": {"type": ["integer", "null"]},
            "attempt": {"type": ["integer", "null"]},
            "error": STR,
            "response_body": STR,
            "log_id": STR,
            "conversion_id": STR,
            "payout": AMOUNT,
            "payload": ANY_OBJECT,
        }
    ),
    "StreamGroup": _obj(
        {
            "stream": STR,
            "group": STR,
            "length": INT,
            "lag": INT,
            "pending": INT,
            "oldest_pending_s": {"type": "number"},
            "consumers": {
                "type": "array",
                "items": _obj({"name": STR, "pending": INT, "idle_s": {"type": "number"}}),
            },
        }
    ),
    "Source": _obj(
        {
            "key": STR,
            "name": STR,
            "active": BOOL,
            "allow": {"type": "array", "items": STR},
            "has_secret": BOOL,
            "created": INT,
            "params": SOURCE_PARAMS,
            "status_map": SOURCE_STATUS_MAP,
        }
    ),
    "SourceInput": _obj(
        {
            "name": STR,
            "key": {"type": "string", "description": "optional; generated when absent"},
            "allow_ip": {"type": "array", "items": STR},
            "secret": STR,
            "params": SOURCE_PARAMS,
            "status_map": SOURCE_STATUS_MAP,
            "active": {"type": "boolean", "description": "PATCH only"},
        }
    ),
    "Offer": _obj(
        {
            "offer_id": STR,
            "name": STR,
            "payout_model": {"type": "string", "enum": ["revshare", "fixed"]},
            "revshare": {"type": ["string", "null"], "description": "percent, 0-100"},
            "fixed": {**AMOUNT, "type": ["string", "null"]},
            "currency": STR,
            "url": STR,
            "window_days": INT,
            "goals": GOALS,
            "hold_s": HOLD_S,
            "active": BOOL,
            "created": INT,
        }
    ),
    "OfferInput": _obj(
        {
            "offer_id": {"type": "string", "description": "POST only"},
            "name": STR,
            "revshare": {"type": ["number", "string"], "description": "give revshare or fixed"},
            "fixed": {"type": ["number", "string"]},
            "currency": STR,
            "url": STR,
            "window_days": INT,
            "goals": GOALS,
            "hold_s": HOLD_S,
            "active": {"type": "boolean", "description": "PATCH only"},
        }
    ),
    "Partner": _obj(
        {
            "partner_id": STR,
            "url": STR,
            "name": STR,
            "email": STR,
            "method": {"type": "string", "enum": ["GET", "POST"]},
            "scope": {"type": "string", "enum": ["own", "all"]},
            "active": BOOL,
            "allow_private": BOOL,
            "has_secret": BOOL,
            "created": INT,
            "params": PARTNER_PARAMS,
            "status_map": PARTNER_STATUS_MAP,
        }
    ),
    "PartnerInput": _obj(
        {
            "partner_id": {"type": "string", "description": "POST only"},
            "url": STR,
            "method": {"type": "string", "enum": ["GET", "POST"]},
            "scope": {"type": "string", "enum": ["own", "all"]},
            "secret": STR,
            "name": STR,
            "email": STR,
            "allow_private": BOOL,
            "params": PARTNER_PARAMS,
            "status_map": PARTNER_STATUS_MAP,
            "active": {"type": "boolean", "description": "PATCH only"},
        }
    ),
    "TestDistribution": _obj(
        {
            "status": {"const": "success"},
            "message": STR,
            "click_id": STR,
            "payload": ANY_OBJECT,
            "count": INT,
            "queued": {
                "type": "array",
                "items": _obj({"partner_id": STR, "name": STR, "method": STR, "job_id": STR}),
            },
        }
    ),
}


def _log_page(item: str) -> dict:
    return _obj(
        {
            "logs": {"type": "array", "items": _ref(item)},
            "page": INT,
            "pages": INT,
            "total": INT,
            "truncated": {
                "type": "boolean",
                "description": "present when only the newest 200,000 entries were counted",
            },
        },
        ["logs", "page", "pages", "total"],
    )


# -- paths --------------------------------------------------------------------------------------
KEY = _path("key", "the source's secret postback key")
POSTBACK_ERRORS = {
    "400": _error("Missing click_id/offer_id, a literal macro, or a bad field (named)"),
    "403": _error("Caller IP not in the source's allow-list"),
    "404": _error("Invalid postback key (unknown or inactive)"),
    "413": _error("Body too large (64 KiB single, 8 MiB batch)"),
    "414": _error("Query string over 64 KiB"),
    "429": _error("More than 20 invalid keys from this address this minute (Retry-After)"),
    "503": _error("Redis unreachable; retry (Retry-After)"),
}
POSTBACK_QUERY = [
    _query("click_id", "the click; required unless offer_id is given"),
    _query("status", "default approved", {"type": "string", "enum": POSTBACK_STATUSES}),
    _query("payout", "decimal 0 to 1,000,000; rounded half-up to the cent"),
    _query("currency", "3 letters; default the offer's"),
    *(_query(name, "optional") for name in ("transaction_id", "offer_id", "survey_id", "goal")),
    _query("reason", "optional"),
]
HOURS = _query("hours", "the last H hours (default 24)", {"type": "number", "exclusiveMinimum": 0})
PAGE = _query("page", "from 1", {"type": "integer", "minimum": 1, "default": 1})
PER_PAGE = _query(
    "per_page", "rows per page", {"type": "integer", "minimum": 1, "maximum": 500, "default": 50}
)
PARTNER = _query("partner", "only this partner_id")


def _entity_paths(plural: str, single: str, id_name: str, id_text: str) -> dict:
    schema, body = single.capitalize(), single.capitalize() + "Input"
    base = f"/api/admin/{plural}"
    item_id = _path(id_name, id_text)
    listing = _obj({plural: {"type": "array", "items": _ref(schema)}, "total": INT})
    invalid = {"400": _error("A field breaks a rule (named)")}
    missing = {"404": _error(f"Unknown {single}")}
    paths = {
        base: {
            "get": _admin(
                f"List {plural}",
                {"200": _json(listing, f"The {plural}"), "400": _error("active not true/false")},
                parameters=[_query("active", "true or false", BOOL)],
            ),
            "post": _admin(
                f"Create a {single}",
                {
                    "201": _json(_ref(schema), f"The new {single}"),
                    **invalid,
                    "409": _error("Duplicate id"),
                },
                body=_ref(body),
            ),
        },
        f"{base}/{{{id_name}}}": {
            "parameters": [item_id],
            "get": _admin(f"One {single}", {"200": _json(_ref(schema), single), **missing}),
            "patch": _admin(
                f"Change a {single}",
                {"200": _json(_ref(schema), f"The changed {single}"), **invalid, **missing},
                body=_ref(body),
            ),
        },
    }
    for action in ("deactivate", "activate"):
        paths[f"{base}/{{{id_name}}}/{action}"] = {
            "parameters": [item_id],
            "post": _admin(
                f"{action.capitalize()} a {single} (takes effect at once)",
                {"200": _json(_ref(schema), single), **missing},
            ),
        }
    return paths


def build_document() -> dict:
    test_distribution = _admin(
        "Queue a test postback to every active partner",
        {"200": _json(_ref("TestDistribution"), "Which partners were queued")},
    )
    paths = {
        "/postback/{key}": {
            "parameters": [KEY],
            "get": {
                "tags": ["postbacks"],
                "summary": "Receive a postback (query parameters; others kept as custom data)",
                "description": SOURCE_DIALECT_NOTE,
                "parameters": POSTBACK_QUERY,
                "responses": {"200": _json(_ref("Accepted"), "Durably queued"), **POSTBACK_ERRORS},
            },
            "post": {
                "tags": ["postbacks"],
                "summary": "Receive a postback (JSON object or form body)",
                "description": SOURCE_DIALECT_NOTE,
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {"schema": _ref("Postback")},
                        "application/x-www-form-urlencoded": {"schema": _ref("Postback")},
                    },
                },
                "responses": {"200": _json(_ref("Accepted"), "Durably queued"), **POSTBACK_ERRORS},
            },
        },
        "/postback/{key}/batch": {
            "parameters": [KEY],
            "post": {
                "tags": ["postbacks"],
                "summary": "Receive up to 10,000 postbacks (JSON array or NDJSON)",
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {
                            "schema": {"type": "array", "items": _ref("Postback")}
                        },
                        "application/x-ndjson": {"schema": STR},
                    },
                },
                "responses": {
                    "200": _json(_ref("BatchResult"), "Each item accepted or refused"),
                    **POSTBACK_ERRORS,
                },
            },
        },
        "/click/{offer_id}": {
            "parameters": [_path("offer_id", "the offer")],
            "get": {
                "tags": ["clicks"],
                "summary": "Record a click and redirect to the offer's landing URL",
                "parameters": [
                    _query("partner", "partner_id that sent the click", required=True),
                    _query("user", "user_id behind the click", required=True),
                    *(_query(name, "sub-id, passed on to partners") for name in SUB_IDS),
                ],
                "responses": {
                    "302": {
                        "description": "To the landing URL with {click_id} filled in",
                        "headers": {"Location": {"schema": STR}},
                    },
                    "200": _json(
                        _obj({"status": STR, "click_id": STR, "offer_id": STR}),
                        "The click (offer without landing URL)",
                    ),
                    "400": _error("partner or user missing, or invalid"),
                    "404": _error("Unknown or inactive offer"),
                    "503": _error("Redis unreachable"),
                },
            },
        },
        "/api/analytics/postback/test": {
            "get": {
                "tags": ["postbacks"],
                "summary": "How to send postbacks",
                "responses": {"200": _json(ANY_OBJECT, "status online, endpoint and params")},
            }
        },
        "/health": {
            "get": {
                "tags": ["ops"],
                "summary": "The process is up (never touches Redis)",
                "responses": {"200": _json(_obj({"status": STR}), "Up")},
            }
        },
        "/ready": {
            "get": {
                "tags": ["ops"],
                "summary": "Redis is reachable",
                "responses": {
                    "200": _json(_obj({"status": STR}), "Ready"),
                    "503": _error("Redis unreachable"),
                },
            }
        },
        "/metrics": {
            "get": {
                "tags": ["ops"],
                "summary": "Prometheus metrics (no token: internal network only)",
                "responses": {
                    "200": {
                        "description": "Prometheus text format",
                        "content": {"text/plain": {"schema": STR}},
                    }
                },
            }
        },
        "/openapi.json": {
            "get": {
                "tags": ["ops"],
                "summary": "This document",
                "responses": {"200": _json(ANY_OBJECT, "OpenAPI 3.1")},
            }
        },
        "/api/admin/received-postbacks": {
            "get": _admin(
                "Received postbacks, newest first",
                {"200": _json(_log_page("ReceivedLog"), "One page"), "400": _error("Bad query")},
                parameters=[
                    HOURS,
                    PAGE,
                    PER_PAGE,
                    _query("source", "a source's key or name"),
                    _query("status", "the postback's status", {"enum": POSTBACK_STATUSES}),
                    _query("outcome", "the matcher's outcome", {"enum": list(OUTCOMES)}),
                    PARTNER,
                ],
            )
        },
        "/api/admin/partner-distribution-logs": {
            "get": _admin(
                "Delivery attempts to partners, newest first",
                {"200": _json(_log_page("ForwardedLog"), "One page"), "400": _error("Bad query")},
                parameters=[
                    HOURS,
                    _query("success", "true or false", BOOL),
                    PARTNER,
                    PAGE,
                    PER_PAGE,
                ],
            )
        },
        "/api/diagnostic/partner-distribution-status": {
            "get": _admin(
                "Partners, recent traffic, stream lag, dead letters and health",
                {
                    "200": _json(
                        _obj(
                            {
                                "health": {"type": "string", "enum": ["ok", "degraded"]},
                                "reasons": {"type": "array", "items": STR},
                                "active_partners": INT,
                                "partners": INT,
                                "recent_received": ANY_OBJECT,
                                "recent_deliveries": ANY_OBJECT,
                                "streams": {"type": "array", "items": _ref("StreamGroup")},
                                "retry_queue": INT,
                                "dead_letters": INT,
                                "paused_partners": {"type": "array", "items": ANY_OBJECT},
                            }
                        ),
                        "Status",
                    )
                },
            )
        },
        "/api/admin/test-distribution": {"post": test_distribution},
        "/test-distribution-now": {"get": test_distribution},
        "/api/admin/users/{user_id}": {
            "parameters": [_path("user_id", "the user")],
            "get": _admin(
                "A user's points balance",
                {
                    "200": _json(
                        _obj(
                            {
                                "user_id": STR,
                                "points": {**AMOUNT, "description": "spendable now"},
                                "held": {**AMOUNT, "description": "held until holds end"},
                            }
                        ),
                        "Balance",
                    )
                },
            ),
        },
        "/api/admin/conversions/{conversion_id}": {
            "parameters": [_path("conversion_id", "the conversion")],
            "get": _admin(
                "A conversion with its status history",
                {"200": _json(ANY_OBJECT, "The conversion"), "404": _error("Unknown conversion")},
            ),
        },
        **_entity_paths("sources", "source", "key", "the source's key"),
        **_entity_paths("offers", "offer", "offer_id", "the offer"),
        **_entity_paths("partners", "partner", "partner_id", "the partner"),
        **admin_page_paths(),
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "postback-relay",
            "version": "0.1.0",
            "description": "Takes affiliate postbacks in, matches clicks, credits points "
            "exactly once and forwards conversions to partners.",
        },
        "paths": paths,
        "components": {
            "schemas": {**SCHEMAS, **ADMIN_PAGE_SCHEMAS},
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }


# -- the admin page and what it reads (edge.admin_page, admin_deadletters, admin_story) ------
ADMIN_PAGE_SCHEMAS = {
    "DeadLetter": _obj(
        {
            "id": {
                "type": "string",
                "pattern": "^[0-9]+:[0-9]+-[0-9]+$",
                "description": "partition:stream entry id, the id replay takes (two "
                "partitions can hold the same stream entry id)",
            },
            "partition": INT,
            "kind": {"type": "string", "enum": ["delivery", "postback"]},
            "partner_id": STR,
            "partner_name": STR,
            "log_id": STR,
            "conversion_id": STR,
            "error": STR,
            "time": {"type": "string", "format": "date-time"},
            "time_ms": INT,
            "attempt": {"type": ["integer", "null"]},
            "payload": ANY_OBJECT,
            "data": {
                "description": "the job, or the postback's fields (source by name, key masked)"
            },
        },
        ["id", "kind", "partner_id", "error", "time_ms"],
    ),
    "ReplayRequest": {
        "oneOf": [
            _obj(
                {
                    "ids": {
                        "type": "array",
                        "items": {
                            "type": "string",
                            "pattern": "^[0-9]+:[0-9]+(-[0-9]+)?$",
                            "description": "a dead letter's id as listed",
                        },
                        "minItems": 1,
                        "maxItems": 1000,
                    }
                },
                ["ids"],
                additionalProperties=False,
            ),
            _obj(
                {"partner": {"type": "string", "minLength": 1}},
                ["partner"],
                additionalProperties=False,
            ),
        ]
    },
    "ReplayResult": _obj(
        {
            "status": {"const": "success"},
            "replayed": INT,
            "ids": {"type": "array", "items": STR},
            "not_found": {"type": "array", "items": STR},
            "partner": STR,
        },
        ["status", "replayed"],
    ),
    "PostbackStory": _obj(
        {
            "postback": {"oneOf": [_ref("ReceivedLog"), {"type": "null"}]},
            "conversion": {"oneOf": [ANY_OBJECT, {"type": "null"}]},
            "deliveries": {"type": "array", "items": _ref("ForwardedLog")},
        },
        ["postback", "conversion", "deliveries"],
    ),
}


LAG_TOTAL = _obj({"lag": INT, "pending": INT}, ["lag", "pending"])


def admin_page_paths() -> dict:
    html = {"description": "The page", "content": {"text/html": {"schema": STR}}}
    return {
        "/admin": {
            "get": {
                "tags": ["admin page"],
                "summary": "The admin page for people (needs no token; its calls do)",
                "responses": {"200": html},
            }
        },
        "/admin/{name}": {
            "parameters": [
                _path("name", "one of the page's files: main.js (and its modules), admin.css")
            ],
            "get": {
                "tags": ["admin page"],
                "summary": "The admin page's script modules and style sheet",
                "responses": {
                    "200": {
                        "description": "The file",
                        "content": {
                            "text/javascript": {"schema": STR},
                            "text/css": {"schema": STR},
                        },
                    },
                    "404": _error("No such file"),
                },
            },
        },
        "/api/admin/dead-letters": {
            "get": _admin(
                "Dead letters of every partition, newest first",
                {
                    "200": _json(
                        _obj(
                            {
                                "dead_letters": {"type": "array", "items": _ref("DeadLetter")},
                                "page": INT,
                                "pages": INT,
                                "total": INT,
                                "truncated": BOOL,
                            },
                            ["dead_letters", "page", "pages", "total"],
                        ),
                        "One page",
                    ),
                    "400": _error("A bad query parameter (named)"),
                },
                parameters=[PARTNER, PAGE, PER_PAGE],
            )
        },
        "/api/admin/dead-letters/replay": {
            "post": _admin(
                "Put dead letters back to work, by id or every one of a partner",
                {
                    "200": _json(_ref("ReplayResult"), "How many were replayed"),
                    "400": _error("Neither ids nor partner, or a bad id (named)"),
                },
                body=_ref("ReplayRequest"),
            )
        },
        "/api/admin/postbacks/{log_id}": {
            "parameters": [_path("log_id", "the log_id the edge answered")],
            "get": _admin(
                "A postback's story: received entry, conversion, every delivery attempt",
                {
                    "200": _json(_ref("PostbackStory"), "The story"),
                    "400": _error("log_id is not a log id"),
                    "404": _error("Not in the logs (not matched yet, or trimmed)"),
                },
            ),
        },
        "/api/admin/conversions/{conversion_id}/deliveries": {
            "parameters": [_path("conversion_id", "the conversion")],
            "get": _admin(
                "A conversion and every delivery attempt of its events",
                {
                    "200": _json(
                        _obj(
                            {
                                "conversion": ANY_OBJECT,
                                "deliveries": {"type": "array", "items": _ref("ForwardedLog")},
                            },
                            ["conversion", "deliveries"],
                        ),
                        "The conversion and its attempts",
                    ),
                    "404": _error("Unknown conversion"),
                },
            ),
        },
        "/api/admin/lag": {
            "get": _admin(
                "Each consumer group's lag and pending now, retry queue, dead letters, paused partners",
                {
                    "200": _json(
                        _obj(
                            {
                                "groups": {"type": "array", "items": _ref("StreamGroup")},
                                "retry_queue": INT,
                                "dead_letters": INT,
                                "paused_partners": {"type": "array", "items": ANY_OBJECT},
                                "time_ms": INT,
                                "totals": {
                                    "type": "object",
                                    "description": "per group name, summed over partitions",
                                    "additionalProperties": LAG_TOTAL,
                                },
                                "history": {
                                    "type": "array",
                                    "description": "samples of the last 10 minutes, oldest first",
                                    "items": _obj(
                                        {
                                            "time_ms": INT,
                                            "groups": {
                                                "type": "object",
                                                "additionalProperties": LAG_TOTAL,
                                            },
                                        },
                                        ["time_ms", "groups"],
                                    ),
                                },
                            },
                            [
                                "groups",
                                "retry_queue",
                                "dead_letters",
                                "paused_partners",
                                "time_ms",
                                "totals",
                                "history",
                            ],
                        ),
                        "The lag report",
                    )
                },
            )
        },
    }


class OpenAPIResource:
    def __init__(self) -> None:
        self.body = orjson.dumps(build_document())

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.content_type = falcon.MEDIA_JSON
        resp.data = self.body


def register(app: falcon.App, ctx) -> None:
    app.add_route("/openapi.json", OpenAPIResource())
