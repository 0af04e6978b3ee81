"""iPET: grow each model's training set from the soft labels of a random subset of the other models.

Generation j adds |T|·d^j − |T| examples (d = scale factor), labelled by a λ-fraction (at least one)
of the *other* models of generation j−1, merged by the run's ensemble reduction (wmean by default) and
softmaxed at T = 1, sampled without replacement with probability ∝ confidence, keeping T's label ratio.
A label with too few candidates contributes what it has and the shortfall is reported (the reference
loops forever there).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from pet_core.config import IpetConfig, Reduction
from pet_core.ensemble import load_aligned, merge_logits, model_weights, softmax


@dataclass
class GenerationSet:
    """The new training set of one model and how it was built."""

    table: pa.Table
    labellers: list[str]
    requested: dict[str, int]
    added: dict[str, int]
    shortfall: dict[str, int] = field(default_factory=dict)

    def report(self) -> dict[str, Any]:
        """Sizes and label distribution for UI tables."""
        return {"rows": self.table.num_rows, "labellers": self.labellers, "requested": self.requested,
                "added": self.added, "shortfall": self.shortfall}


def examples_to_add(n_labeled: int, generation: int, config: IpetConfig) -> int:
    """|T|·d^j − |T| (zero-shot: from 10/d)."""
    base = n_labeled if n_labeled > 0 else 10 / config.scale_factor
    return int(base * config.scale_factor**generation - base)


def n_labellers(n_models: int, fraction: float) -> int:
    """How many of the other models label a model's new set: round(λ·(n−1)), at least one."""
    if n_models < 2:
        raise ValueError(f"iPET needs at least 2 models per generation, got {n_models}")
    return max(1, min(n_models - 1, round(fraction * (n_models - 1))))


def largest_remainder(weights: dict[str, float], n: int) -> dict[str, int]:
    """Split n proportionally to weights, rounding by largest remainder (sums to n exactly)."""
    total = sum(weights.values())
    quotas = {k: n * w / total for k, w in weights.items()}
    out = {k: int(q) for k, q in quotas.items()}
    for k in sorted(weights, key=lambda k: (-(quotas[k] - int(quotas[k])), k))[: n - sum(out.values())]:
        out[k] += 1
    return out


def per_label_quota(n_add: int, labeled_counts: dict[str, int], label_names: list[str]) -> dict[str, int]:
    """Split n_add over labels in T's ratio (uniform when T is empty)."""
    present = {name: float(labeled_counts[name]) for name in label_names if labeled_counts.get(name, 0) > 0}
    quota = largest_remainder(present or dict.fromkeys(label_names, 1.0), max(n_add, 0))
    return {name: quota.get(name, 0) for name in label_names}


def sample_by_confidence(
    probs: np.ndarray, quota: dict[int, int], rng: np.random.Generator,
) -> tuple[np.ndarray, dict[int, int]]:
    """Per label l, draw quota[l] rows predicted as l, without replacement, p ∝ confidence.

    Returns the chosen row indices and, per label, how many could not be drawn.
    """
    predicted = probs.argmax(1)
    confidence = probs.max(1).astype(np.float64)
    chosen, shortfall = [], {}
    for label, want in quota.items():
        if want <= 0:
            continue
        candidates = np.flatnonzero(predicted == label)
        take = min(want, len(candidates))
        if take < want:
            shortfall[label] = want - take
        if take == 0:
            continue
        p = confidence[candidates]
        p = p / p.sum() if p.sum() > 0 else None
        chosen.append(rng.choice(candidates, size=take, replace=False, p=p))
    rows = np.concatenate(chosen) if chosen else np.zeros(0, dtype=np.int64)
    return np.sort(rows), shortfall


def top_k_per_label(probs: np.ndarray, k: int) -> np.ndarray:
    """Zero-shot start: per label, the k rows predicted as it with the highest probability of it."""
    predicted = probs.argmax(1)
    rows = []
    for label in range(probs.shape[1]):
        candidates = np.flatnonzero(predicted == label)
        rows.append(candidates[np.argsort(-probs[candidates, label], kind="stable")[:k]])
    return np.sort(np.concatenate(rows)) if rows else np.zeros(0, dtype=np.int64)


def next_generation(
    labeled: pa.Table,
    unlabeled: pa.Table,
    logits_paths: Sequence[str | Path],
    accuracies: Sequence[float | None],
    generation: int,
    config: IpetConfig,
    label_names: list[str],
    seed: int,
    reduction: Reduction = Reduction.wmean,
) -> list[GenerationSet]:
    """One new training set per model of the previous generation (same order as ``logits_paths``).

    The labellers' logits are merged with the run's ensemble ``reduction`` (PET's default: wmean).
    """
    ids, stack, names = load_aligned(logits_paths)
    order = {e: i for i, e in enumerate(unlabeled.column("example_id").to_pylist())}
    missing = [e for e in ids if e not in order]
    if missing or len(ids) != unlabeled.num_rows:
        raise ValueError(f"logits do not cover the unlabelled set exactly (e.g. {missing[:3]})")
    unlabeled = unlabeled.take(pa.array([order[e] for e in ids], pa.int64()))
    n_models = len(names)
    k = n_labellers(n_models, config.labeller_fraction)
    counts: dict[str, int] = {}
    for label in labeled.column("label").to_pylist():
        counts[label] = counts.get(label, 0) + 1
    quota = per_label_quota(examples_to_add(labeled.num_rows, generation, config), counts, label_names)
    sets = []
    for i in range(n_models):
        rng = np.random.default_rng([seed, generation, i])
        others = [j for j in range(n_models) if j != i]
        chosen_models = sorted(rng.choice(others, size=k, replace=False).tolist())
        weights = model_weights([accuracies[j] for j in chosen_models], reduction)
        probs = softmax(merge_logits(stack[chosen_models], weights), config.temperature)
        requested = quota
        if labeled.num_rows == 0 and generation == 1:
            rows = top_k_per_label(probs, config.zero_shot_top_k)
            requested = dict.fromkeys(label_names, config.zero_shot_top_k)
            picked = np.bincount(probs[rows].argmax(1), minlength=len(label_names)) if len(rows) else \
                np.zeros(len(label_names), dtype=np.int64)
            shortfall = {label_names[li]: int(config.zero_shot_top_k - c) for li, c in enumerate(picked)
                         if c < config.zero_shot_top_k}
        else:
            rows, short_idx = sample_by_confidence(
                probs, {label_names.index(n): q for n, q in quota.items()}, rng)
            shortfall = {label_names[li]: v for li, v in short_idx.items()}
        added = unlabeled.take(pa.array(rows, pa.int64()))
        new_labels = [label_names[li] for li in probs[rows].argmax(1)] if len(rows) else []
        added = added.set_column(3, "label", pa.array(new_labels, pa.string()))
        table = pa.concat_tables([labeled.cast(added.schema), added])
        added_counts: dict[str, int] = {}
        for label in new_labels:
            added_counts[label] = added_counts.get(label, 0) + 1
        sets.append(GenerationSet(table, [names[j] for j in chosen_models], requested, added_counts, shortfall))
    return sets
