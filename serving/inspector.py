"""The profile inspector: ``GET /ui/users/{user_id}``, a page that shows what p13n believes about one user.

The page is a static shell (``serving/ui/``: HTML, CSS and a little JS; no build step, nothing from a CDN)
and carries no user data, so it is served without an API key. Its script reads the user id from the
page's own path and calls the JSON API (``GET /v1/users/{id}``, ``POST /v1/score``, ``POST /v1/rewrite``)
with a key the person types once into the page: it is kept in ``sessionStorage`` (this tab only, gone when
the tab closes) and sent as ``Authorization: Bearer``, never in a URL. Every user-originated string is put
into the page with ``textContent`` (never ``innerHTML``), and the Content-Security-Policy below allows no
inline script and no other origin, so a hostile memory or preference is shown as text and cannot run.

Routes (all GET): ``/ui/users/{user_id}`` (the id percent-encoded as in ``/v1/users/``, decoded from the
raw path by :func:`serving.wire.user_id_from_path`: a malformed id answers 400/422 like the API), and the
page's assets ``/ui/inspector.js`` and ``/ui/inspector.css``.
"""

from __future__ import annotations

from importlib import resources

from starlette.responses import Response

from serving.errors import ApiError
from serving.wire import user_id_from_path

__all__ = ["SECURITY_HEADERS", "UI", "UI_USERS", "Inspector"]

UI = "/ui/"
UI_USERS = "/ui/users/"
#: Nothing inline, nothing from elsewhere: the page's own script and stylesheet, and fetches to this origin.
SECURITY_HEADERS = {
    "content-security-policy": "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
    "img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "cache-control": "no-cache",
}
ASSETS = {"/ui/inspector.js": ("inspector.js", "text/javascript; charset=utf-8"),
          "/ui/inspector.css": ("inspector.css", "text/css; charset=utf-8")}  # fmt: skip
PAGE = "inspector.html"


class Inspector:
    """The page and its assets, read once from the package (``serving/ui/``, shipped as package data)."""

    def __init__(self) -> None:
        folder = resources.files("serving") / "ui"
        self.files = {name: (folder / name).read_bytes() for name in (PAGE, *(f for f, _ in ASSETS.values()))}

    def handle(self, scope: dict, path: str, method: str) -> Response:
        """The answer for a path under ``/ui/``; raises :class:`ApiError` (404, 405) or
        :class:`~p13n.errors.BadRequest` (a malformed user id)."""
        if method not in ("GET", "HEAD"):
            raise ApiError(405, f"{path} accepts GET", code="method_not_allowed")
        if path.startswith(UI_USERS):
            user_id_from_path(scope, UI_USERS)  # the script reads the id itself; a malformed one is refused here
            return self._file(PAGE, "text/html; charset=utf-8")
        if path in ASSETS:
            return self._file(*ASSETS[path])
        raise ApiError(404, f"no page {path}: the inspector is at {UI_USERS}{{user_id}}", code="not_found")

    def _file(self, name: str, media_type: str) -> Response:
        return Response(self.files[name], media_type=media_type, headers=SECURITY_HEADERS)
