"""Regenerate the web UI's screenshots: docs/ui-members.png, ui-services.png, ui-kv.png.

Starts a small mesh of ``meshlite agent`` processes on loopback (one ``--dev`` server
and two client agents joined to it), fills it with services, checks and keys through
the HTTP API, and photographs each view in Debian's headless Chromium (playwright,
launched by path).  Run from the repository root::

    python docs/ui_screenshots.py            # writes docs/ui-*.png
    python docs/ui_screenshots.py --out /tmp
"""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from playwright.sync_api import Page, expect, sync_playwright

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip
DEADLINE_S = 30.0
SCRIPT = Path(sys.executable).with_name("meshlite")
COMMAND = [str(SCRIPT)] if SCRIPT.exists() else [sys.executable, "-m", "meshlite.cli"]


class Agent:
    """One ``meshlite agent`` subprocess, its start line, and an HTTP client to it."""

    def __init__(self, workdir: Path, name: str, *argv: str) -> None:
        self.log = workdir / f"{name}.log"
        with self.log.open("w") as out:
            self.proc = subprocess.Popen(
                [*COMMAND, "agent", "--name", name, "--log-json", "--bind", "127.0.0.1:0",
                 "--http", "127.0.0.1:0", "--profile", "local", *argv],
                stdout=out, stderr=subprocess.STDOUT,
            )  # fmt: skip
        self.start = self._start_line()
        self.url = f"http://{self.start['http']}"
        self.http = httpx.Client(base_url=self.url, timeout=DEADLINE_S)

    def _start_line(self) -> dict[str, Any]:
        deadline = time.monotonic() + DEADLINE_S
        while time.monotonic() < deadline and self.proc.poll() is None:
            for raw in self.log.read_text().splitlines():
                line = json.loads(raw) if raw.startswith("{") else {}
                if line.get("event") == "start":
                    return line
            time.sleep(0.05)
        raise SystemExit(f"agent did not start:\n{self.log.read_text()}")

    def register(self, name: str, sid: str, port: int, status: str, output: str,
                 tags: tuple[str, ...] = ()) -> None:  # fmt: skip
        body = {"Name": name, "ID": sid, "Port": port, "Tags": list(tags),
                "Check": {"TTL": "10m"}}  # fmt: skip
        self.http.put("/v1/agent/service/register", json=body).raise_for_status()
        verb = {"passing": "pass", "warning": "warn", "critical": "fail"}[status]
        self.http.put(f"/v1/agent/check/{verb}/service:{sid}", params={"note": output})

    def stop(self) -> None:
        self.http.close()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(timeout=DEADLINE_S)


def populate(server: Agent, web_a: Agent, web_b: Agent) -> None:
    server.register("api", "api-1", 9000, "passing", "HTTP GET /healthz: 200 OK",
                    ("v2", "grpc"))  # fmt: skip
    web_a.register("web", "web-1", 8080, "passing", "HTTP GET /: 200 OK", ("v1", "http"))
    web_b.register("web", "web-2", 8080, "warning",
                   "HTTP GET /: 429 Too Many Requests (slow upstream)", ("v1", "http"))  # fmt: skip
    web_b.register("cache", "cache-1", 6379, "critical",
                   "dial tcp 127.0.0.1:6379: connect: connection refused")  # fmt: skip
    settings = {
        "listen": ":8080",
        "upstream": "api.service.meshlite",
        "timeout_ms": 2500,
        "features": {"new_checkout": True, "dark_mode": False},
    }
    values = {
        "config/web/settings.json": json.dumps(settings, indent=2),
        "config/web/replicas": "3",
        "config/web/maintenance": "false",
        "config/api/rate_limit": "1200/min",
        "config/db/url": "postgres://db.service.meshlite:5432/app",
        "deploy/web/version": "2026.11.3",
        "locks/": "",
    }
    for key, value in values.items():
        server.http.put(f"/v1/kv/{key}", content=value.encode()).raise_for_status()


def shoot(page: Page, url: str, ready: str, path: Path) -> None:
    page.goto(url)
    expect(page.locator(ready).first).to_be_visible()
    page.wait_for_timeout(300)  # let the last blocking answer render
    page.screenshot(path=str(path), full_page=True)
    print(f"wrote {path}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).parent)
    out = parser.parse_args().out
    with tempfile.TemporaryDirectory(prefix="meshlite-ui-shots-") as tmp:
        workdir = Path(tmp)
        agents = [Agent(workdir, "server-1", "--dev", "--dns", "127.0.0.1:0")]
        try:
            join = agents[0].start["address"]
            agents += [Agent(workdir, name, "--join", join) for name in ("web-a", "web-b")]
            populate(*agents)
            url = agents[0].url
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
                # Full-page shots of a short viewport: each picture is as tall as its view.
                page = browser.new_page(viewport={"width": 1200, "height": 360})
                expect.set_options(timeout=DEADLINE_S * 1000)
                page.goto(f"{url}/ui/#/members")
                expect(page.locator("#members-table tbody tr")).to_have_count(3)
                expect(page.locator(".badge-leader")).to_have_count(1)
                shoot(page, f"{url}/ui/#/members", ".badge-leader", out / "ui-members.png")
                shoot(page, f"{url}/ui/#/services", 'section[data-service="web"]',
                      out / "ui-services.png")  # fmt: skip
                shoot(page, f"{url}/ui/#/kv/config/web/settings.json", "#kv-meta dt",
                      out / "ui-kv.png")  # fmt: skip
                browser.close()
        finally:
            for agent in reversed(agents):
                agent.stop()


if __name__ == "__main__":
    main()
