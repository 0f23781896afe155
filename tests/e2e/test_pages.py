"""The web page's routes and files, without a browser: the shell and its security headers,
versioned static files, module imports that resolve, and every text in both languages."""

from __future__ import annotations

import re
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi import FastAPI

from gateway.web.pages import STATIC_DIR, mount_web, render_shell, static_version

with warnings.catch_warnings():  # see tests/integration/test_api_common.py
    warnings.filterwarnings("ignore", message="Using `httpx` with `starlette.testclient`")
    from fastapi.testclient import TestClient

JS_DIR = STATIC_DIR / "js"
# Texts looked up with a computed key: each family and the values the API can send.
FAMILIES = {
    "sev": ("critical", "major", "warning", "info"),
    "state": ("open", "dispatched", "in_progress", "resolved", "closed"),
    "act": ("dispatch", "start", "resolve", "close", "reopen"),
    "done": ("dispatch", "start", "resolve", "close", "reopen"),
    "live": ("open", "connecting", "closed"),
    "role": ("admin", "integrator", "manager", "grid_member", "read_only"),
    "kind": ("smoke", "throw_camera", "bin", "manhole"),
    "sensor": ("ok", "fault"),
    "source": ("sensor", "manual"),
}


@pytest.fixture
def client() -> Iterator[TestClient]:
    """A bare app with only the page mounted (the page needs nothing else to be served)."""
    app = FastAPI()
    mount_web(app)
    with TestClient(app) as test_client:
        yield test_client


def test_the_shell_is_served_with_a_strict_policy(client: TestClient) -> None:
    response = client.get("/ui/")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    policy = response.headers["content-security-policy"]
    assert "script-src 'self'" in policy and "connect-src 'self'" in policy
    assert "unsafe" not in policy
    assert response.headers["cache-control"] == "no-cache"
    version = static_version()
    assert f'src="/ui/static/{version}/js/app.js"' in response.text
    assert '<html lang="zh-CN">' in response.text


@pytest.mark.parametrize("path", ["/", "/ui"])
def test_entry_points_redirect_to_the_page(client: TestClient, path: str) -> None:
    response = client.get(path, follow_redirects=False)
    assert response.status_code == 307
    assert response.headers["location"] == "/ui/"


def test_every_file_the_shell_names_is_served(client: TestClient) -> None:
    shell = client.get("/ui/").text
    urls = re.findall(r'(?:src|href)="(/ui/static/[^"]+)"', shell)
    assert len(urls) >= 3
    for url in urls:
        response = client.get(url)
        assert response.status_code == 200, url
    assert (
        client.get(f"/ui/static/{static_version()}/js/app.js")
        .headers["content-type"]
        .startswith(("text/javascript", "application/javascript"))
    )
    assert client.get("/ui/static/0000/js/app.js").status_code == 404


def test_module_imports_resolve() -> None:
    for module in JS_DIR.glob("*.js"):
        for target in re.findall(r'^import .* from "\./([\w.]+)";$', module.read_text(), re.M):
            assert (JS_DIR / target).is_file(), f"{module.name} imports missing {target}"


def _dictionary(name: str) -> set[str]:
    text = (JS_DIR / "i18n.js").read_text(encoding="utf-8")
    block = text.split(f"const {name} = {{", 1)[1].split("\n};", 1)[0]
    keys = re.findall(r'(?:"([\w.]+)"|\b([a-z]\w*)): "', block)  # "a.b": "…" or loading: "…"
    return {quoted or bare for quoted, bare in keys}


def test_every_text_exists_in_both_languages() -> None:
    zh, en = _dictionary("zh"), _dictionary("en")
    assert zh == en, f"only Chinese: {sorted(zh - en)}; only English: {sorted(en - zh)}"
    sources = "\n".join(path.read_text(encoding="utf-8") for path in JS_DIR.glob("*.js"))
    used = set(re.findall(r'\bt\("([\w.]+)"', sources))
    used |= {f"{family}.{value}" for family, values in FAMILIES.items() for value in values}
    shell = render_shell("/static")
    used |= set(re.findall(r'data-i18n="([\w.]+)"', shell))
    assert used - zh == set(), f"texts without a translation: {sorted(used - zh)}"


def test_the_version_follows_the_contents(tmp_path: Path) -> None:
    (tmp_path / "a.js").write_text("one")
    first = static_version(tmp_path)
    (tmp_path / "a.js").write_text("two")
    assert static_version(tmp_path) != first
