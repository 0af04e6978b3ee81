"""pet_core.ipet: the sizes, labellers and sampling of iPET generations."""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pet_core.artifacts import EXAMPLES_SCHEMA, logits_table, write_table
from pet_core.config import IpetConfig, Reduction
from pet_core.ensemble import softmax
from pet_core.ipet import (
    examples_to_add, largest_remainder, n_labellers, next_generation, per_label_quota, sample_by_confidence,
    top_k_per_label,
)

LABELS = ["World", "Sports", "Business"]


def examples(n: int, labels=None, prefix="d") -> pa.Table:
    return pa.table({"example_id": [f"{prefix}{i}" for i in range(n)], "a": [f"text {prefix}{i}" for i in range(n)],
                     "b": pa.nulls(n, pa.string()),
                     "label": pa.array(labels if labels is not None else [None] * n, pa.string())},
                    schema=EXAMPLES_SCHEMA)


def write_models(tmp_path: Path, ids, stack) -> list[Path]:
    return [write_table(logits_table(list(ids), stack[k], model_id=f"g0-p{k}-s0"), tmp_path / f"m{k}.parquet")
            for k in range(len(stack))]


def random_stack(n_models, n, n_labels=3, seed=0):
    return (np.random.default_rng(seed).normal(size=(n_models, n, n_labels)) * 2).astype(np.float32)


# -- sizes ------------------------------------------------------------------------------------------------------
def test_examples_to_add_paper_values():
    cfg = IpetConfig()
    assert [examples_to_add(10, j, cfg) for j in (1, 2, 3)] == [40, 240, 1240]
    assert [examples_to_add(50, j, cfg) for j in (1, 2)] == [200, 1200]
    assert examples_to_add(0, 1, cfg) == 8 and examples_to_add(0, 2, cfg) == 48  # zero-shot: from 10/d
    assert examples_to_add(10, 0, cfg) == 0


@settings(max_examples=200, deadline=None)
@given(n=st.integers(0, 500), j=st.integers(0, 4), d=st.sampled_from([2.0, 3.0, 5.0, 10.0]))
def test_examples_to_add_property(n, j, d):
    cfg = IpetConfig(scale_factor=d)
    got = examples_to_add(n, j, cfg)
    base = n if n else 10 / d
    assert got == int(round(base * d**j - base)) or abs(got - (base * d**j - base)) < 1
    assert got >= 0
    if n:
        assert n + got == pytest.approx(n * d**j, abs=1)  # the new set holds |T|·d^j examples


def test_num_generations():
    cfg = IpetConfig()
    assert cfg.num_generations(10) == 3 and cfg.num_generations(50) == 2 and cfg.num_generations(100) == 2
    assert cfg.num_generations(1000) == 1
    assert IpetConfig(generations=4).num_generations(10) == 4


def test_ipet_config_defaults():
    cfg = IpetConfig()
    assert cfg.scale_factor == 5.0 and cfg.labeller_fraction == 0.25 and cfg.temperature == 1.0
    assert cfg.zero_shot_top_k == 100


# -- labellers --------------------------------------------------------------------------------------------------
def test_n_labellers_values():
    assert n_labellers(2, 0.25) == 1
    assert n_labellers(3, 0.25) == 1  # reference crashes here (round(0.5) == 0)
    assert n_labellers(5, 0.25) == 1
    assert n_labellers(9, 0.25) == 2
    assert n_labellers(4, 1.0) == 3
    with pytest.raises(ValueError, match="at least 2 models"):
        n_labellers(1, 0.25)


@settings(max_examples=200, deadline=None)
@given(n=st.integers(2, 60), fraction=st.floats(0.001, 1.0))
def test_n_labellers_property(n, fraction):
    k = n_labellers(n, fraction)
    assert 1 <= k <= n - 1
    assert k == max(1, min(n - 1, round(fraction * (n - 1))))


# -- quotas -----------------------------------------------------------------------------------------------------
def test_per_label_quota_cases():
    assert per_label_quota(16, {"World": 3, "Sports": 1}, LABELS) == {"World": 12, "Sports": 4, "Business": 0}
    uniform = per_label_quota(10, {}, LABELS)  # T empty: uniform, the one extra example goes to one label
    assert list(uniform) == LABELS and sorted(uniform.values()) == [3, 3, 4]
    assert per_label_quota(0, {"World": 1}, LABELS) == {"World": 0, "Sports": 0, "Business": 0}
    assert per_label_quota(-3, {"World": 1}, LABELS) == {"World": 0, "Sports": 0, "Business": 0}


