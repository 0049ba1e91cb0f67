"""``GET /openapi.json``: the OpenAPI 3.1 document kept in ``edge/openapi.json``.

The document is data, written by hand so it can say what each parameter and answer
means; edit the JSON file. ``tests/test_openapi.py`` holds it to the code: it
validates, every route the app serves is in it with its methods and every path in it
is served, and the lists and limits it repeats (statuses, outcomes, delivery results,
sub-ids, page size, body and batch limits) are the code's.
"""

from __future__ import annotations

from importlib import resources

import falcon
import orjson


def load_document() -> dict:
    """The document as a dict (read from the package, so an installed copy has it too)."""
    return orjson.loads(resources.files("edge").joinpath("openapi.json").read_bytes())


class OpenAPIResource:
    def __init__(self) -> None:
        self.body = orjson.dumps(load_document())  # compact: the file is indented for people

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.content_type = falcon.MEDIA_JSON
        resp.data = self.body


def register(app: falcon.App, ctx) -> None:
    app.add_route("/openapi.json", OpenAPIResource())
