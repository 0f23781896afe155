"""The property managers' page in real headless Chromium against the running app.

A fire in B3-2-1001 appears in the inbox without a reload, the compound's manager
acknowledges it and moves its work order to closed (resolve refused while the detector
still alarms, then overridden with a reason); a manager of another compound never sees it.
A second run on a phone screen takes the grid manager's way: owner-node staff, the sensor
clearing, readings unavailable, the English switch. A third checks sign-in and sign-out.
Screenshots land in ``var/screenshots/`` for review.

Every wait is bounded: Playwright's timeouts are 10 s, the server starts and stops within
bounded waits, and each test has its own timeout.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Protocol

import pytest
from playwright.sync_api import (
    Browser,
    BrowserContext,
    Page,
    Playwright,
    ViewportSize,
    expect,
    sync_playwright,
)

from tests.e2e.harness import LOW, LOW_BATTERY_C1, LOW_BATTERY_C2, SMOKE, WebEnv, web_env
from tests.integration.test_api_common import community_db

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

ROOT = Path(__file__).resolve().parents[2]
SCREENSHOTS = ROOT / "var" / "screenshots"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
WAIT_MS = 10_000
DESKTOP: ViewportSize = {"width": 1280, "height": 800}
PHONE: ViewportSize = {"width": 390, "height": 844}


@pytest.fixture(scope="module")
def playwright() -> Iterator[Playwright]:
    """Playwright's driver (no browser download: Debian's Chromium is used)."""
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: run scripts/system-deps.sh (as root)")
    expect.set_options(timeout=WAIT_MS)
    with sync_playwright() as driver:
        yield driver


@pytest.fixture(scope="module")
def browser(playwright: Playwright) -> Iterator[Browser]:
    """Headless Debian Chromium, shared by the module's tests."""
    chromium = playwright.chromium.launch(
        executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True, timeout=WAIT_MS
    )
    yield chromium
    chromium.close()


@pytest.fixture
def web(tmp_path_factory: pytest.TempPathFactory, tmp_path: Path) -> Iterator[WebEnv]:
    """The app with the web page over a private demo community; two low-battery warnings
    are already firing: one in C2, and one in C1 whose order nobody acknowledged for a day
    (past its 24 h ack deadline: overdue)."""
    url = community_db(tmp_path_factory, tmp_path / "gateway.db")
    with web_env(url, tmp_path) as env:
        low = {"battery": 9, "state": "low_battery"}
        now = env.clock.now()
        env.clock.set(now - timedelta(hours=25))
        env.transition(LOW, LOW_BATTERY_C1, "firing", low)
        env.clock.set(now)
        env.transition(LOW, LOW_BATTERY_C2, "firing", low)
        yield env


@dataclass
class Tab:
    """A signed-in page and the errors its scripts reported."""

    page: Page
    errors: list[str] = field(default_factory=list)

    def console(self, kind: str, text: str) -> None:
        """Keep script errors; refused API calls (4xx the page handles) are logged by the
        browser as failed loads and are checked through :meth:`response` instead."""
        if kind == "error" and not text.startswith("Failed to load resource"):
            self.errors.append(f"console: {text}")

    def response(self, status: int, url: str) -> None:
        """Keep server errors, except the 503 of readings the phone test provokes."""
        if status >= 500 and not (status == 503 and "/readings?" in url):
            self.errors.append(f"HTTP {status}: {url}")

    def shot(self, name: str, *, full_page: bool = True) -> None:
        """Write ``var/screenshots/<name>.png``."""
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        self.page.evaluate("window.scrollTo(0, 0)")  # the sticky header stays on top
        self.page.screenshot(path=SCREENSHOTS / f"{name}.png", full_page=full_page)


class OpenTab(Protocol):
    """Opens the page in a fresh browser context: ``open_tab(viewport)``."""

    def __call__(self, viewport: ViewportSize) -> Tab:
        """The sign-in form at ``viewport`` (Chinese, the default)."""
        ...


