"""Child processes of the reliability tests (killed mid-write, or run concurrently). Not a test module.

    python _children.py write_table <target.parquet> <marker> <rows>
    python _children.py store <store root> <marker> <point>        point: build-start | build-mid | before-commit
    python _children.py prepare <store root> <task.yaml> <pool.csv> <marker>
    python _children.py pipeline <run.yaml> <result.json>

The kill children touch ``marker`` at their kill point and then sleep, so the parent can SIGKILL them
exactly there; they import no torch (fast to start). ``pipeline`` runs a whole tiny pipeline.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]


def park(marker: str) -> None:
    """Signal the parent that the kill point is reached, then wait to be killed."""
    Path(marker).touch()
    time.sleep(120)
    raise SystemExit("child was not killed")


def big_table(rows: int):
    import numpy as np
    import pyarrow as pa

    rng = np.random.default_rng(0)
    words = np.array(["alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta"])
    text = [" ".join(row) for row in words[rng.integers(0, len(words), size=(rows, 6))]]
    return pa.table({"example_id": [f"r{i}" for i in range(rows)], "a": text,
                     "logits": pa.FixedSizeListArray.from_arrays(
                         pa.array(rng.standard_normal(rows * 4).astype("float32")), 4)})


def write_table_child(target: str, marker: str, rows: str) -> None:
    """artifacts.write_table of a big table, parked after its first row group reached the temp file."""
    import pyarrow.parquet as pq

    from pet_core import artifacts

    def slow_write(table, where, **kwargs):
        with pq.ParquetWriter(where, table.schema) as writer:
            for i, batch in enumerate(table.to_batches(max_chunksize=max(1, table.num_rows // 10))):
                writer.write_batch(batch)
                if i == 0:
                    park(marker)

    pq.write_table = slow_write  # artifacts calls pq.write_table on the temp path
    artifacts.write_table(big_table(int(rows)), target)


def store_child(root: str, marker: str, point: str) -> None:
    """ArtifactStore.run of a small stage, parked at ``point``."""
    from pet_core import store as store_module
    from pet_core.artifacts import write_table

    if point == "before-commit":  # record.json is written in the temp dir, the rename has not happened
        real = store_module.publish_mode

        def publish_then_park(path):
            real(path)
            park(marker)

        store_module.publish_mode = publish_then_park

    def build(tmp: Path):
        if point == "build-start":
            park(marker)
        write_table(big_table(1000), tmp / "data.parquet")
        if point == "build-mid":
            park(marker)
        (tmp / "model").mkdir()
        (tmp / "model" / "weights.bin").write_bytes(b"w" * 4096)
        return {"data": "data.parquet", "model": "model"}, {"child": True}

    store_module.ArtifactStore(root).run("stage", {"a": 1}, {"in": "x"}, build)


def prepare_child(root: str, task: str, pool: str, marker: str) -> None:
    """stages.prepare, parked after T was written and before D is."""
    from pet_core import stages
    from pet_core.data import DataSource
    from pet_core.run_config import DataConfig
    from pet_core.spec import TaskSpec
    from pet_core.store import ArtifactStore

    real = stages.write_table
    written = []

    def write_then_park(table, path):
        out = real(table, path)
        written.append(path)
        if len(written) == 1:
            park(marker)
        return out

    stages.write_table = write_then_park
    data = DataConfig(pool=DataSource(path=pool), n_labeled=4, seed=0)
    stages.prepare(ArtifactStore(root), TaskSpec.from_yaml(task), data)


def pipeline_child(config_path: str, result_path: str) -> None:
    """pipeline.run of a run config; write its summary and the records it returned.

    Also the target of forkserver processes (tests/reliability/test_isolation.py), hence importable.
    """
    import os

    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE"):
        os.environ.setdefault(name, "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import torch
    import transformers

    torch.set_num_threads(1)
    transformers.logging.set_verbosity_error()
    from pet_core import pipeline
    from pet_core.run_config import RunConfig

    config = RunConfig.from_yaml(config_path)
    result = pipeline.run(config)
    summary = result.summary(config.task_spec(), config)
    records = [{"stage": r.stage, "key": r.key, "cached": r.cached} for r in result.records]
    Path(result_path).write_text(json.dumps({"summary": summary, "records": records}, default=str))


if __name__ == "__main__":
    mode, *args = sys.argv[1:]
    {"write_table": write_table_child, "store": store_child, "prepare": prepare_child,
     "pipeline": pipeline_child}[mode](*args)
