"""Crash safety: a process SIGKILLed in the middle of writing leaves nothing at the final path, and the next
run recomputes. The children (``_children.py``) park at an exact kill point and are killed there.

Kill points: mid-Parquet write (new file / replacing an old file), inside a store build before any output,
inside a build after some outputs, after record.json but before the commit rename, and inside the real
``prepare`` stage between its two tables.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pet_core import stages
from pet_core.artifacts import ArtifactError, read_table, write_table
from pet_core.data import DataSource
from pet_core.run_config import DataConfig
from pet_core.spec import TaskSpec
from pet_core.store import RECORD, ArtifactStore

from reliability._pipeline_support import child_log, spawn_child, wait_child


def kill_at_marker(args: list[str], marker: Path, log: Path, timeout: float = 90) -> None:
    """Start a child, wait until it touches ``marker``, SIGKILL it, reap it."""
    proc = spawn_child(*args, log=log)
    deadline = time.monotonic() + timeout
    while not marker.exists():
        if proc.poll() is not None:
            wait_child(proc, log)
            pytest.fail(f"child exited with {proc.returncode} before its kill point:\n{child_log(log)}")
        if time.monotonic() > deadline:
            proc.kill()
            wait_child(proc, log)
            pytest.fail(f"child never reached its kill point:\n{child_log(log)}")
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    code = wait_child(proc, log)
    assert code == -signal.SIGKILL


def temp_leftovers(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob(".*") if p.name.endswith(".tmp"))


# -- write_table ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("existing", [False, True], ids=["new-file", "replacing-old-file"])
def test_sigkill_mid_parquet_write(tmp_path, existing):
    target = tmp_path / "out" / "logits.parquet"
    old = pa.table({"x": [1, 2, 3]})
    if existing:
        write_table(old, target)
    marker = tmp_path / "marker"
    kill_at_marker(["write_table", str(target), str(marker), "200000"], marker, tmp_path / "child.log")
    partial = temp_leftovers(target.parent)
    assert len(partial) == 1 and partial[0].name.startswith(".logits.parquet."), partial
    if existing:
        assert read_table(target).equals(old), "the old file must survive a crashed rewrite"
    else:
        assert not target.exists(), "a killed write must leave nothing at the final path"
    with pytest.raises(ArtifactError, match=str(partial[0].name)):
        read_table(partial[0])  # the partial temp file is not a valid Parquet file
    # the next run recomputes and publishes a complete file
    fresh = pa.table({"example_id": ["a", "b"], "v": [1, 2]})
    write_table(fresh, target)
    assert read_table(target).equals(fresh) and pq.ParquetFile(target).metadata.num_rows == 2


# -- ArtifactStore.run ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("point", ["build-start", "build-mid", "before-commit"])
def test_sigkill_inside_store_run(tmp_path, point):
    root = tmp_path / "store"
    marker = tmp_path / "marker"
    kill_at_marker(["store", str(root), str(marker), point], marker, tmp_path / "child.log")
    store = ArtifactStore(root)
    key = store.key("stage", {"a": 1}, {"in": "x"})
    assert not (root / "stage" / key).exists(), "nothing may appear at the final path"
    assert store.lookup("stage", key) is None
    leftovers = temp_leftovers(root)
    assert len(leftovers) == 1 and leftovers[0].parent == root / "stage"
    if point == "before-commit":
        assert (leftovers[0] / RECORD).is_file(), "the kill happened after the record was written"
    calls = []

    def build(tmp: Path):
        calls.append(tmp)
        write_table(pa.table({"v": [1]}), tmp / "data.parquet")
        (tmp / "model").mkdir()
        (tmp / "model" / "weights.bin").write_bytes(b"parent")
        return {"data": "data.parquet", "model": "model"}, {"child": False}

    record = store.run("stage", {"a": 1}, {"in": "x"}, build)
    assert calls and not record.cached and record.info == {"child": False}
    assert store.lookup("stage", key) is not None
    assert sorted(p.name for p in (root / "stage").iterdir() if not p.name.startswith(".")) == [key]
    assert store.run("stage", {"a": 1}, {"in": "x"}, build).cached and len(calls) == 1


def test_sigkill_inside_the_prepare_stage(tmp_path, sentiment_data):
    root = tmp_path / "store"
    marker = tmp_path / "marker"
    task, pool = sentiment_data / "task.yaml", sentiment_data / "pool.csv"
    kill_at_marker(["prepare", str(root), str(task), str(pool), str(marker)], marker, tmp_path / "child.log")
    (half,) = temp_leftovers(root / "prepare")
    assert (half / "labeled.parquet").is_file() and not (half / "unlabeled.parquet").exists()
    assert [p for p in (root / "prepare").iterdir() if not p.name.startswith(".")] == []
    store = ArtifactStore(root)
    record = stages.prepare(store, TaskSpec.from_yaml(task),
                            DataConfig(pool=DataSource(path=str(pool)), n_labeled=4, seed=0))
    assert not record.cached
    assert read_table(record.out("labeled").path).num_rows == 4
    assert read_table(record.out("unlabeled").path).num_rows == 36
    assert stages.prepare(store, TaskSpec.from_yaml(task),
                          DataConfig(pool=DataSource(path=str(pool)), n_labeled=4, seed=0)).cached
