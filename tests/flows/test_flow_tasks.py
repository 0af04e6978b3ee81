"""Tasks without a flow: the result dict, the Cached state of a store hit, progress throttling."""

from __future__ import annotations

from prefect.client.schemas.objects import State

from pet_core.run_config import RunConfig
from tasks import common
from tasks.common import PrefectProgress, value
from tasks.prepare import prepare
from tasks.validate import load_config


def test_prepare_task_returns_refs_then_a_cached_state(tmp_path, make_config):
    config: RunConfig = load_config(make_config(tmp_path, "tiny-task"))
    spec = config.task_spec()
    first = prepare.fn(config.store, spec, config.data)
    assert isinstance(first, dict) and first["cached"] is False
    assert set(first["outputs"]) == {"labeled", "unlabeled", "test"}
    assert first["info"]["labeled"]["rows"] == 6
    assert first["record"]["path"].endswith("record.json")

    second = prepare.fn(config.store, spec, config.data)
    assert isinstance(second, State) and second.name == "Cached" and second.is_completed()
    assert value(second) == {**first, "cached": True}


def test_progress_updates_are_throttled(monkeypatch):
    calls = []
    monkeypatch.setattr(common, "publish", lambda kind, **kw: calls.append(("create", kw)) or "id")
    monkeypatch.setattr(common, "update_progress_artifact", lambda **kw: calls.append(("update", kw["progress"])))
    progress = PrefectProgress(updates=20, min_interval_s=0.0)
    progress.on_stage_begin("train g0-p0-s1", 1000)
    for step in range(1, 1001):
        progress.on_progress("train g0-p0-s1", step, 1000, loss=0.5)
    progress.on_stage_end("train g0-p0-s1", {"loss": 0.5})
    updates = [c[1] for c in calls if c[0] == "update"]
    assert calls[0][0] == "create" and 20 <= len(updates) <= 22
    assert updates[-1] == 100.0 and updates == sorted(updates)