@settings(max_examples=300, deadline=None)
@given(n=st.integers(0, 3000), counts=st.lists(st.integers(0, 50), min_size=2, max_size=6))
def test_per_label_quota_property(n, counts):
    names = [f"l{i}" for i in range(len(counts))]
    labeled = {name: c for name, c in zip(names, counts, strict=True) if c}
    quota = per_label_quota(n, labeled, names)
    assert list(quota) == names
    assert sum(quota.values()) == n
    total = sum(labeled.values())
    for name in names:
        share = n * labeled.get(name, 0) / total if total else n / len(names)
        assert abs(quota[name] - share) < 1
        if total and not labeled.get(name):
            assert quota[name] == 0


@settings(max_examples=200, deadline=None)
@given(n=st.integers(0, 1000), weights=st.lists(st.floats(0.01, 100), min_size=1, max_size=8))
def test_largest_remainder_property(n, weights):
    w = {f"k{i}": x for i, x in enumerate(weights)}
    out = largest_remainder(w, n)
    assert sum(out.values()) == n
    total = sum(weights)
    assert all(abs(out[k] - n * x / total) < 1 + 1e-9 for k, x in w.items())


# -- sampling ---------------------------------------------------------------------------------------------------
probs_strategy = st.integers(1, 80).flatmap(lambda n: st.tuples(
    st.just(n), st.integers(2, 4), st.integers(0, 2**32 - 1)))


@settings(max_examples=200, deadline=None)
@given(shape=probs_strategy, quota=st.lists(st.integers(0, 40), min_size=4, max_size=4))
def test_sample_by_confidence_property(shape, quota):
    n, n_labels, seed = shape
    probs = softmax(np.random.default_rng(seed).normal(size=(n, n_labels)) * 3)
    q = {label: quota[label] for label in range(n_labels)}
    rows, shortfall = sample_by_confidence(probs, q, np.random.default_rng(seed))
    assert len(set(rows.tolist())) == len(rows)  # without replacement
    assert (np.diff(rows) > 0).all() if len(rows) > 1 else True
    predicted = probs.argmax(1)
    got = Counter(predicted[rows].tolist())
    available = Counter(predicted.tolist())
    for label, want in q.items():
        assert got[label] <= want
        assert got[label] == min(want, available[label])
        assert shortfall.get(label, 0) == max(0, want - available[label])
    assert set(shortfall) == {label for label, want in q.items() if want > available[label]}


def test_sample_by_confidence_prefers_confident_rows():
    probs = np.array([[0.99, 0.01], [0.51, 0.49], [0.2, 0.8]], dtype=np.float32)
    rng = np.random.default_rng(0)
    picks = Counter()
    for _ in range(3000):
        rows, short = sample_by_confidence(probs, {0: 1}, rng)
        assert not short
        picks[int(rows[0])] += 1
    assert picks.keys() == {0, 1}
    assert picks[0] / 3000 == pytest.approx(0.99 / 1.5, abs=0.03)  # p ∝ confidence


def test_top_k_per_label():
    probs = np.array([[0.9, 0.1], [0.6, 0.4], [0.7, 0.3], [0.2, 0.8], [0.45, 0.55], [0.8, 0.2]])
    np.testing.assert_array_equal(top_k_per_label(probs, 2), [0, 3, 4, 5])
    np.testing.assert_array_equal(top_k_per_label(probs, 10), [0, 1, 2, 3, 4, 5])
    np.testing.assert_array_equal(top_k_per_label(probs[:3], 1), [0])  # a label with no candidates adds none


# -- next_generation --------------------------------------------------------------------------------------------
@pytest.fixture
def setup(tmp_path):
    labeled = examples(4, ["World", "World", "World", "Sports"], prefix="t")
    unlabeled = examples(80)
    stack = random_stack(4, 80)
    paths = write_models(tmp_path, unlabeled.column("example_id").to_pylist(), stack)
    return labeled, unlabeled, stack, paths


def test_next_generation_sizes_and_contents(setup):
    labeled, unlabeled, stack, paths = setup
    cfg = IpetConfig()
    sets = next_generation(labeled, unlabeled, paths, [0.5, 0.6, 0.7, 0.8], 1, cfg, LABELS, seed=0)
    assert len(sets) == 4
    d_ids = set(unlabeled.column("example_id").to_pylist())
    for i, gen_set in enumerate(sets):
        table = gen_set.table
        assert gen_set.requested == {"World": 12, "Sports": 4, "Business": 0}  # 4·5 − 4 = 16 in T's ratio 3:1
        n_added = sum(gen_set.added.values())
        assert table.num_rows == 4 + n_added
        assert n_added + sum(gen_set.shortfall.values()) == 16
        assert table.slice(0, 4).column("example_id").to_pylist() == labeled.column("example_id").to_pylist()
        assert table.slice(0, 4).column("label").to_pylist() == labeled.column("label").to_pylist()
        added_ids = table.slice(4).column("example_id").to_pylist()
        assert len(set(added_ids)) == len(added_ids) and set(added_ids) <= d_ids
        assert table.column("label").null_count == 0
        assert Counter(table.slice(4).column("label").to_pylist()) == Counter(gen_set.added)
        # labellers: one (round(0.25·3) = 1) of the other models, never the model itself
        assert len(gen_set.labellers) == 1 and f"g0-p{i}-s0" not in gen_set.labellers
        report = gen_set.report()
        assert report["rows"] == table.num_rows and report["labellers"] == gen_set.labellers


