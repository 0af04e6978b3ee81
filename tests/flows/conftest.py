"""Fixtures of the flow tests: one Prefect test harness per session, tiny run configs as YAML files.

The tiny BERT (``tiny_mlm_dir``) and the toy topic data as CSV files (``topic_data``) come from tests/conftest.py.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import pytest
from _run_support import tiny_run_dict, write_yaml

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


def tiny_config(data_dir: Path, backbone: Path, work: Path, name: str, **sections: Any) -> Path:
    """Write a run config for the tiny data and model under ``work``; ``sections`` replace top-level keys.

    The base is _run_support.tiny_run_dict with the string shorthand for data sources and 5 distill steps.
    """
    config = tiny_run_dict(data_dir, backbone, work / "store", name=name,
                           data={"pool": str(data_dir / "pool.csv"), "test": str(data_dir / "test.csv")},
                           distill={"max_steps": 5})
    config.update(sections)
    return write_yaml(config, work / f"{name}.yaml")


@pytest.fixture(scope="session")
def make_config(topic_data, tiny_mlm_dir):
    """``make_config(work_dir, name, **sections)`` -> path of a tiny run config on the topic data."""
    return lambda work, name, **sections: tiny_config(topic_data, tiny_mlm_dir, work, name, **sections)


@pytest.fixture(scope="session")
def pet_run(tmp_path_factory, make_config):
    """One PET run of the tiny config ``tiny-pet``: (config path, result, wall seconds)."""
    from flows.pipeline import pipeline

    config = make_config(tmp_path_factory.mktemp("pet"), "tiny-pet")
    started = time.perf_counter()
    result = pipeline(str(config))
    return config, result, time.perf_counter() - started
