"""Fixtures of the flow tests: one Prefect test harness per session, tiny topic data as CSV files, configs.

The tiny BERT (``tiny_mlm_dir``) and the toy topic task come from tests/conftest.py and _petcore_support.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from _petcore_support import TOPIC_SPEC, topic_frame

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")


@pytest.fixture(autouse=True, scope="session")
def prefect_harness(tmp_path_factory):
    """A temporary Prefect server + SQLite for the whole session; flow heartbeats off (-1 s per flow)."""
    from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings
    from prefect.testing.utilities import prefect_test_harness

    os.environ["PREFECT_RESULTS_LOCAL_STORAGE_PATH"] = str(tmp_path_factory.mktemp("prefect-results"))
    with (prefect_test_harness(server_startup_timeout=90),
          temporary_settings(updates={PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None})):
        yield


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> Path:
    """task.yaml (3 topics, 2 patterns), pool.csv (21 rows) and a disjoint test.csv (9 rows)."""
    root = tmp_path_factory.mktemp("tiny-data")
    frame = topic_frame()
    test = frame.groupby("topic").head(3)
    frame.drop(test.index).to_csv(root / "pool.csv", index=False)
    test.to_csv(root / "test.csv", index=False)
    (root / "task.yaml").write_text(yaml.safe_dump(TOPIC_SPEC), encoding="utf-8")
    return root


def tiny_config(tiny_data: Path, backbone: Path, work: Path, name: str, **sections: Any) -> Path:
    """Write a run config for the tiny data and model under ``work``; ``sections`` replace top-level keys."""
    config = {
        "name": name, "task": str(tiny_data / "task.yaml"),
        "data": {"pool": str(tiny_data / "pool.csv"), "test": str(tiny_data / "test.csv"), "n_labeled": 6,
                 "seed": 1},
        "model": {"backbone": str(backbone), "max_seq_length": 64, "device": "cpu", "precision": "fp32"},
        "seeds": [1],
        "train": {"max_steps": 3, "batch_size": 2, "grad_accumulation": 1, "learning_rate": 1e-3,
                  "score_batch_size": 16},
        "score": {"batch_size": 16},
        "distill": {"max_steps": 5, "batch_size": 4, "learning_rate": 1e-3, "eval_batch_size": 16},
        "store": str(work / "store"), "runs_dir": str(work / "runs"),
    }
    config.update(sections)
    work.mkdir(parents=True, exist_ok=True)
    path = work / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def make_config(tiny_data, tiny_mlm_dir):
    """``make_config(work_dir, name, **sections)`` -> path of a tiny run config."""
    return lambda work, name, **sections: tiny_config(tiny_data, tiny_mlm_dir, work, name, **sections)


@pytest.fixture(scope="session")
def pet_run(tmp_path_factory, make_config):
    """One PET run of the tiny config ``tiny-pet``: (config path, result, wall seconds)."""
    from flows.pipeline import pipeline

    config = make_config(tmp_path_factory.mktemp("pet"), "tiny-pet")
    started = time.perf_counter()
    result = pipeline(str(config))
    return config, result, time.perf_counter() - started
