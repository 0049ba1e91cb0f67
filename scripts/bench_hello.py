"""The edge benchmark's yardstick: a hello-world Falcon app for stock ``waitress-serve``.

waitress-serve --listen=127.0.0.1:8080 scripts.bench_hello:app
"""

from __future__ import annotations

import falcon


class Hello:
    def on_get(self, req: falcon.Request, resp: falcon.Response, key: str = "") -> None:
        resp.text = "Hello, World!"


app = falcon.App()
app.add_route("/postback/{key}", Hello())
