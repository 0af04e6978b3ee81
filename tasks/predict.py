"""Predictions of a distilled classifier on a file: what ``petflow predict`` runs (no Prefect run needed)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow as pa

from pet_core.artifacts import write_table
from pet_core.config import DistillConfig, ModelConfig
from pet_core.data import DataError, DataSource, read_raw, to_examples
from pet_core.spec import TaskSpec


def input_table(path: str | Path, spec: TaskSpec | None) -> pa.Table:
    """An example table from a data file: mapped by ``spec``, else from columns a/text, b, example_id/id."""
    frame = read_raw(DataSource(path=str(path)))
    if spec is not None:
        return to_examples(frame, spec, origin=str(path), labeled=spec.fields.label in frame.columns)
    text = next((c for c in ("a", "text") if c in frame.columns), None)
    if text is None:
        raise DataError(f"{path}: no column `a` or `text` (found {list(frame.columns)}); pass --task SPEC")
    ids = next((c for c in ("example_id", "id") if c in frame.columns), None)
    return pa.table({
        "example_id": pa.array(frame[ids].astype(str).tolist() if ids else [f"r{i}" for i in range(len(frame))],
                               pa.string()),
        "a": pa.array(frame[text].fillna("").astype(str).tolist(), pa.string()),
        "b": pa.array(frame["b"].fillna("").astype(str).tolist() if "b" in frame.columns else [None] * len(frame),
                      pa.string()),
        "label": pa.nulls(len(frame), pa.string()),
    })


def predict_file(model_dir: str | Path, input_path: str | Path, out_path: str | Path,
                 spec_path: str | Path | None = None, model_updates: dict[str, Any] | None = None) -> dict[str, Any]:
    """Write example_id, logits, label (Parquet, atomic); returns rows, label counts, accuracy if gold given."""
    from pet_core.distill import evaluate

    model = ModelConfig(backbone=str(model_dir), **(model_updates or {}))
    spec = TaskSpec.from_yaml(spec_path) if spec_path else None
    table = input_table(input_path, spec)
    metrics, predictions = evaluate(model_dir, table, model, DistillConfig().eval_batch_size)
    write_table(predictions, out_path)
    labels = predictions.column("label").to_pylist()
    return {"rows": predictions.num_rows, "labels": {k: labels.count(k) for k in sorted(set(labels))},
            "accuracy": metrics.get("accuracy")}
