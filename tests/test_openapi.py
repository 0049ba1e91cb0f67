"""``GET /openapi.json`` describes every route the app serves, with each of its methods."""

from __future__ import annotations

import re

import falcon.inspect
import pytest
from falcon import testing

from edge.app import create_app
from edge.openapi import build_document

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


def shape(path: str) -> str:
    """A template with its field names blanked: '/postback/{source_key}' → '/postback/{}'."""
    return re.sub(r"\{[^}]*\}", "{}", path)


def documented(document: dict) -> set[tuple[str, str]]:
    return {
        (method.upper(), shape(path))
        for path, item in document["paths"].items()
        for method in item
        if method in ("get", "post", "put", "patch", "delete", "head", "options")
    }


@pytest.fixture
def app(settings, redis_client):
    return create_app(settings, client=redis_client)


def test_every_registered_route_and_method_is_documented(app):
    served = {
        (method.method, shape(route.path))
        for route in falcon.inspect.inspect_routes(app)
        for method in route.methods
        if not method.internal  # falcon's own OPTIONS and 405 responders
    }
    assert len(served) > 30  # the walk found the app's routes
    missing = served - documented(build_document())
    assert not missing, f"routes missing from /openapi.json: {sorted(missing)}"


def test_spec_paths_are_documented():
    assert {(m, shape(p)) for m, p in SPEC_PATHS} <= documented(build_document())


def test_served_document_is_openapi_3_1(app):
    result = testing.TestClient(app).simulate_get("/openapi.json")
    assert result.status_code == 200
    assert result.headers["content-type"].startswith("application/json")
    document = result.json
    assert document["openapi"].startswith("3.1")
    assert document == build_document()


def test_every_path_parameter_is_declared():
    for path, item in build_document()["paths"].items():
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


def test_admin_operations_need_the_bearer_token():
    for path, item in build_document()["paths"].items():
        if path.startswith(("/api/admin", "/api/diagnostic", "/test-distribution-now")):
            for method, operation in item.items():
                if method != "parameters":
                    assert operation["security"] == [{"bearer": []}], (method, path)
                    assert {"401", "403"} <= set(operation["responses"])


def test_document_validates_against_the_openapi_schema():
    validator = pytest.importorskip("openapi_spec_validator")
    validator.validate(build_document())


def test_the_document_shows_dialects_goals_holds_and_held_points():
    from edge.openapi import build_document

    schemas = build_document()["components"]["schemas"]
    for name in ("Source", "SourceInput", "Partner", "PartnerInput"):
        assert {"params", "status_map"} <= set(schemas[name]["properties"]), name
    for name in ("Offer", "OfferInput"):
        assert {"goals", "hold_s"} <= set(schemas[name]["properties"]), name
    user = build_document()["paths"]["/api/admin/users/{user_id}"]["get"]
    balance = user["responses"]["200"]["content"]["application/json"]["schema"]
    assert {"points", "held"} <= set(balance["properties"])