@pytest.mark.parametrize("reduction", [Reduction.wmean, Reduction.mean])
def test_next_generation_labels_come_from_the_labellers(setup, reduction):
    """The labellers' logits are merged with the run's ensemble reduction (accuracy-weighted or plain mean)."""
    labeled, unlabeled, stack, paths = setup
    acc = [0.05, 0.1, 0.15, 0.95]  # skewed, so that the two reductions label differently
    cfg = IpetConfig(labeller_fraction=1.0)
    sets = next_generation(labeled, unlabeled, paths, acc, 1, cfg, LABELS, seed=0, reduction=reduction)
    index = {e: k for k, e in enumerate(unlabeled.column("example_id").to_pylist())}
    for i, gen_set in enumerate(sets):
        others = [j for j in range(4) if j != i]
        assert gen_set.labellers == [f"g0-p{j}-s0" for j in others]
        w = np.array([acc[j] if reduction is Reduction.wmean else 1.0 for j in others])
        w = w / w.sum()
        plain = np.tensordot(np.full(3, 1 / 3), stack[others], 1).argmax(1)
        weighted = np.tensordot(np.array([acc[j] for j in others]) / sum(acc[j] for j in others), stack[others],
                                1).argmax(1)
        assert (plain != weighted).any(), "the test data must tell the two reductions apart"
        merged = np.tensordot(w, stack[others], 1)
        added = gen_set.table.slice(4)
        for example_id, label in zip(added.column("example_id").to_pylist(), added.column("label").to_pylist(),
                                     strict=True):
            assert label == LABELS[int(merged[index[example_id]].argmax())]


def test_next_generation_two_models_label_each_other(tmp_path):
    labeled = examples(2, ["World", "Sports"], prefix="t")
    unlabeled = examples(40)
    stack = random_stack(2, 40, seed=3)
    paths = write_models(tmp_path, unlabeled.column("example_id").to_pylist(), stack)
    sets = next_generation(labeled, unlabeled, paths, [0.5, 0.5], 1, IpetConfig(), LABELS, seed=1)
    for i, gen_set in enumerate(sets):
        assert gen_set.labellers == [f"g0-p{1 - i}-s0"]
        added = gen_set.table.slice(2)
        rows = [int(e[1:]) for e in added.column("example_id").to_pylist()]
        assert added.column("label").to_pylist() == [LABELS[int(stack[1 - i][r].argmax())] for r in rows]


def test_next_generation_shortfall_is_reported(tmp_path):
    labeled = examples(3, ["World", "Sports", "Business"], prefix="t")
    unlabeled = examples(30)
    stack = np.zeros((3, 30, 3), np.float32)
    stack[:, :, 0] = 5.0  # every model predicts World everywhere ...
    stack[:, :2, :] = [0.0, 5.0, 0.0]  # ... except two Sports rows
    paths = write_models(tmp_path, unlabeled.column("example_id").to_pylist(), stack)
    sets = next_generation(labeled, unlabeled, paths, [0.3, 0.3, 0.3], 1, IpetConfig(), LABELS, seed=0)
    for gen_set in sets:
        assert gen_set.requested == {"World": 4, "Sports": 4, "Business": 4}
        assert gen_set.added == {"World": 4, "Sports": 2}
        assert gen_set.shortfall == {"Sports": 2, "Business": 4}
        assert gen_set.table.num_rows == 3 + 6


def test_next_generation_more_than_d_holds(setup):
    labeled, unlabeled, _, paths = setup
    sets = next_generation(labeled, unlabeled, paths, [0.5] * 4, 3, IpetConfig(), LABELS, seed=0)
    for gen_set in sets:  # 4·125 − 4 = 496 requested from 80 rows: take what exists, report the rest
        assert sum(gen_set.requested.values()) == 496
        assert gen_set.table.num_rows - 4 == sum(gen_set.added.values()) <= 80
        assert sum(gen_set.added.values()) + sum(gen_set.shortfall.values()) == 496


