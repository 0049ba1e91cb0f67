"""``GET /admin``: the admin page for people (SPEC §7 "Admin page").

Plain HTML, CSS and JavaScript committed in ``edge/admin_static/`` and read once at start:
no build step, nothing fetched from elsewhere when the page loads. The page itself needs
no token; every call it makes to the admin API does (a bearer header, never the URL).
A strict Content-Security-Policy means only these files' own script runs: even a value
that slipped into the page as markup could not execute.
"""

from __future__ import annotations

from pathlib import Path

import falcon

STATIC = Path(__file__).with_name("admin_static")
TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
}
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)


def load_assets() -> dict[str, tuple[bytes, str]]:
    """Every file of the page, by name: (bytes, content type)."""
    return {
        path.name: (path.read_bytes(), TYPES[path.suffix])
        for path in sorted(STATIC.iterdir())
        if path.suffix in TYPES
    }


class AdminPage:
    def __init__(self, assets: dict[str, tuple[bytes, str]]) -> None:
        self.assets = assets

    def _send(self, resp: falcon.Response, name: str) -> None:
        if name not in self.assets:
            raise falcon.HTTPNotFound(title="Not found", description=f"no file {name!r}")
        resp.data, resp.content_type = self.assets[name]
        resp.set_header("Content-Security-Policy", CSP)
        resp.set_header("X-Content-Type-Options", "nosniff")
        resp.set_header("Referrer-Policy", "no-referrer")
        resp.cache_control = ["no-cache"]

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        self._send(resp, "index.html")

    def on_get_asset(self, req: falcon.Request, resp: falcon.Response, name: str) -> None:
        self._send(resp, name)


def register(app: falcon.App, ctx) -> None:
    page = AdminPage(load_assets())
    app.add_route("/admin", page)
    app.add_route("/admin/{name}", page, suffix="asset")
