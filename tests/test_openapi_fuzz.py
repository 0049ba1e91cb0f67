"""Schemathesis against the edge's own ``/openapi.json`` (issue #8, deliverable 4).

Every operation of the document is called with generated input, in-process (WSGI) on
real Redis, with the admin token: never a 5xx, answers as the document declares them,
and as many input stream entries as postbacks answered 200.

Schemathesis reads the document when this module is collected, before any fixture
runs; the app it calls is made by the module fixture (its own namespace, deleted
afterwards), which first checks that the app serves exactly that document.
"""

from __future__ import annotations

import uuid

import orjson
import pytest
import schemathesis
from falcon import testing
from hypothesis import settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import content_type_conformance, status_code_conformance

from core.config import Settings
from core.sources import Source
from edge.app import create_app
from edge.openapi import load_document
from storage.redis_client import delete_namespace
from tests import conftest

TOKEN = "a-long-enough-admin-token"
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance]

# The batch also takes NDJSON, which the document gives as a string: send it as text.
schemathesis.serializer.alias("application/x-ndjson", "text/plain")

_edge: list = []  # the app under test, once the fixture made it


def edge_wsgi(environ, start_response):
    return _edge[0](environ, start_response)


schema = schemathesis.openapi.from_dict(load_document())
schema.app = edge_wsgi


@pytest.fixture(scope="module")
def source():
    namespace = "t" + uuid.uuid4().hex[:12]
    app = create_app(Settings(redis_url=conftest.REDIS_URL, namespace=namespace, admin_token=TOKEN))
    served = testing.TestClient(app).simulate_get("/openapi.json")
    assert orjson.loads(served.content) == orjson.loads(orjson.dumps(load_document()))
    _edge.append(app)
    try:
        yield app.ctx.store.add_source(Source.build(name="fuzzed"))
    finally:
        _edge.clear()
        delete_namespace(app.ctx.redis, namespace)
        app.ctx.redis.close()


@schema.parametrize()
@settings(max_examples=30)  # per operation; ~40 operations
def test_every_operation_answers_as_documented_and_never_a_5xx(case, source):
    r, keys = _edge[0].ctx.redis, _edge[0].ctx.keys

    def entries() -> int:  # postbacks spread over the partitions by conversion identity
        return sum(r.xlen(keys.input_stream(n)) for n in keys.all_partitions())

    posting = case.path.startswith("/postback/") and case.method in ("GET", "POST")
    if posting:
        case.path_parameters["key"] = source.key  # a real source: the write path runs
    before = entries()
    response = case.call_and_validate(headers={"Authorization": f"Bearer {TOKEN}"}, checks=CHECKS)
    written = entries() - before
    expected = 0
    if posting and response.status_code == 200:
        expected = response.json().get("accepted", 1) if case.path.endswith("/batch") else 1
    assert written == expected, (case.method, case.path, response.status_code)
