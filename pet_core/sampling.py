"""Seeded sampling of labelled T and unlabelled D (and the holdout test) from a labelled pool, and label counts.

Every draw of a run goes through ``hold_out`` then ``draw``; the prepare stage and validation both call them.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import pyarrow as pa

from pet_core.data import DataError

if TYPE_CHECKING:
    from pet_core.run_config import DataConfig


def _allocate(counts: dict[str, int], n: int, floor: int = 0) -> dict[str, int]:
    """Split n over labels proportionally to counts (largest remainder), each capped by its count; then raise
    every label to ``floor`` (or all it has), one example at a time from the label with the most."""
    alloc = _proportional(counts, n)
    for label in sorted(counts):
        while alloc[label] < min(floor, counts[label]):
            donors = [k for k in alloc if alloc[k] > min(floor, counts[k])]
            if not donors:
                need = sum(min(floor, c) for c in counts.values())
                raise DataError(f"min_per_label={floor} over {len(counts)} labels needs {need} examples but "
                                f"n_labeled={n}; raise n_labeled or lower min_per_label")
            alloc[max(donors, key=lambda k: (alloc[k], k))] -= 1
            alloc[label] += 1
    return alloc


def _proportional(counts: dict[str, int], n: int) -> dict[str, int]:
    """Split n over labels proportionally to counts (largest remainder), each capped by its count."""
    total = sum(counts.values())
    quotas = {k: n * c / total for k, c in counts.items()}
    alloc = {k: min(counts[k], math.floor(q)) for k, q in quotas.items()}
    order = sorted(counts, key=lambda k: (-(quotas[k] - math.floor(quotas[k])), k))
    while sum(alloc.values()) < n:
        progressed = False
        for k in order:
            if sum(alloc.values()) >= n:
                break
            if alloc[k] < counts[k]:
                alloc[k] += 1
                progressed = True
        if not progressed:
            break
    return alloc


def sample_split(
    pool: pa.Table,
    n_labeled: int,
    n_unlabeled: int | None,
    seed: int,
    per_label: bool = False,
    hide_labels: bool = True,
    min_per_label: int = 0,
) -> tuple[pa.Table, pa.Table]:
    """Draw labelled T (stratified: n total keeping ratios, at least ``min_per_label`` of each label; or n per
    label) and disjoint unlabelled D.

    D's labels are removed unless ``hide_labels=False``. Raises DataError when the pool cannot
    supply the request.
    """
    labels = pool.column("label").to_pylist()
    if any(label is None for label in labels):
        raise DataError("the pool for T must be labelled")
    rng = np.random.default_rng(seed)
    by_label: dict[str, list[int]] = {}
    for i, label in enumerate(labels):
        by_label.setdefault(label, []).append(i)
    counts = {k: len(v) for k, v in by_label.items()}
    if per_label:
        want = {k: n_labeled for k in by_label}
        short = {k: c for k, c in counts.items() if c < n_labeled}
        if short:
            raise DataError(f"n_labeled={n_labeled} per label but the pool has only {short}")
    else:
        if n_labeled > len(pool):
            raise DataError(f"n_labeled={n_labeled} is larger than the pool ({len(pool)} rows)")
        want = _allocate(counts, n_labeled, min_per_label)
    chosen: list[int] = []
    for label in sorted(by_label):
        idx = np.array(by_label[label])
        chosen.extend(rng.permutation(idx)[: want[label]].tolist())
    chosen_set = set(chosen)
    rest = np.array([i for i in range(len(pool)) if i not in chosen_set], dtype=np.int64)
    rest = rng.permutation(rest)
    if n_unlabeled is not None:
        if n_unlabeled > len(rest):
            raise DataError(f"n_unlabeled={n_unlabeled} but only {len(rest)} pool rows remain after T")
        rest = rest[:n_unlabeled]
    labeled = pool.take(pa.array(sorted(chosen), pa.int64()))
    unlabeled = pool.take(pa.array(np.sort(rest), pa.int64()))
    if hide_labels:
        unlabeled = unlabeled.set_column(3, "label", pa.nulls(len(unlabeled), pa.string()))
    return labeled, unlabeled


def hold_out(pool: pa.Table, data: DataConfig) -> tuple[pa.Table | None, pa.Table]:
    """The run's holdout test rows (``data.holdout``, drawn with seed + 1, labels kept) and the pool left for
    T and D; (None, pool) without a holdout. Used by the prepare stage and by validation alike."""
    if data.holdout is None:
        return None, pool
    return sample_split(pool, data.holdout, None, data.seed + 1, hide_labels=False)


def draw(pool: pa.Table, data: DataConfig) -> tuple[pa.Table, pa.Table]:
    """The run's T and D from what ``hold_out`` left of the pool (the one place the draw is written)."""
    return sample_split(pool, data.n_labeled, data.n_unlabeled, data.seed, data.per_label,
                        min_per_label=data.min_per_label)


def label_counts(table: pa.Table) -> dict[str, int]:
    """Number of rows per label name (nulls excluded)."""
    series = pd.Series(table.column("label").to_pylist(), dtype="object").dropna()
    return {str(k): int(v) for k, v in series.value_counts().sort_index().items()}


def describe(table: pa.Table) -> dict[str, Any]:
    """Small summary for reports: rows and label counts."""
    return {"rows": table.num_rows, "labels": label_counts(table)}