def test_next_generation_zero_shot_takes_top_k(tmp_path):
    unlabeled = examples(50)
    stack = random_stack(2, 50, seed=7)
    paths = write_models(tmp_path, unlabeled.column("example_id").to_pylist(), stack)
    empty = examples(0, [], prefix="t")
    cfg = IpetConfig(zero_shot_top_k=3)
    sets = next_generation(empty, unlabeled, paths, [None, None], 1, cfg, LABELS, seed=0)
    for i, gen_set in enumerate(sets):
        probs = softmax(stack[1 - i])
        predicted = probs.argmax(1)
        expected = set()
        for label in range(3):
            candidates = np.flatnonzero(predicted == label)
            expected |= set(candidates[np.argsort(-probs[candidates, label])[:3]].tolist())
        got = {int(e[1:]) for e in gen_set.table.column("example_id").to_pylist()}
        assert got == expected
        assert gen_set.table.num_rows == len(expected) <= 9
        assert gen_set.shortfall == {}
    # the second zero-shot generation samples |T|=0 → 10/d·d² − 10/d = 48, uniform over labels
    sets = next_generation(empty, unlabeled, paths, [None, None], 2, cfg, LABELS, seed=0)
    assert all(s.requested == {"World": 16, "Sports": 16, "Business": 16} for s in sets)


def test_next_generation_is_seeded(setup):
    labeled, unlabeled, _, paths = setup
    args = (labeled, unlabeled, paths, [0.5, 0.6, 0.7, 0.8], 1, IpetConfig(), LABELS)
    a = next_generation(*args, seed=5)
    b = next_generation(*args, seed=5)
    c = next_generation(*args, seed=6)
    assert all(x.table.equals(y.table) and x.labellers == y.labellers for x, y in zip(a, b, strict=True))
    assert any(not x.table.equals(y.table) for x, y in zip(a, c, strict=True))


def test_next_generation_aligns_unlabeled_order(setup):
    labeled, unlabeled, stack, paths = setup
    args = ([0.5, 0.6, 0.7, 0.8], 1, IpetConfig(labeller_fraction=1.0), LABELS)
    reversed_d = unlabeled.take(pa.array(np.arange(80)[::-1]))
    a = next_generation(labeled, unlabeled, paths, *args, seed=0)
    b = next_generation(labeled, reversed_d, paths, *args, seed=0)
    for x, y in zip(a, b, strict=True):
        assert x.table.equals(y.table)


def test_next_generation_rejects_uncovered_unlabeled(setup):
    labeled, unlabeled, _, paths = setup
    with pytest.raises(ValueError, match="do not cover the unlabelled set"):
        next_generation(labeled, unlabeled.slice(0, 79), paths, [0.5] * 4, 1, IpetConfig(), LABELS, seed=0)
    with pytest.raises(ValueError, match="at least 2 models"):
        next_generation(labeled, unlabeled, paths[:1], [0.5], 1, IpetConfig(), LABELS, seed=0)


@settings(max_examples=40, deadline=None)
@given(n_models=st.sampled_from([2, 3]), n_t=st.integers(0, 6), n_d=st.integers(1, 40),
       generation=st.integers(1, 3), seed=st.integers(0, 1000), fraction=st.floats(0.01, 1.0),
       skew=st.sampled_from([0.0, 1.0, 10.0]))
def test_next_generation_never_crashes(tmp_path_factory, n_models, n_t, n_d, generation, seed, fraction, skew):
    rng = np.random.default_rng(seed)
    labeled = examples(n_t, [LABELS[i] for i in rng.integers(0, 3, n_t)], prefix="t")
    unlabeled = examples(n_d)
    stack = (rng.normal(size=(n_models, n_d, 3)) + np.array([skew, 0, 0])).astype(np.float32)
    paths = write_models(tmp_path_factory.mktemp("ng"), unlabeled.column("example_id").to_pylist(), stack)
    acc = [None if n_t == 0 else float(x) for x in rng.random(n_models)]
    cfg = IpetConfig(labeller_fraction=fraction, zero_shot_top_k=5)
    sets = next_generation(labeled, unlabeled, paths, acc, generation, cfg, LABELS, seed=seed)
    assert len(sets) == n_models
    want = examples_to_add(n_t, generation, cfg)
    for i, gen_set in enumerate(sets):
        ids = gen_set.table.column("example_id").to_pylist()
        assert len(ids) == len(set(ids))
        assert gen_set.table.num_rows == n_t + sum(gen_set.added.values())
        assert 1 <= len(gen_set.labellers) <= n_models - 1 and f"g0-p{i}-s0" not in gen_set.labellers
        if not (n_t == 0 and generation == 1):
            assert sum(gen_set.added.values()) + sum(gen_set.shortfall.values()) == want
            assert all(gen_set.added.get(k, 0) <= q for k, q in gen_set.requested.items())


def test_scale_consistency_with_log_rule():
    cfg = IpetConfig()
    for n in (10, 50, 100):
        k = cfg.num_generations(n)
        assert n * cfg.scale_factor**k >= 1000 > n * cfg.scale_factor ** (k - 1)
        assert k == math.ceil(math.log(1000 / n, 5) - 1e-9)
