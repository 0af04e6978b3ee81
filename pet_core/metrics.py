"""Metrics: accuracy, macro-F1 and the confusion matrix, from gold and predicted label indices."""

from __future__ import annotations

from typing import Any

import numpy as np


def confusion(gold: np.ndarray, pred: np.ndarray, n_labels: int) -> np.ndarray:
    """(gold, predicted) count matrix."""
    matrix = np.zeros((n_labels, n_labels), dtype=np.int64)
    np.add.at(matrix, (gold, pred), 1)
    return matrix


def classification_metrics(gold: np.ndarray, pred: np.ndarray, label_names: list[str]) -> dict[str, Any]:
    """Accuracy, macro-F1 (over all spec labels) and the confusion matrix as nested lists."""
    gold = np.asarray(gold)
    pred = np.asarray(pred)
    matrix = confusion(gold, pred, len(label_names))
    tp = np.diag(matrix).astype(np.float64)
    precision = np.divide(tp, matrix.sum(0), out=np.zeros_like(tp), where=matrix.sum(0) > 0)
    recall = np.divide(tp, matrix.sum(1), out=np.zeros_like(tp), where=matrix.sum(1) > 0)
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros_like(tp), where=denom > 0)
    return {
        "n": len(gold),
        "accuracy": float((gold == pred).mean()) if len(gold) else 0.0,
        "macro_f1": float(f1.mean()),
        "per_class_f1": {name: float(v) for name, v in zip(label_names, f1, strict=True)},
        "confusion": matrix.tolist(),
        "labels": list(label_names),
    }


def confusion_markdown(metrics: dict[str, Any]) -> str:
    """A markdown table of the confusion matrix (rows gold, columns predicted)."""
    names = metrics["labels"]
    lines = ["| gold \\ pred | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    for name, row in zip(names, metrics["confusion"], strict=True):
        lines.append(f"| {name} | " + " | ".join(str(v) for v in row) + " |")
    return "\n".join(lines)


SYSTEMS = ("baseline", "ensemble", "final")
SYSTEM_NAMES = {"baseline": "supervised baseline (T only)", "ensemble": "PET ensemble", "final": "final classifier"}


def comparison(accuracy: dict[str, dict[str, float | None]], tolerance: float = 0.02) -> dict[str, Any]:
    """What PET bought, per split: ``accuracy[split][system]`` for the systems in ``SYSTEMS``.

    Returns {"rows": [{"split", "baseline", "ensemble", "final"}], "warnings": [...]}: one warning per
    split on which the final classifier is more than ``tolerance`` below the ensemble it was distilled
    from, naming both numbers.
    """
    rows, warnings = [], []
    for split, values in accuracy.items():
        rows.append({"split": split, **{s: values.get(s) for s in SYSTEMS}})
        ensemble, final = values.get("ensemble"), values.get("final")
        if ensemble is not None and final is not None and final < ensemble - tolerance:
            warnings.append(f"the final classifier ({final:.1%}) is {ensemble - final:.1%} below the ensemble it "
                            f"was distilled from ({ensemble:.1%}) on {split}: raise distill.epochs or "
                            "distill.max_steps, or use the ensemble's soft labels directly")
    return {"rows": rows, "warnings": warnings}


def comparison_markdown(result: dict[str, Any]) -> str:
    """The comparison as a markdown table (accuracy in %), then its warnings."""
    head = "| split | " + " | ".join(SYSTEM_NAMES[s] for s in SYSTEMS) + " |"
    lines = [head, "|---" * (len(SYSTEMS) + 1) + "|"]
    for row in result["rows"]:
        cells = ["–" if row[s] is None else f"{row[s]:.1%}" for s in SYSTEMS]
        lines.append(f"| {row['split']} | " + " | ".join(cells) + " |")
    lines += [""] + [f"> **Warning:** {w}" for w in result["warnings"]]
    return "\n".join(lines).rstrip() + "\n"