class SignIn(Protocol):
    """Opens a signed-in tab: ``sign_in(token, viewport)``."""

    def __call__(self, token: str, viewport: ViewportSize) -> Tab:
        """A fresh browser context at ``viewport``, signed in, live stream open."""
        ...


@pytest.fixture
def open_tab(browser: Browser, web: WebEnv) -> Iterator[OpenTab]:
    """Opens tabs on ``web``; closes them (and their connections) before the server stops."""
    contexts: list[BrowserContext] = []

    def opened(viewport: ViewportSize) -> Tab:
        phone = viewport["width"] < 500
        context = browser.new_context(
            viewport=viewport, is_mobile=phone, has_touch=phone, locale="zh-CN",
            timezone_id="Asia/Shanghai",
        )  # fmt: skip
        contexts.append(context)
        context.set_default_timeout(WAIT_MS)
        tab = Tab(context.new_page())
        tab.page.on("pageerror", lambda err: tab.errors.append(f"page error: {err}"))
        tab.page.on("console", lambda msg: tab.console(msg.type, msg.text))
        tab.page.on("response", lambda answer: tab.response(answer.status, answer.url))
        tab.page.goto(f"{web.base_url}/ui/")
        expect(tab.page.locator("html")).to_have_attribute("lang", "zh-CN")
        return tab

    yield opened
    for context in contexts:
        context.close()


@pytest.fixture
def sign_in(open_tab: OpenTab) -> SignIn:
    """Opens tabs signed in with a token, the live stream open."""

    def signed_in(token: str, viewport: ViewportSize) -> Tab:
        tab = open_tab(viewport)
        submit_token(tab.page, token)
        expect(tab.page.locator("#live")).to_have_attribute("data-live", "open")
        return tab

    return signed_in


def submit_token(page: Page, token: str) -> None:
    """Paste ``token`` into the sign-in form and submit it."""
    page.fill("#token-input", token)
    page.click("form.signin button[type=submit]")


def expect_state(page: Page, state: str) -> None:
    """Wait until the detail view shows the order in ``state``."""
    expect(page.locator(".order-title")).to_have_attribute("data-state", state)


