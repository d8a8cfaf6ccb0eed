"""The web UI (``/ui/``) in real headless Chromium, against a ``meshlite agent --dev``.

Debian's ``chromium`` driven by playwright (launched by path: no downloaded browser).
The agent is a subprocess, as a user runs it; the tests change the mesh through the HTTP
API (as another client would) and watch the open page follow through its blocking
queries — no reloads.  Skipped, saying why, only when Chromium or playwright is absent.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip
SCRIPT = Path(sys.executable).with_name("meshlite")
COMMAND = [str(SCRIPT)] if SCRIPT.exists() else [sys.executable, "-m", "meshlite.cli"]
DEADLINE_S = 30.0  # agent start, and any single thing the page must show
EXPECT_MS = 15_000  # how long the page gets to show a change (blocking queries: ~ms)
TOKEN = "ui-s3cret"
CAS_MESSAGE = "changed by someone else since you loaded it; reload"

try:
    from playwright.sync_api import Browser, Page, expect, sync_playwright
except ImportError:  # pragma: no cover - the [test] extra installs it
    sync_playwright = None


# ------------------------------------------------------------------------------ the agent


class DevAgent:
    """``meshlite agent --dev`` on free loopback ports; its log goes to a file (a pipe
    nobody reads would fill up and stall the agent)."""

    def __init__(self, log: Path, name: str, *argv: str) -> None:
        self.log = log
        with log.open("w") as out:  # the agent keeps its own descriptor
            self.proc = subprocess.Popen(
                [*COMMAND, "agent", "--dev", "--name", name, "--log-json",
                 "--bind", "127.0.0.1:0", "--http", "127.0.0.1:0", "--dns", "127.0.0.1:0", *argv],
                stdout=out, stderr=subprocess.STDOUT,
            )  # fmt: skip
        self.url = f"http://{self._http_address()}"
        self.headers = {"X-Consul-Token": TOKEN} if "--http-token" in argv else {}
        self.http = httpx.Client(base_url=self.url, headers=self.headers, timeout=DEADLINE_S)

    def _http_address(self) -> str:
        deadline = time.monotonic() + DEADLINE_S
        while time.monotonic() < deadline and self.proc.poll() is None:
            for raw in self.log.read_text().splitlines():
                line = json.loads(raw) if raw.startswith("{") else {}
                if line.get("event") == "start":
                    return str(line["http"])
            time.sleep(0.05)
        self.stop()
        pytest.fail(f"the agent did not start (exit {self.proc.poll()}):\n{self.log.read_text()}")

    def has_kv(self) -> bool:
        return self.http.get("/v1/kv/?keys").status_code == 200

    def stop(self) -> None:
        if hasattr(self, "http"):
            self.http.close()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=DEADLINE_S)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=DEADLINE_S)


@pytest.fixture(scope="module")
def agent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevAgent]:
    started = DevAgent(tmp_path_factory.mktemp("agent") / "agent.log", "ui-1")
    try:
        yield started
    finally:
        started.stop()


@pytest.fixture
def kv_agent(agent: DevAgent) -> DevAgent:
    if not agent.has_kv():
        pytest.skip("this build of the agent serves no /v1/kv (the replicated KV is not wired)")
    return agent


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if sync_playwright is None:
        pytest.skip("playwright is not installed (pip install -e '.[test]')")
    if not Path(CHROMIUM).exists():
        pytest.skip("Chromium is not installed (Debian: apt-get install chromium)")
    with sync_playwright() as p:
        launched = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    """A fresh tab (its own sessionStorage); any script error fails the test."""
    context = browser.new_context(viewport={"width": 1200, "height": 800})
    tab = context.new_page()
    tab.set_default_timeout(EXPECT_MS)
    expect.set_options(timeout=EXPECT_MS)
    errors: list[str] = []
    tab.on("pageerror", lambda exc: errors.append(str(exc)))
    try:
        yield tab
    finally:
        context.close()
    assert errors == [], f"script errors on the page: {errors}"


def put_service(agent: DevAgent, body: dict[str, Any]) -> None:
    r = agent.http.put("/v1/agent/service/register", json=body)
    assert r.status_code == 200, r.text


def kv_value(agent: DevAgent, key: str) -> str | None:
    r = agent.http.get(f"/v1/kv/{key}", params={"raw": ""})
    return None if r.status_code == 404 else r.text


def screenshot(page: Page, name: str) -> None:
    """With MESHLITE_UI_SCREENSHOTS=DIR, keep a picture of the view (docs/ uses these)."""
    target = os.environ.get("MESHLITE_UI_SCREENSHOTS")
    if target:
        page.screenshot(path=str(Path(target) / f"ui-{name}.png"), full_page=True)


# ------------------------------------------------------------------------------ serving


def test_the_ui_is_served_at_ui_and_redirected_to(agent: DevAgent) -> None:
    with httpx.Client(base_url=agent.url) as http:
        for path in ("/", "/ui"):
            r = http.get(path)
            assert (r.status_code, r.headers["location"]) == (301, "/ui/")
        r = http.get("/ui/")
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
        assert "script-src 'self'" in r.headers["content-security-policy"]
        assert r.headers["x-content-type-options"] == "nosniff"
        for name, kind in (("app.js", "javascript"), ("style.css", "text/css")):
            r = http.get(f"/ui/{name}")
            assert r.status_code == 200 and kind in r.headers["content-type"]
        assert http.get("/ui/no-such-file.js").status_code == 404
        assert http.post("/").status_code == 405


# ------------------------------------------------------------------------------ members


def test_members_show_status_and_server_and_leader_badges(agent: DevAgent, page: Page) -> None:
    page.goto(f"{agent.url}/ui/")
    expect(page).to_have_url(f"{agent.url}/ui/#/members")
    row = page.locator('tr[data-member="ui-1"]')
    expect(row.locator("[data-status]")).to_have_text("alive")
    expect(row.locator(".badge-server")).to_have_text("server")
    expect(page.locator("#live")).to_have_text("● Live")
    expect(page.locator("#agent-info")).to_contain_text("ui-1 · dc1")
    leader = agent.http.get("/v1/status/leader").json()
    if leader:  # a --dev agent is a server; once it has elected itself, it is the leader
        expect(row.locator(".badge-leader")).to_have_text("leader")
    else:
        expect(row.locator(".badge-leader")).to_have_count(0)
    screenshot(page, "members")


# ------------------------------------------------------------------------------ services


def test_services_show_instances_and_checks_and_follow_changes(agent: DevAgent, page: Page) -> None:
    page.goto(f"{agent.url}/ui/#/services")
    expect(page.locator("h1")).to_have_text("Services")
    # Registered after the page loaded: it must arrive through the blocking query.
    put_service(agent, {"Name": "web", "ID": "web-1", "Port": 8080, "Tags": ["v1"],
                        "Check": {"TTL": "60s"}})  # fmt: skip
    card = page.locator('section[data-service="web"]')
    instance = card.locator('tr[data-instance="web-1"]')
    check = instance.locator('li[data-check="service:web-1"]')
    expect(instance.locator("td").nth(0)).to_have_text("ui-1")
    expect(instance.locator("td").nth(1)).to_have_text("127.0.0.1:8080")
    expect(check.locator("[data-status]")).to_have_text("critical")
    expect(instance.locator('li[data-check="serfHealth"] [data-status]')).to_have_text("passing")

    r = agent.http.put("/v1/agent/check/pass/service:web-1", params={"note": "200 OK <b>hi</b>"})
    assert r.status_code == 200, r.text
    expect(check.locator("[data-status]")).to_have_text("passing")
    expect(check.locator("pre.output")).to_have_text("200 OK <b>hi</b>")  # text, not markup
    expect(card.locator(".card-head [data-status]")).to_have_text("passing")
    expect(card.locator(".chip")).to_have_text(["v1"])

    put_service(agent, {"Name": "db", "ID": "db-1", "Port": 5432, "Check": {"TTL": "60s"}})
    r = agent.http.put("/v1/agent/check/fail/service:db-1", params={"note": "connection refused"})
    assert r.status_code == 200, r.text
    db = page.locator('section[data-service="db"]')
    expect(db.locator(".card-head [data-status]")).to_have_text("critical")
    expect(db.locator("pre.output").last).to_have_text("connection refused")
    expect(page.locator(".summary")).to_have_text("2 services, 2 instances; 1 not passing.")
    screenshot(page, "services")

    assert agent.http.put("/v1/agent/service/deregister/db-1").status_code == 200
    expect(db).to_have_count(0)


# ------------------------------------------------------------------------------ KV


def test_kv_create_browse_edit_and_delete(kv_agent: DevAgent, page: Page) -> None:
    agent = kv_agent
    page.goto(f"{agent.url}/ui/#/kv/")
    page.fill("#kv-new-name", "app/config/greeting")
    page.fill("#kv-new-value", "hello")
    page.click("#kv-create button[type=submit]")
    expect(page).to_have_url(f"{agent.url}/ui/#/kv/app/config/greeting")
    expect(page.locator("#flash")).to_have_text("Created app/config/greeting.")
    expect(page.locator("#kv-value")).to_have_value("hello")
    assert kv_value(agent, "app/config/greeting") == "hello"

    page.fill("#kv-value", "hello, wörld")
    page.click("#kv-save")
    expect(page.locator("#flash")).to_have_text("Saved app/config/greeting.")
    assert kv_value(agent, "app/config/greeting") == "hello, wörld"

    # Browse down from the root; a key written elsewhere shows up in the open folder.
    page.goto(f"{agent.url}/ui/#/kv/")
    page.click('a[data-key="app/"]')
    page.click('a[data-key="app/config/"]')
    keys = page.locator("#kv-keys a")
    expect(keys).to_have_text(["greeting"])
    assert agent.http.put("/v1/kv/app/config/port", content=b"8080").json() is True
    expect(keys).to_have_text(["greeting", "port"])
    screenshot(page, "kv")

    page.click('a[data-key="app/config/greeting"]')
    expect(page.locator("#kv-meta")).to_contain_text("13 bytes")
    page.get_by_role("button", name="Delete", exact=True).click()
    page.get_by_role("button", name="Yes, delete", exact=True).click()
    expect(page).to_have_url(f"{agent.url}/ui/#/kv/app/config/")
    expect(page.locator("#flash")).to_have_text("Deleted app/config/greeting.")
    expect(keys).to_have_text(["port"])
    assert kv_value(agent, "app/config/greeting") is None

    page.get_by_role("button", name="Delete folder", exact=True).click()
    page.get_by_role("button", name="Yes, delete folder", exact=True).click()
    expect(page).to_have_url(f"{agent.url}/ui/#/kv/app/")
    assert kv_value(agent, "app/config/port") is None


def test_kv_cas_conflict_is_reported_not_overwritten(kv_agent: DevAgent, page: Page) -> None:
    agent = kv_agent
    assert agent.http.put("/v1/kv/cas/key", content=b"original").json() is True
    page.goto(f"{agent.url}/ui/#/kv/cas/key")
    expect(page.locator("#kv-value")).to_have_value("original")
    page.fill("#kv-value", "mine")
    assert agent.http.put("/v1/kv/cas/key", content=b"theirs").json() is True
    expect(page.locator("#kv-notice")).to_contain_text("Someone else changed this key")
    expect(page.locator("#kv-value")).to_have_value("mine")  # the edit is not clobbered
    page.click("#kv-save")
    expect(page.locator("#kv-alert")).to_contain_text(CAS_MESSAGE)
    assert kv_value(agent, "cas/key") == "theirs"

    page.locator("#kv-alert").get_by_role("button", name="Reload").click()
    expect(page.locator("#kv-value")).to_have_value("theirs")
    expect(page.locator("#kv-alert")).to_be_empty()
    page.fill("#kv-value", "mine, after reloading")
    page.click("#kv-save")
    expect(page.locator("#flash")).to_have_text("Saved cas/key.")
    assert kv_value(agent, "cas/key") == "mine, after reloading"

    # Creating over an existing key is a CAS (?cas=0) too.
    page.goto(f"{agent.url}/ui/#/kv/cas/")
    page.fill("#kv-new-name", "key")
    page.click("#kv-create button[type=submit]")
    expect(page.locator("#kv-create [role=alert]")).to_have_text(
        "A key named cas/key already exists; open it to edit it."
    )
    assert kv_value(agent, "cas/key") == "mine, after reloading"


def test_kv_names_and_values_are_text_never_markup(kv_agent: DevAgent, page: Page) -> None:
    agent = kv_agent
    key = 'xss/<img src=x onerror="window.pwned=1">'
    value = "<script>window.pwned=1</script>"
    assert agent.http.put(f"/v1/kv/{key}", content=value.encode()).json() is True
    assert agent.http.put("/v1/kv/xss/binary", content=b"\xff\xfe\x00bin").json() is True
    page.goto(f"{agent.url}/ui/#/kv/xss/")
    link = page.locator(f'a[data-key="{key.replace(chr(34), chr(92) + chr(34))}"]')
    expect(link).to_have_text(key.removeprefix("xss/"))
    assert page.locator("#kv-keys img").count() == 0
    link.click()
    expect(page.locator("#kv-value")).to_have_value(value)
    expect(page.locator("h1")).to_have_text(key.removeprefix("xss/"))
    assert page.evaluate("window.pwned") is None

    page.goto(f"{agent.url}/ui/#/kv/xss/binary")
    expect(page.locator("#kv-value")).to_have_value("//4AYmlu")  # base64, read-only
    expect(page.locator("#kv-notice")).to_contain_text("binary")
    expect(page.locator("#kv-save")).to_be_disabled()


# ------------------------------------------------------------------------------ token


def test_a_token_protected_agent_prompts_for_the_token(browser: Browser, tmp_path: Path) -> None:
    protected = DevAgent(
        tmp_path / "agent.log", "ui-locked", "--http-token", TOKEN, "--http-token-reads"
    )
    context = browser.new_context()
    try:
        with httpx.Client(base_url=protected.url) as anonymous:
            assert anonymous.get("/v1/agent/members").status_code == 403
            assert anonymous.get("/ui/app.js").status_code == 200  # the page itself is public
        page = context.new_page()
        sent: list[str | None] = []
        page.on("request", lambda r: sent.append(r.headers.get("x-consul-token"))
                if "/v1/catalog/nodes" in r.url else None)  # fmt: skip
        page.goto(f"{protected.url}/ui/")
        dialog = page.locator("#token-dialog")
        expect(dialog).to_be_visible(timeout=EXPECT_MS)
        expect(page.locator("#token-reason")).to_contain_text("requires an ACL token")
        page.fill("#token-input", "wrong")
        page.click("#token-form button[type=submit]")
        expect(page.locator("#token-reason")).to_contain_text("refused the token",
                                                              timeout=EXPECT_MS)  # fmt: skip
        page.fill("#token-input", TOKEN)
        page.click("#token-form button[type=submit]")
        expect(dialog).to_be_hidden(timeout=EXPECT_MS)
        row = page.locator('tr[data-member="ui-locked"]')
        expect(row.locator("[data-status]")).to_have_text("alive", timeout=EXPECT_MS)
        assert sent[0] is None and "wrong" in sent and sent[-1] == TOKEN
        assert page.evaluate("sessionStorage.getItem('meshlite.token')") == TOKEN

        # The agent goes away: the page says it is reconnecting, and backs off.
        protected.stop()
        expect(page.locator("#live")).to_contain_text("Reconnecting in", timeout=EXPECT_MS)
    finally:
        context.close()
        protected.stop()
