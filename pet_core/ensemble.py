"""Ensembling: merge the raw label logits of several PVP models into one matrix and soft labels."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from pet_core.artifacts import ArtifactError, float_rows, logits_of, read_table
from pet_core.config import EnsembleConfig, Reduction
from pet_core.metrics import classification_metrics


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """Row-wise softmax of logits / temperature, computed stably in float64."""
    z = logits.astype(np.float64) / temperature
    z -= z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return (e / e.sum(axis=1, keepdims=True)).astype(np.float32)


def model_weights(accuracies: Sequence[float | None], reduction: Reduction) -> np.ndarray:
    """Ensemble weights: pre-training accuracy on T for wmean (uniform if none/all zero), else uniform."""
    n = len(accuracies)
    if n == 0:
        raise ValueError("cannot merge an empty ensemble")
    if reduction is Reduction.mean or any(a is None for a in accuracies):
        return np.full(n, 1.0 / n)
    w = np.asarray(accuracies, dtype=np.float64)
    if w.sum() <= 0:
        return np.full(n, 1.0 / n)
    return w / w.sum()


def merge_logits(stack: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Weighted mean over models of a (models, n, |L|) stack."""
    return np.tensordot(weights, stack, axes=1).astype(np.float32)


def load_aligned(paths: Sequence[str | Path]) -> tuple[list[str], np.ndarray, list[str]]:
    """Read logits files and align them on example_id: (ids, (models, n, |L|) stack, model ids)."""
    ids: list[str] | None = None
    stack, names = [], []
    for path in paths:
        table = read_table(path)
        these = table.column("example_id").to_pylist()
        logits = logits_of(table)
        if not np.isfinite(logits).all():
            raise ArtifactError(f"{path}: logits contain NaN/inf; rescore that model")
        if ids is None:
            ids = these
        elif these != ids:
            order = {e: i for i, e in enumerate(these)}
            missing = [e for e in ids if e not in order]
            if missing or len(these) != len(ids):
                raise ArtifactError(f"{path}: example ids differ from {paths[0]} (e.g. {missing[:3]})")
            logits = logits[[order[e] for e in ids]]
        stack.append(logits)
        names.append(table.column("model_id")[0].as_py() if table.num_rows else Path(path).stem)
    if ids is None:
        raise ValueError("no logits files to merge")
    return ids, np.stack(stack), names


def merge(
    paths: Sequence[str | Path],
    accuracies: Sequence[float | None],
    label_names: list[str],
    config: EnsembleConfig,
) -> pa.Table:
    """Soft labels of an ensemble: merged logits, softmax(merged / T) and the argmax label."""
    ids, stack, _ = load_aligned(paths)
    weights = model_weights(accuracies, config.reduction)
    merged = merge_logits(stack, weights)
    soft = softmax(merged, config.temperature)
    width = len(label_names)
    return pa.table({
        "example_id": pa.array(ids, pa.string()),
        "logits": float_rows(merged, width),
        "soft_labels": float_rows(soft, width),
        "label": pa.array([label_names[i] for i in soft.argmax(1)], pa.string()),
    })


def ensemble_metrics(label_names: list[str], logits_paths: Sequence[str | Path], accuracies: Sequence[float | None],
                     labelled: pa.Table, reduction: Reduction) -> dict[str, Any]:
    """Accuracy of each model and the metrics of their ensemble (merged with ``reduction``) on a labelled
    table whose example ids the logits files cover."""
    index = {n: i for i, n in enumerate(label_names)}
    order = {e: i for i, e in enumerate(labelled.column("example_id").to_pylist())}
    gold_all = np.array([index[x] for x in labelled.column("label").to_pylist()], dtype=np.int64)
    ids, stack, names = load_aligned(logits_paths)
    gold = gold_all[[order[e] for e in ids]]
    per_model = {name: classification_metrics(gold, stack[i].argmax(1), label_names)["accuracy"]
                 for i, name in enumerate(names)}
    merged = merge_logits(stack, model_weights(accuracies, reduction))
    return {"models": per_model, "ensemble": classification_metrics(gold, softmax(merged).argmax(1), label_names)}
