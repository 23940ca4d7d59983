"""The pages and their assets: fixed files from control/web/static/, read once at start.

The pages are static: no data is ever written into HTML by the server, so nothing a node sends
can become markup here. Their scripts fetch the API and put every value in the DOM as text.
Only the files named in ASSETS are served (no path from a URL ever reaches the file system).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from http import HTTPStatus
from importlib import resources
from typing import Final

from control.web.exchange import HttpError, Request, Response

HTML: Final = "text/html; charset=utf-8"
ASSETS: Final = {
    "fleet.html": HTML,
    "node.html": HTML,
    "login.html": HTML,
    "style.css": "text/css; charset=utf-8",
    "common.js": "text/javascript; charset=utf-8",
    "fleet.js": "text/javascript; charset=utf-8",
    "node.js": "text/javascript; charset=utf-8",
    "login.js": "text/javascript; charset=utf-8",
    "favicon.svg": "image/svg+xml",
}
PUBLIC_ASSETS: Final = frozenset(
    {"login.html", "style.css", "common.js", "login.js", "favicon.svg"}
)
"""What the login page needs: served without a session."""


@dataclass(frozen=True)
class Asset:
    body: bytes
    content_type: str


def load_assets() -> dict[str, Asset]:
    """Every file in ASSETS from the package (KeyError-free: a missing file fails at start)."""
    folder = resources.files("control.web").joinpath("static")
    return {name: Asset(folder.joinpath(name).read_bytes(), kind) for name, kind in ASSETS.items()}


class Pages:
    def __init__(self, assets: Mapping[str, Asset]) -> None:
        self._assets = assets

    def file(self, name: str) -> Response:
        asset = self._assets.get(name)
        if asset is None:
            raise HttpError(HTTPStatus.NOT_FOUND, "no such file")
        return Response(HTTPStatus.OK, asset.body, content_type=asset.content_type)

    def static(self, _req: Request, args: Mapping[str, str]) -> Response:
        return self.file(args["name"])