def test_fire_flows_from_the_inbox_to_a_closed_order(sign_in: SignIn, web: WebEnv) -> None:
    manager = sign_in(web.token("manager", "C1"), DESKTOP)
    outsider = sign_in(web.token("manager", "C2"), DESKTOP)
    page = manager.page
    expect(page.locator(".who-scope")).to_have_attribute("data-scope", "C1")
    expect(page.locator(".who-name")).to_have_text("test manager")
    expect(page.locator(f'.alert[data-device="{LOW_BATTERY_C1}"]')).to_be_visible()
    expect(page.locator(".alert")).to_have_count(1)
    page.evaluate("window.__noReload = 'same document'")

    web.fire()  # alert.firing and workorder.opened go out through the hub
    fire = page.locator(f'.alert[data-device="{SMOKE}"]')
    expect(fire).to_be_visible()
    expect(fire).to_have_class(re.compile(r"\bsev-critical\b"))
    expect(page.locator(".alert").first).to_have_attribute("data-device", SMOKE)  # critical first
    expect(page.locator("#inbox-count")).to_have_text("2")
    assert page.evaluate("window.__noReload") == "same document"
    manager.shot("inbox-desktop")

    fire.locator("button.ack").click()
    expect(fire.locator(".acked")).to_contain_text("test manager")

    # The other compound's manager sees its own warning only, live or after a reload.
    other = outsider.page
    expect(other.locator(f'.alert[data-device="{LOW_BATTERY_C2}"]')).to_be_visible()
    other.reload()
    expect(other.locator(f'.alert[data-device="{LOW_BATTERY_C2}"]')).to_be_visible()
    expect(other.locator(f'.alert[data-device="{SMOKE}"]')).to_have_count(0)
    order_id = web.order_of(SMOKE)
    other.goto(f"{web.base_url}/ui/#/orders/{order_id}")
    expect(other.locator(".note-error")).to_contain_text(str(order_id))
    other.click('.tabs a[data-view="board"]')
    expect(other.locator(f'.order[data-order-id="{web.order_of(LOW_BATTERY_C2)}"]')).to_be_visible()
    expect(other.locator(f'.order[data-order-id="{order_id}"]')).to_have_count(0)

    page.click('.tabs a[data-view="board"]')
    card = page.locator(f'.order[data-order-id="{order_id}"]')
    expect(card).to_have_attribute("data-state", "open")
    expect(card.locator(".countdown")).to_contain_text("办结时限剩余")  # acked: resolve clock
    late = page.locator(f'.order[data-order-id="{web.order_of(LOW_BATTERY_C1)}"]')
    expect(late).to_have_class(re.compile(r"\boverdue\b"))
    expect(late.locator(".countdown")).to_contain_text("确认时限已超时")
    expect(page.locator(".late-count")).to_have_text("超时 1")
    manager.shot("board-desktop")

    card.click()
    expect_state(page, "open")
    expect(page.locator(".readings svg.chart path.line")).to_be_visible()
    expect(page.locator(".readings .marker.incident")).to_have_count(1)
    property_manager = web.staff_id("C1", "朱刚")  # the fire team (G1) is above a C1 token
    page.select_option('select[name="assignee"]', str(property_manager))
    page.click('button[data-action="dispatch"]')
    expect_state(page, "dispatched")
    expect(page.locator(".facts")).to_contain_text("朱刚")
    page.click('button[data-action="start"]')
    expect_state(page, "in_progress")

    page.fill('input[name="note"]', "现场检查，未见明火")
    page.click('button[data-action="resolve"]')
    refusal = page.locator(".refusal")
    expect(refusal).to_contain_text("still reports the fault")
    expect_state(page, "in_progress")
    manager.shot("order-refused-desktop")
    page.fill('textarea[name="override_reason"]', "探测器被厨房油烟触发，已清洁复位")
    refusal.locator("button.danger").click()
    expect_state(page, "resolved")
    expect(page.locator(".trail .override")).to_contain_text("厨房油烟")

    page.click('button[data-action="close"]')
    expect_state(page, "closed")
    page.fill('textarea[name="comment"]', "已电话回访住户")
    page.click(".subform button.ghost")
    expect(page.locator(".trail")).to_contain_text("已电话回访住户")
    page.click('.stars button[data-score="5"]')
    page.click(".subform button.primary")
    expect(page.locator(".facts")).to_contain_text("★★★★★")
    manager.shot("order-desktop")

    page.click('.tabs a[data-view="board"]')
    expect(
        page.locator(f'[data-column="closed"] .order[data-order-id="{order_id}"]')
    ).to_be_visible()

    page.click('.tabs a[data-view="community"]')
    expect(page.locator('.tile[data-building="B3"]')).to_have_attribute("data-worst", "critical")
    expect(page.locator('.tile[data-building="B1"]')).to_have_attribute("data-worst", "warning")
    expect(page.locator('.tile[data-building="B2"]')).to_have_attribute("data-worst", "none")
    manager.shot("community-desktop")
    page.click('.tile[data-building="B3"]')
    device = page.locator(f'.device[data-device-id="{SMOKE}"]')
    expect(device).to_have_class(re.compile(r"\bsev-critical\b"))
    expect(device.locator(".device-battery")).to_contain_text("%")  # live status loaded
    expect(page.locator(".devices .device").first).to_have_attribute("data-device-id", SMOKE)
    manager.shot("building-desktop", full_page=False)

    other.click('.tabs a[data-view="community"]')
    expect(other.locator('.tile[data-building="B6"]')).to_have_attribute("data-worst", "warning")
    expect(other.locator('.tile[data-building="B3"]')).to_have_count(0)
    assert manager.errors == [] and outsider.errors == []


