"""A real crash: SIGKILL `petflow run` after a model is trained, rerun, and get the uninterrupted result."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from _flow_support import comparable, read_run, record_bytes

from flows.pipeline import pipeline

ROOT = Path(__file__).resolve().parents[2]


def test_sigkill_mid_run_then_rerun_reuses_finished_stages(tmp_path, make_config, pet_run):
    from prefect.settings import PREFECT_API_URL

    config = make_config(tmp_path, "tiny-pet")  # same work as pet_run, its own store
    store = tmp_path / "store"
    env = {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value(), "PREFECT_HOME": str(tmp_path / "prefect"),
           "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    log = tmp_path / "killed-run.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "flows.cli", "run", str(config)], cwd=ROOT, env=env,
                                stdout=out, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 120
            while not list(store.glob("train/*/record.json")):
                assert proc.poll() is None, f"run ended before any model was trained:\n{log.read_text()[-3000:]}"
                assert time.monotonic() < deadline, "no train stage finished within 120 s"
                time.sleep(0.02)
            os.kill(proc.pid, signal.SIGKILL)
        finally:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert not list((tmp_path / "runs").glob("*/metrics.json")), "the run finished before it was killed"
    before = record_bytes(store)
    assert any(k.startswith("train/") for k in before) and any(k.startswith("prepare/") for k in before)

    leases = tmp_path / "runs" / ".leases"
    killed = [p.name for p in leases.iterdir()]
    assert len(killed) == 1, "the killed run left its lease"
    assert flow_run_tree_states(killed[0])[0] == "RUNNING", "Prefect still believes the killed run is running"

    manifest, metrics = read_run(pipeline(str(config)))
    flows, tasks = flow_run_tree_states(killed[0])
    assert flows == "CRASHED" and "RUNNING" not in tasks and "PENDING" not in tasks, (flows, tasks)
    assert list(leases.iterdir()) == [], "the dead lease was removed and the rerun released its own"
    after = record_bytes(store)
    for path, content in before.items():
        assert after[path] == content, f"{path} was rewritten"
    for stage in manifest["stages"]:
        rel = str(Path(stage["record"]["path"]).relative_to(store))
        assert stage["cached"] == (rel in before), stage["name"]
        if rel in before:
            assert stage["record"]["sha256"] == hashlib.sha256(before[rel]).hexdigest()
    assert comparable(metrics) == comparable(read_run(pet_run[1])[1])


def flow_run_tree_states(flow_run_id: str) -> tuple[str, set[str]]:
    """The state type of a flow run and those of its task runs (subflows' included)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId, FlowRunFilterParentFlowRunId

    with get_client(sync_client=True) as client:
        root = client.read_flow_run(flow_run_id)
        children = client.read_flow_runs(flow_run_filter=FlowRunFilter(
            parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[root.id])))
        ids = [root.id] + [child.id for child in children]
        tasks = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=ids)))
    return root.state.type.value, {t.state.type.value for t in tasks} | {c.state.type.value for c in children}
