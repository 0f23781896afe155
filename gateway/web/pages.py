"""Routes of the web page: the HTML shell, its static files and a redirect from ``/``.

The static files are served under ``/ui/static/<version>/``, where the version is a hash
of their contents: a browser never mixes modules of two releases, and the shell itself is
never cached, so a new release is picked up on the next load.
"""

from __future__ import annotations

import hashlib
import html
from pathlib import Path
from string import Template

from fastapi import FastAPI
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles

HERE = Path(__file__).resolve().parent
STATIC_DIR = HERE / "static"
TEMPLATE = HERE / "templates" / "index.html"
PAGE_PATH = "/ui/"

#: The page loads only its own files and talks only to its own origin.
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; font-src 'self'; base-uri 'none'; form-action 'none'; "
        "frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


def static_version(directory: Path = STATIC_DIR) -> str:
    """A short hash of every file under ``directory`` (names and contents)."""
    digest = hashlib.sha256()
    for path in sorted(p for p in directory.rglob("*") if p.is_file()):
        digest.update(path.relative_to(directory).as_posix().encode())
        digest.update(b"\0")
        digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


def render_shell(static_url: str, template: Path = TEMPLATE) -> str:
    """The HTML shell with the static URL filled in (escaped for an attribute)."""
    return Template(template.read_text(encoding="utf-8")).substitute(
        static=html.escape(static_url, quote=True)
    )


def mount_web(app: FastAPI) -> None:
    """Add the page (``/ui/``), its static files and a redirect from ``/`` to ``app``."""
    static_url = f"/ui/static/{static_version()}"
    shell = render_shell(static_url)

    async def page() -> HTMLResponse:
        return HTMLResponse(shell, headers=SECURITY_HEADERS)

    async def to_page() -> RedirectResponse:
        return RedirectResponse(PAGE_PATH, status_code=307)

    app.add_api_route(PAGE_PATH, page, methods=["GET"], include_in_schema=False)
    app.add_api_route("/ui", to_page, methods=["GET"], include_in_schema=False)
    app.add_api_route("/", to_page, methods=["GET"], include_in_schema=False)
    app.mount(static_url, StaticFiles(directory=STATIC_DIR), name="web-static")
