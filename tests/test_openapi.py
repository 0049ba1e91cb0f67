"""``GET /openapi.json`` describes exactly the routes the app serves, and what it
repeats from the code (statuses, outcomes, sub-ids, limits) is the code's."""

from __future__ import annotations

import re

import falcon.inspect
import openapi_spec_validator
import pytest
from falcon import testing

from core.clicks import SUB_IDS
from core.money import MAX_AMOUNT
from core.postback import MAX_BATCH_BODY, MAX_BATCH_ITEMS, MAX_SINGLE_BODY, STATUSES
from edge import admin, admin_deadletters, throttle
from edge.admin_auth import MAX_PER_PAGE
from edge.app import create_app
from edge.openapi import load_document
from storage.formats import DELIVERY_RESULTS, OUTCOMES

METHODS = ("get", "post", "put", "patch", "delete", "head", "options")

#: Paths SPEC §3 names, which must be described whether or not their module is loaded.
SPEC_PATHS = {
    ("GET", "/postback/{key}"),
    ("POST", "/postback/{key}"),
    ("POST", "/postback/{key}/batch"),
    ("GET", "/click/{offer_id}"),
    ("GET", "/api/analytics/postback/test"),
    ("GET", "/health"),
    ("GET", "/ready"),
    ("GET", "/metrics"),
    ("GET", "/openapi.json"),
}


def documented(document: dict) -> set[tuple[str, str]]:
    return {
        (method.upper(), path)
        for path, item in document["paths"].items()
        for method in item
        if method in METHODS
    }


def served_routes(app) -> set[tuple[str, str]]:
    """Every (method, path template) the app's router answers, from its add_route calls."""
    return {
        (method.method, route.path)
        for route in falcon.inspect.inspect_routes(app)
        for method in route.methods
        if not method.internal  # falcon's own OPTIONS and 405 responders
    }


@pytest.fixture
def app(settings, redis_client):
    return create_app(settings, client=redis_client)


@pytest.fixture(scope="module")
def document() -> dict:
    return load_document()


def test_every_served_route_is_documented_and_every_documented_path_is_served(app, document):
    served = served_routes(app)
    assert len(served) > 30  # the walk found the app's routes
    assert sorted(served - documented(document)) == [], "served, missing from /openapi.json"
    assert sorted(documented(document) - served) == [], "in /openapi.json, not served"


def test_spec_paths_are_documented(document):
    assert not SPEC_PATHS - documented(document)


def test_served_document_is_openapi_3_1(app, document):
    result = testing.TestClient(app).simulate_get("/openapi.json")
    assert result.status_code == 200
    assert result.headers["content-type"].startswith("application/json")
    assert result.json["openapi"].startswith("3.1")
    assert result.json == document


def test_document_validates_against_the_openapi_schema(document):
    openapi_spec_validator.validate(document)


def test_every_path_parameter_is_declared(document):
    for path, item in document["paths"].items():
        names = set(re.findall(r"\{([^}]+)\}", path))
        for method, operation in item.items():
            if method == "parameters":
                continue
            declared = {
                p["name"]
                for p in [*item.get("parameters", []), *operation.get("parameters", [])]
                if p["in"] == "path"
            }
            assert declared == names, (method, path)
            assert operation["responses"], (method, path)


def test_admin_operations_need_the_bearer_token(document):
    for path, item in document["paths"].items():
        if path.startswith(("/api/admin", "/api/diagnostic", "/test-distribution-now")):
            for method, operation in item.items():
                if method != "parameters":
                    assert operation["security"] == [{"bearer": []}], (method, path)
                    assert {"401", "403"} <= set(operation["responses"])


def test_the_document_shows_dialects_goals_holds_and_held_points(document):
    schemas = document["components"]["schemas"]
    for name in ("Source", "SourceInput", "Partner", "PartnerInput"):
        assert {"params", "status_map"} <= set(schemas[name]["properties"]), name
    for name in ("Offer", "OfferInput"):
        assert {"goals", "hold_s"} <= set(schemas[name]["properties"]), name
    user = document["paths"]["/api/admin/users/{user_id}"]["get"]
    balance = user["responses"]["200"]["content"]["application/json"]["schema"]
    assert {"points", "held"} <= set(balance["properties"])


# -- what the document repeats from the code ----------------------------------------------
def query_parameter(document: dict, path: str, name: str, method: str = "get") -> dict:
    (parameter,) = [
        p for p in document["paths"][path][method].get("parameters", []) if p["name"] == name
    ]
    return parameter


def test_status_lists_are_the_postback_statuses(document):
    schemas = document["components"]["schemas"]
    enums = {
        "Postback.status": schemas["Postback"]["properties"]["status"]["enum"],
        "GET /postback status": query_parameter(document, "/postback/{key}", "status")["schema"][
            "enum"
        ],
        "received-postbacks status": query_parameter(
            document, "/api/admin/received-postbacks", "status"
        )["schema"]["enum"],
    }
    for name in ("Source", "SourceInput"):
        status_map = schemas[name]["properties"]["status_map"]
        enums[f"{name}.status_map"] = status_map["additionalProperties"]["enum"]
    assert enums == dict.fromkeys(enums, list(STATUSES))


def test_outcome_and_result_lists_are_the_logs(document):
    schemas = document["components"]["schemas"]
    assert schemas["ReceivedLog"]["properties"]["outcome"]["enum"] == list(OUTCOMES)
    outcome = query_parameter(document, "/api/admin/received-postbacks", "outcome")
    assert outcome["schema"]["enum"] == list(OUTCOMES)
    assert schemas["ForwardedLog"]["properties"]["result"]["enum"] == list(DELIVERY_RESULTS)


def test_a_click_documents_every_sub_id(document):
    names = [p["name"] for p in document["paths"]["/click/{offer_id}"]["get"]["parameters"]]
    assert names == ["partner", "user", *SUB_IDS]


def test_limits_are_the_codes(document):
    paths, schemas = document["paths"], document["components"]["schemas"]
    for path in (
        "/api/admin/received-postbacks",
        "/api/admin/partner-distribution-logs",
        "/api/admin/dead-letters",
    ):
        assert query_parameter(document, path, "per_page")["schema"]["maximum"] == MAX_PER_PAGE
    ids = schemas["ReplayRequest"]["oneOf"][0]["properties"]["ids"]
    assert ids["maxItems"] == admin_deadletters.MAX_IDS
    batch = paths["/postback/{key}/batch"]["post"]
    assert f"up to {MAX_BATCH_ITEMS:,} postbacks" in batch["summary"].lower()
    too_large = batch["responses"]["413"]["description"]
    assert f"{MAX_SINGLE_BODY // 1024} KiB single, {MAX_BATCH_BODY // 2**20} MiB batch" in too_large
    assert f"{throttle.LIMIT} invalid keys" in batch["responses"]["429"]["description"]
    guesses = document["components"]["responses"]["TokenGuesses"]["description"]
    assert f"{throttle.LIMIT} wrong tokens" in guesses
    payout = query_parameter(document, "/postback/{key}", "payout")
    assert f"0 to {int(MAX_AMOUNT):,}" in payout["description"]
    for path in ("/api/admin/received-postbacks", "/api/admin/partner-distribution-logs"):
        listing = paths[path]["get"]["responses"]["200"]["content"]["application/json"]
        truncated = listing["schema"]["properties"]["truncated"]["description"]
        assert f"newest {admin.MAX_SCAN:,} entries" in truncated
