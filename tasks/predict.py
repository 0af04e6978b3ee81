"""Predictions of a distilled classifier on a file: what ``petflow predict`` runs (no Prefect run needed)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pyarrow as pa

from pet_core.artifacts import write_table
from pet_core.config import DistillConfig, ModelConfig
from pet_core.data import DataError, DataSource, read_raw, to_examples
from pet_core.spec import TaskSpec


def input_table(path: str | Path, spec: TaskSpec | None) -> tuple[pa.Table, list[str] | None]:
    """An example table from a data file, and its raw label values when it has a label column.

    Mapped by ``spec`` (a label outside the spec becomes None), else from columns a/text, b, example_id/id.
    """
    frame = read_raw(DataSource(path=str(path)))
    if spec is not None:
        table = to_examples(frame, spec, origin=str(path), labeled=False)
        if spec.fields.label not in frame.columns:
            return table, None
        raw = [raw_key(v) for v in frame[spec.fields.label].tolist()]
        mapping = spec.raw_to_label()
        gold = pa.array([mapping.get(k) for k in raw], pa.string())
        return table.set_column(table.schema.get_field_index("label"), "label", gold), raw
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
    }), None


class NotAClassifier(ValueError):
    """The model directory given to ``predict`` is not a distilled sequence classifier of this task."""


def raw_key(value: Any) -> str:
    """A raw label value as the spec's ``raw`` keys are written ('' when empty)."""
    return "" if value is None or (isinstance(value, float) and math.isnan(value)) else str(value).strip()


def check_classifier(model_dir: Path, spec: TaskSpec | None) -> None:
    """Raise NotAClassifier unless ``model_dir`` holds a sequence classifier (of ``spec``'s labels, if given)."""
    if model_dir.is_file():
        raise NotAClassifier(f"{model_dir} is a file, not a model folder; pass the classifier folder "
                             "(.petflow/runs/<run>/links/classifier)")
    config_file = model_dir / "config.json"
    if not config_file.is_file():
        return  # not a local model folder (or a broken one): the loader names the problem
    try:
        config = json.loads(config_file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise NotAClassifier(f"{config_file}: cannot read it ({err}); re-copy the classifier folder") from err
    from pet_core.kinds.registry import TRAIN_RECORD

    architectures = config.get("architectures") or []
    hint = "pass the classifier: .petflow/runs/<run>/links/classifier"
    if any(a.endswith("ForMaskedLM") for a in architectures):
        what = "a PVP model" if (model_dir / TRAIN_RECORD).is_file() else "a backbone"
        raise NotAClassifier(f"{model_dir} is {what} (masked LM), not a sequence classifier; {hint}")
    if not any(a.endswith("ForSequenceClassification") for a in architectures):
        raise NotAClassifier(f"{model_dir} is not a sequence classifier (architectures {architectures}); {hint}")
    labels = [v for _, v in sorted((int(k), v) for k, v in (config.get("id2label") or {}).items())]
    if spec is not None and sorted(labels) != sorted(spec.label_names):
        raise NotAClassifier(f"{model_dir} predicts labels {labels}, but task {spec.name!r} has "
                             f"{spec.label_names}; pass the classifier of a run of this task")


def trained_settings(model_dir: Path) -> dict[str, Any]:
    """max_seq_length and precision the classifier was distilled with (its record), so that predictions
    equal the run's own; empty for classifiers from before the record held them."""
    from pet_core.artifacts import read_json
    from pet_core.distill import DISTILL_RECORD, INFERENCE_FIELDS

    record = model_dir / DISTILL_RECORD
    settings = read_json(record).get("model", {}) if record.is_file() else {}
    return {k: v for k, v in settings.items() if k in INFERENCE_FIELDS}


def predict_file(model_dir: str | Path, input_path: str | Path, out_path: str | Path,
                 spec_path: str | Path | None = None, model_updates: dict[str, Any] | None = None) -> dict[str, Any]:
    """Write example_id, logits, label (Parquet, atomic); returns rows, label counts, accuracy if gold given.

    Rows whose gold label is empty or outside the spec are predicted but left out of the accuracy; ``skipped``
    counts them and ``first_skipped`` is the first as (row number, raw value).
    """
    from pet_core.distill import evaluate

    spec = TaskSpec.from_yaml(spec_path) if spec_path else None
    check_classifier(Path(model_dir), spec)
    model = ModelConfig(backbone=str(model_dir), **{**trained_settings(Path(model_dir)), **(model_updates or {})})
    table, raw = input_table(input_path, spec)
    gold = table.column("label").to_pylist()
    unlabeled = table.set_column(table.schema.get_field_index("label"), "label",
                                 pa.nulls(table.num_rows, pa.string()))
    _, predictions = evaluate(model_dir, unlabeled, model, DistillConfig().eval_batch_size)
    write_table(predictions, out_path)
    labels = predictions.column("label").to_pylist()
    summary: dict[str, Any] = {"rows": predictions.num_rows, "accuracy": None, "skipped": 0,
                               "labels": {k: labels.count(k) for k in sorted(set(labels))}}
    if raw is not None:
        known = [(g, p) for g, p in zip(gold, labels, strict=True) if g is not None]
        summary["skipped"] = len(gold) - len(known)
        summary["first_skipped"] = next(((i, raw[i]) for i, g in enumerate(gold) if g is None), None)
        summary["accuracy"] = sum(g == p for g, p in known) / len(known) if known else None
    return summary