def test_phone_grid_manager_waits_for_the_sensor_to_clear(sign_in: SignIn, web: WebEnv) -> None:
    grid = sign_in(web.token("manager", "G1"), PHONE)
    page = grid.page
    web.fire()
    fire = page.locator(f'.alert[data-device="{SMOKE}"]')
    expect(fire).to_be_visible()
    grid.shot("inbox-phone")
    assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]

    fire.locator("button.ghost").click()  # "查看工单": straight to its work order
    order_id = web.order_of(SMOKE)
    expect(page).to_have_url(re.compile(rf"#/orders/{order_id}$"))
    web.readings.available = False
    page.reload()
    expect(page.locator(".readings .note-warn")).to_contain_text("InfluxDB")
    member = web.staff_id("G1", "郭超艳")  # the owning grid's own team
    page.select_option('select[name="assignee"]', str(member))
    page.click('button[data-action="dispatch"]')
    expect_state(page, "dispatched")
    page.click('button[data-action="start"]')
    expect_state(page, "in_progress")
    page.click('button[data-action="resolve"]')
    expect(page.locator(".refusal")).to_contain_text("still reports the fault")
    grid.shot("order-phone")

    web.clock.advance(120)
    web.fire("resolved", level=0.02)  # the detector reads normal again: workorder.sensor_ok
    expect(page.locator(".facts")).to_contain_text("传感器：已恢复正常")
    page.click('button[data-action="resolve"]')
    expect_state(page, "resolved")
    page.click('button[data-action="close"]')
    expect_state(page, "closed")

    page.click('.tabs a[data-view="board"]')
    expect(
        page.locator(f'[data-column="closed"] .order[data-order-id="{order_id}"]')
    ).to_be_visible()
    grid.shot("board-phone")
    assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]

    page.click('.tabs a[data-view="community"]')
    expect(page.locator(".chips a.chip")).to_have_count(2)  # G1 holds compounds C1 and C2
    expect(page.locator('.tile[data-building="B1"]')).to_have_attribute("data-worst", "warning")
    expect(page.locator('.tile[data-building="B3"]')).to_have_attribute("data-worst", "none")
    grid.shot("community-phone")
    page.click('.tile[data-building="B1"]')
    low = page.locator(f'.device[data-device-id="{LOW_BATTERY_C1}"]')
    expect(low.locator(".device-battery")).to_contain_text("%")
    grid.shot("building-phone", full_page=False)

    page.click("#lang")  # English, remembered across a reload
    expect(page.locator('.tabs a[data-view="board"]')).to_have_text("Work orders")
    page.reload()
    expect(page.locator("html")).to_have_attribute("lang", "en")
    page.click('.tabs a[data-view="board"]')
    expect(page.locator('[data-column="closed"] .column-head')).to_contain_text("Closed")
    grid.shot("board-phone-en")
    assert grid.errors == []


def test_a_bad_token_is_refused_and_sign_out_forgets_the_token(
    open_tab: OpenTab, web: WebEnv
) -> None:
    tab = open_tab(DESKTOP)
    page = tab.page
    submit_token(page, "scc_00000000_" + "A" * 43)
    expect(page.locator(".signin .note-error")).to_have_text("令牌无效或已被撤销")
    expect(page.locator("#tabs")).to_be_hidden()
    submit_token(page, web.token("read_only", "C1"))
    expect(page.locator(".who-scope")).to_have_attribute("data-scope", "C1")
    expect(page.locator(f'.alert[data-device="{LOW_BATTERY_C1}"] .muted').last).to_be_visible()
    expect(page.locator("button.ack")).to_have_count(0)  # a read-only role cannot acknowledge
    page.click("#signout")
    expect(page.locator("#token-input")).to_be_visible()
    page.reload()
    expect(page.locator("#token-input")).to_be_visible()  # the token is gone from the tab
    assert page.evaluate("sessionStorage.length") == 0
    assert tab.errors == []
