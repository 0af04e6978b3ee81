"""Helpers shared by the stage/pipeline/reliability tests: a stage spy, store inspection, child processes.

Imported as ``reliability._pipeline_support`` (``tests/`` is on sys.path, see tests/conftest.py).
Plain functions only. Tiny data files and run configs are in tests/_run_support.py.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
TESTS = ROOT / "tests"
CHILD = Path(__file__).with_name("_children.py")


# -- watching the store -------------------------------------------------------------------------------------
@dataclass
class StageCall:
    """One ArtifactStore.run call: which stage, its key, whether it was a cache hit, its record."""

    stage: str
    key: str
    cached: bool
    config: dict[str, Any]
    inputs: dict[str, Any]
    info: dict[str, Any]
    outputs: dict[str, str]


@contextlib.contextmanager
def spy_stages() -> Iterator[list[StageCall]]:
    """Record every ``ArtifactStore.run`` call made inside the block (cache hits included)."""
    from pet_core.store import ArtifactStore

    calls: list[StageCall] = []
    original = ArtifactStore.run

    def spying(self, stage, config, inputs, build):
        record = original(self, stage, config, inputs, build)
        calls.append(StageCall(stage, record.key, record.cached, config, inputs, dict(record.info),
                               {k: v.sha256 for k, v in record.outputs.items()}))
        return record

    ArtifactStore.run = spying
    try:
        yield calls
    finally:
        ArtifactStore.run = original


def call_names(calls: list[StageCall], prepared_outputs: dict[str, str] | None = None) -> dict[str, bool]:
    """Readable name -> cached, e.g. 'train g0-p1-s1', 'score g0-p0-s1 on test', 'merge', 'distill'."""
    by_sha = {sha: name for name, sha in (prepared_outputs or {}).items()}
    names: dict[str, bool] = {}
    for call in calls:
        if call.stage in ("distill", "supervised"):
            by_sha[call.outputs["classifier"]] = call.stage
        if call.stage == "train":
            name = f"train g{call.config['generation']}-p{call.config['pattern']}-s{call.config['seed']}"
        elif call.stage == "score":
            name = f"score {call.info['model_id']} on {by_sha.get(call.inputs['examples'], '?')}"
        elif call.stage == "ipet":
            name = f"ipet g{call.config['generation']}"
        elif call.stage == "evaluate":
            name = f"evaluate {by_sha.get(call.inputs['classifier'], '?')} on {by_sha.get(call.inputs['test'], '?')}"
        else:
            name = call.stage
        assert name not in names, f"stage {name} ran twice in one pipeline run"
        names[name] = call.cached
    return names


def store_entries(store: Path) -> dict[str, list[str]]:
    """Stage -> sorted key directories (hidden temp directories excluded)."""
    return {stage.name: sorted(p.name for p in stage.iterdir() if not p.name.startswith("."))
            for stage in sorted(store.iterdir()) if stage.is_dir()}


def leftovers(store: Path) -> list[str]:
    """Hidden temp files/directories anywhere under the store."""
    return sorted(str(p.relative_to(store)) for p in store.rglob(".*"))


def comparable_summary(summary: dict[str, Any]) -> dict[str, Any]:
    """A pipeline summary without the fields that legitimately differ between runs."""
    return {k: v for k, v in summary.items() if k not in ("wall_s", "cached_stages")}


# -- child processes ----------------------------------------------------------------------------------------
def child_env() -> dict[str, str]:
    env = dict(os.environ)
    env.update({"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
                "TOKENIZERS_PARALLELISM": "false", "TRANSFORMERS_VERBOSITY": "error", "OMP_NUM_THREADS": "1",
                "MKL_NUM_THREADS": "1", "HF_HUB_DISABLE_PROGRESS_BARS": "1", "PYTHONDONTWRITEBYTECODE": "1"})
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(TESTS), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return env


def spawn_child(*args: str, log: Path) -> subprocess.Popen:
    """Start ``python tests/reliability/_children.py *args`` with stdout/stderr into ``log``."""
    handle = open(log, "wb")  # noqa: SIM115 - closed by the caller through wait_child
    proc = subprocess.Popen([sys.executable, str(CHILD), *args], stdout=handle, stderr=subprocess.STDOUT,
                            env=child_env(), cwd=str(log.parent))
    proc._log_handle = handle  # type: ignore[attr-defined]
    return proc


def wait_child(proc: subprocess.Popen, log: Path, timeout: float = 240) -> int:
    try:
        code = proc.wait(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc._log_handle.close()  # type: ignore[attr-defined]
    return code


def child_log(log: Path) -> str:
    text = log.read_text(encoding="utf-8", errors="replace")
    return text[-4000:]


def read_result(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8"))
