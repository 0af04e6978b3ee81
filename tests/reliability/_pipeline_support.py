"""Helpers shared by the stage/pipeline/reliability tests: tiny data files, tiny run configs, a stage spy.

Imported as ``reliability._pipeline_support`` (``tests/`` is on sys.path, see tests/conftest.py).
Plain functions only; the fixtures live in the test modules and in tests/reliability/conftest.py.
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

import yaml

from _petcore_support import SENTIMENT_SPEC, TOPIC_SPEC, sentiment_frame, topic_frame

ROOT = Path(__file__).resolve().parents[2]
TESTS = ROOT / "tests"
CHILD = Path(__file__).with_name("_children.py")


# -- data on disk -------------------------------------------------------------------------------------------
def write_topic_data(root: Path) -> Path:
    """task.yaml (3 topics, 2 patterns), pool.csv (21 rows) and a disjoint test.csv (9 rows) under ``root``."""
    root.mkdir(parents=True, exist_ok=True)
    frame = topic_frame()
    test = frame.groupby("topic").head(3)
    frame.drop(test.index).to_csv(root / "pool.csv", index=False)
    test.to_csv(root / "test.csv", index=False)
    (root / "task.yaml").write_text(yaml.safe_dump(TOPIC_SPEC), encoding="utf-8")
    return root


def write_sentiment_data(root: Path) -> Path:
    """task.yaml (2 labels, 2 patterns) and pool.csv (40 rows) under ``root``."""
    root.mkdir(parents=True, exist_ok=True)
    sentiment_frame().to_csv(root / "pool.csv", index=False)
    (root / "task.yaml").write_text(yaml.safe_dump(SENTIMENT_SPEC), encoding="utf-8")
    return root


def tiny_run_dict(data_dir: Path, backbone: Path, store: Path, **sections: Any) -> dict[str, Any]:
    """A run config (as a dict) for the topic data and the tiny BERT: 2 patterns x 1 seed, a few steps."""
    config: dict[str, Any] = {
        "name": "tiny",
        "task": str(data_dir / "task.yaml"),
        "data": {"pool": {"path": str(data_dir / "pool.csv")}, "test": {"path": str(data_dir / "test.csv")},
                 "n_labeled": 6, "seed": 1},
        "model": {"backbone": str(backbone), "max_seq_length": 64, "device": "cpu", "precision": "fp32"},
        "seeds": [1],
        "train": {"max_steps": 3, "batch_size": 2, "grad_accumulation": 1, "learning_rate": 1e-3,
                  "score_batch_size": 16},
        "score": {"batch_size": 16},
        "distill": {"max_steps": 4, "batch_size": 4, "learning_rate": 1e-3, "eval_batch_size": 16},
        "store": str(store),
        "runs_dir": str(store.parent / "runs"),
    }
    for key, value in sections.items():
        if isinstance(value, dict) and isinstance(config.get(key), dict):
            config[key] = {**config[key], **value}
        else:
            config[key] = value
    return config


def tiny_run_config(data_dir: Path, backbone: Path, store: Path, **sections: Any):
    """``tiny_run_dict`` validated into a RunConfig."""
    from pet_core.run_config import RunConfig

    return RunConfig.model_validate(tiny_run_dict(data_dir, backbone, store, **sections))


def write_yaml(config: dict[str, Any], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return path


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
        if call.stage == "train":
            name = f"train g{call.config['generation']}-p{call.config['pattern']}-s{call.config['seed']}"
        elif call.stage == "score":
            name = f"score {call.info['model_id']} on {by_sha.get(call.inputs['examples'], '?')}"
        elif call.stage == "ipet":
            name = f"ipet g{call.config['generation']}"
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
