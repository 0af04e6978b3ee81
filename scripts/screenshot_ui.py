"""Screenshot a petflow run in the Prefect UI (for docs): newest pipeline run, "Artifacts" tab.

    python scripts/screenshot_ui.py [--prefect-home DIR] [--out docs/ui-flow-run.png]
    python scripts/screenshot_ui.py --skip 1 --tab "Task Runs" --wait-text Crashed --out docs/ui-crashed-run.png
    python scripts/screenshot_ui.py --artifact-key bbc-demo-files --tab '' --wait-text sha256 --out docs/ui-files.png

Starts ``prefect server start --no-services`` on 127.0.0.1 (a free port) over a temporary copy of the
Prefect home (its SQLite DB holds the runs, ephemeral ones included), finds the newest top-level run of
the ``petflow`` flow via ``POST /api/flow_runs/filter``, opens ``/runs/flow-run/<id>`` in headless
Chromium through Playwright, clicks the tab and saves a screenshot. Needs ``pip install playwright``
and a Chromium binary (Debian: ``apt-get install -y chromium``; ``playwright install`` also works where
it can download).
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def copy_home(source: Path, target: Path) -> None:
    """Copy the Prefect DB (with its WAL files) so the screenshot server never touches the original."""
    target.mkdir(parents=True, exist_ok=True)
    for name in ("prefect.db", "prefect.db-wal", "prefect.db-shm", "profiles.toml"):
        if (source / name).exists():
            shutil.copy2(source / name, target / name)
    if not (target / "prefect.db").exists():
        raise SystemExit(f"no prefect.db in {source}: run a pipeline first (or pass --prefect-home)")


def start_server(home: Path, port: int, log: Path) -> subprocess.Popen:
    env = {**os.environ, "PREFECT_HOME": str(home), "PREFECT_SERVER_API_HOST": "127.0.0.1",
           "PREFECT_SERVER_API_PORT": str(port), "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    env.pop("PREFECT_API_URL", None)
    with open(log, "wb") as out:
        return subprocess.Popen([sys.executable, "-m", "prefect", "server", "start", "--no-services"], env=env,
                                stdout=out, stderr=subprocess.STDOUT)


def wait_healthy(api: str, timeout_s: float = 90) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{api}/health", timeout=2).json() is True:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise SystemExit(f"prefect server at {api} did not become healthy in {timeout_s:.0f} s")


def newest_run(api: str, flow_name: str, skip: int = 0) -> dict:
    body = {"sort": "START_TIME_DESC", "limit": 1, "offset": skip, "flows": {"name": {"any_": [flow_name]}},
            "flow_runs": {"parent_task_run_id": {"is_null_": True}}}
    runs = httpx.post(f"{api}/flow_runs/filter", json=body, timeout=10).json()
    if not runs:
        raise SystemExit(f"no run of flow {flow_name!r} in this Prefect home")
    return runs[0]


def artifact_id(api: str, key: str) -> str:
    """The newest artifact with ``key`` (e.g. the run's ``<name>-files`` markdown)."""
    body = {"sort": "CREATED_DESC", "limit": 1, "artifacts": {"key": {"any_": [key]}}}
    found = httpx.post(f"{api}/artifacts/filter", json=body, timeout=10).json()
    if not found:
        raise SystemExit(f"no artifact with key {key!r}")
    return found[0]["id"]


def screenshot(url: str, tab: str | None, out: Path, chromium: str | None, wait_text: str | None) -> None:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        launch = {"args": ["--no-sandbox"], "headless": True}
        if chromium:
            launch["executable_path"] = chromium
        browser = p.chromium.launch(**launch)
        page = browser.new_page(viewport={"width": 1600, "height": 1500}, device_scale_factor=1)
        page.goto(url, wait_until="networkidle")
        if tab:
            page.get_by_text(tab, exact=True).first.wait_for(timeout=60_000)
            tabs = page.get_by_role("tab", name=tab)  # a role="tab" where the UI sets it, else the label itself
            (tabs.first if tabs.count() else page.get_by_text(tab, exact=True).first).click()
        if wait_text:
            page.get_by_text(wait_text).first.wait_for(timeout=30_000)
        page.wait_for_timeout(2_000)  # let tables and charts finish rendering
        out.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(out), full_page=True)
        browser.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--prefect-home", type=Path,
                        default=Path(os.environ.get("PREFECT_HOME", Path.home() / ".prefect")))
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "ui-flow-run.png")
    parser.add_argument("--flow-name", default="petflow")
    parser.add_argument("--skip", type=int, default=0, help="Take the run this many places before the newest.")
    parser.add_argument("--tab", default="Artifacts", help="Tab of the run page to open ('' for none).")
    parser.add_argument("--artifact-key", help="Screenshot the newest artifact with this key instead of a run.")
    parser.add_argument("--wait-text", default="summary", help="Text to wait for before the screenshot.")
    parser.add_argument("--chromium", default=shutil.which("chromium") or shutil.which("chromium-browser"),
                        help="Chromium binary (default: from PATH; else Playwright's own).")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="petflow-ui-") as tmp:
        home = Path(tmp) / "prefect-home"
        copy_home(args.prefect_home.expanduser(), home)
        port = free_port()
        api = f"http://127.0.0.1:{port}/api"
        server = start_server(home, port, Path(tmp) / "server.log")
        try:
            wait_healthy(api)
            if args.artifact_key:
                url = f"http://127.0.0.1:{port}/artifacts/artifact/{artifact_id(api, args.artifact_key)}"
                print(f"artifact {args.artifact_key}: {url}")
            else:
                run = newest_run(api, args.flow_name, args.skip)
                url = f"http://127.0.0.1:{port}/runs/flow-run/{run['id']}"
                print(f"flow run {run['name']} ({run['state_type']}): {url}")
            screenshot(url, args.tab or None, args.out, args.chromium, args.wait_text or None)
            print(f"wrote {args.out}")
        finally:
            server.send_signal(signal.SIGTERM)
            try:
                server.wait(timeout=20)
            except subprocess.TimeoutExpired:
                server.kill()


if __name__ == "__main__":
    main()
