"""Helpers of the flow tests: reading run directories, store records and Prefect runs back."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any


def read_run(result: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(manifest, metrics) of a finished run."""
    run_dir = Path(result["run_dir"])
    return (json.loads((run_dir / "manifest.json").read_text()), json.loads((run_dir / "metrics.json").read_text()))


def stage_flags(manifest: dict[str, Any]) -> dict[str, bool]:
    """Stage name (e.g. 'train g0-p0-s1') -> cached."""
    return {s["name"]: s["cached"] for s in manifest["stages"]}


def record_bytes(store: Path) -> dict[str, bytes]:
    """Every committed record.json under a store, by path relative to the store."""
    return {str(p.relative_to(store)): p.read_bytes() for p in sorted(store.glob("*/*/record.json"))}


def comparable(metrics: dict[str, Any]) -> dict[str, Any]:
    """Metrics without the config digest (it includes the store path, which differs between runs)."""
    return {k: v for k, v in metrics.items() if k != "digest"}


def flow_run_tree(flow_run_id: str) -> list[str]:
    """Ids of a flow run and of its subflow runs (one level is what the pipeline has)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterParentFlowRunId

    with get_client(sync_client=True) as client:
        children = client.read_flow_runs(flow_run_filter=FlowRunFilter(
            parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[flow_run_id])))
    return [flow_run_id, *(str(r.id) for r in children)]


def run_artifacts(flow_run_id: str) -> list[Any]:
    """All artifacts created by a pipeline run and its subflows."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    with get_client(sync_client=True) as client:
        return client.read_artifacts(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=flow_run_tree(flow_run_id))))


def task_run_states(flow_run_id: str, expect: int = 0, timeout_s: float = 15.0) -> dict[str, str]:
    """Task run name -> final state name, over a pipeline run and its subflows.

    Task run states reach the API through events recorded asynchronously by the server, so this polls
    until at least ``expect`` task runs are in a final state (or the timeout passes).
    """
    deadline = time.monotonic() + timeout_s
    while True:
        states = _task_run_states(flow_run_id)
        if sum(1 for s in states.values() if s in FINAL) >= expect or time.monotonic() > deadline:
            return states
        time.sleep(0.25)


FINAL = {"Completed", "Cached", "Failed", "Crashed", "Cancelled"}


def _task_run_states(flow_run_id: str) -> dict[str, str]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=flow_run_tree(flow_run_id))))
    return {r.name: r.state.name for r in runs if r.state is not None}


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def serve_and_wait_for_scheduled_run(config: Path, work: Path, timeout_s: float) -> dict[str, Any]:
    """Start `prefect server` (with its scheduler) and `petflow serve --cron '* * * * *'`; wait for a run.

    Returns the first scheduled run that reached a final state: {name, state_type, expected_start_time}.
    """
    import os
    import signal
    import subprocess
    import sys

    import httpx

    port = _free_port()
    api = f"http://127.0.0.1:{port}/api"
    env = {**os.environ, "PREFECT_HOME": str(work / "prefect-home"), "PREFECT_SERVER_API_HOST": "127.0.0.1",
           "PREFECT_SERVER_API_PORT": str(port), "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
           "PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS": "2", "OMP_NUM_THREADS": "1"}
    env.pop("PREFECT_API_URL", None)
    procs = []
    try:
        with open(work / "server.log", "wb") as log:
            procs.append(subprocess.Popen([sys.executable, "-m", "prefect", "server", "start"], env=env,
                                          stdout=log, stderr=subprocess.STDOUT))
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                if httpx.get(f"{api}/health", timeout=2).json() is True:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "prefect server did not start"
            time.sleep(0.5)
        with open(work / "serve.log", "wb") as log:
            procs.append(subprocess.Popen([sys.executable, "-m", "flows.cli", "serve", str(config), "--cron",
                                           "* * * * *"], env={**env, "PREFECT_API_URL": api},
                                          stdout=log, stderr=subprocess.STDOUT))
        while time.monotonic() < deadline:
            runs = httpx.post(f"{api}/flow_runs/filter", json={"sort": "EXPECTED_START_TIME_ASC", "limit": 10},
                              timeout=5).json()
            done = [r for r in runs if r["deployment_id"] and r["state_type"] in FINAL_TYPES]
            if done:
                return {k: done[0][k] for k in ("name", "state_type", "expected_start_time")}
            time.sleep(1)
        raise AssertionError(f"no scheduled run finished within {timeout_s} s: {(work / 'serve.log').read_text()[-2000:]}")
    finally:
        for proc in reversed(procs):
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


FINAL_TYPES = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}
