"""pet_core.ensemble: weights, merging of logits files, soft labels."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from pet_core.artifacts import ArtifactError, logits_of, logits_table, read_table, write_table
from pet_core.config import EnsembleConfig, Reduction, ScoreConfig
from pet_core.ensemble import load_aligned, merge, merge_logits, model_weights, softmax
from pet_core.scoring import score

LABELS = ["World", "Sports", "Business"]


def write_logits(path: Path, ids, logits, model_id="m") -> Path:
    return write_table(logits_table(list(ids), np.asarray(logits, np.float32), model_id=model_id, pattern=0,
                                    seed=0, generation=0), path)


@pytest.fixture
def three_models(tmp_path):
    rng = np.random.default_rng(0)
    ids = [f"d{i}" for i in range(12)]
    stack = rng.normal(size=(3, 12, 3)).astype(np.float32) * 3
    paths = [write_logits(tmp_path / f"m{k}.parquet", ids, stack[k], f"g0-p{k}-s0") for k in range(3)]
    return ids, stack, paths


# -- softmax and weights ----------------------------------------------------------------------------------------
def test_softmax():
    logits = np.array([[0.0, 0.0], [1.0, 3.0], [1000.0, 0.0]])
    out = softmax(logits)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out[0], [0.5, 0.5])
    np.testing.assert_allclose(out[1], np.exp([1, 3]) / np.exp([1, 3]).sum(), rtol=1e-6)
    np.testing.assert_allclose(out[2], [1.0, 0.0])
    np.testing.assert_allclose(softmax(logits[1:2], temperature=2.0)[0],
                               np.exp([0.5, 1.5]) / np.exp([0.5, 1.5]).sum(), rtol=1e-6)


def test_model_weights_cases():
    np.testing.assert_allclose(model_weights([0.5, 0.25, 0.25], Reduction.wmean), [0.5, 0.25, 0.25])
    np.testing.assert_allclose(model_weights([0.8, 0.2], Reduction.wmean), [0.8, 0.2])
    np.testing.assert_allclose(model_weights([0.9, 0.1], Reduction.mean), [0.5, 0.5])
    np.testing.assert_allclose(model_weights([0.9, None, 0.3], Reduction.wmean), [1 / 3] * 3)
    np.testing.assert_allclose(model_weights([0.0, 0.0], Reduction.wmean), [0.5, 0.5])
    with pytest.raises(ValueError, match="empty ensemble"):
        model_weights([], Reduction.wmean)


accuracies = st.lists(st.one_of(st.none(), st.floats(0.0, 1.0)), min_size=1, max_size=12)


@settings(max_examples=200, deadline=None)
@given(acc=accuracies, reduction=st.sampled_from(list(Reduction)))
def test_model_weights_properties(acc, reduction):
    w = model_weights(acc, reduction)
    assert w.shape == (len(acc),)
    assert (w >= 0).all()
    assert w.sum() == pytest.approx(1.0, abs=1e-9)
    uniform = reduction is Reduction.mean or any(a is None for a in acc) or sum(a for a in acc) == 0
    if uniform:
        np.testing.assert_allclose(w, 1 / len(acc))
    else:
        np.testing.assert_allclose(w, np.array(acc) / sum(acc), rtol=1e-9, atol=1e-12)


@settings(max_examples=50, deadline=None)
@given(stack=arrays(np.float32, st.tuples(st.integers(1, 4), st.integers(1, 6), st.integers(2, 4)),
                    elements=st.floats(-50, 50, width=32)))
def test_merge_logits_is_weighted_mean(stack):
    w = np.random.default_rng(0).random(stack.shape[0])
    w /= w.sum()
    np.testing.assert_allclose(merge_logits(stack, w), np.average(stack, axis=0, weights=w), rtol=1e-5, atol=1e-4)


# -- merge ------------------------------------------------------------------------------------------------------
def test_merge_weighted_mean_and_soft_labels(three_models):
    ids, stack, paths = three_models
    acc = [0.5, 0.3, 0.2]
    table = merge(paths, acc, LABELS, EnsembleConfig())
    assert table.column_names == ["example_id", "logits", "soft_labels", "label"]
    assert table.column("example_id").to_pylist() == ids
    expected = (0.5 * stack[0].astype(np.float64) + 0.3 * stack[1] + 0.2 * stack[2])
    merged = logits_of(table)
    np.testing.assert_allclose(merged, expected, rtol=1e-6, atol=1e-6)
    soft = logits_of(table, "soft_labels")
    z = np.exp(expected / 2.0 - (expected / 2.0).max(1, keepdims=True))
    np.testing.assert_allclose(soft, z / z.sum(1, keepdims=True), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(soft.sum(1), 1.0, rtol=1e-6)
    assert table.column("label").to_pylist() == [LABELS[i] for i in expected.argmax(1)]


def test_merge_mean_and_temperature(three_models):
    ids, stack, paths = three_models
    table = merge(paths, [0.9, 0.05, 0.05], LABELS, EnsembleConfig(reduction=Reduction.mean, temperature=1.0))
    expected = stack.astype(np.float64).mean(0)
    np.testing.assert_allclose(logits_of(table), expected, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(logits_of(table, "soft_labels"), softmax(expected, 1.0), rtol=1e-5)


def test_merge_without_accuracies_is_uniform(three_models):
    _, stack, paths = three_models
    table = merge(paths, [None, None, None], LABELS, EnsembleConfig())
    np.testing.assert_allclose(logits_of(table), stack.astype(np.float64).mean(0), rtol=1e-6, atol=1e-6)


def test_misaligned_files_are_aligned(tmp_path, three_models):
    ids, stack, paths = three_models
    perm = np.random.default_rng(1).permutation(len(ids))
    shuffled = write_logits(tmp_path / "shuffled.parquet", [ids[i] for i in perm], stack[1][perm], "g0-p1-s0")
    got_ids, got_stack, names = load_aligned([paths[0], shuffled, paths[2]])
    assert got_ids == ids and names == ["g0-p0-s0", "g0-p1-s0", "g0-p2-s0"]
    np.testing.assert_array_equal(got_stack, stack)
    a = merge(paths, [0.5, 0.3, 0.2], LABELS, EnsembleConfig())
    b = merge([paths[0], shuffled, paths[2]], [0.5, 0.3, 0.2], LABELS, EnsembleConfig())
    assert a.equals(b)


def test_mismatching_ids_raise(tmp_path, three_models):
    ids, stack, paths = three_models
    other = write_logits(tmp_path / "other.parquet", ids[:-1] + ["zz"], stack[1], "x")
    with pytest.raises(ArtifactError, match=r"other.parquet: example ids differ from .*m0.parquet.*'d11'"):
        merge([paths[0], other], [0.5, 0.5], LABELS, EnsembleConfig())
    shorter = write_logits(tmp_path / "short.parquet", ids[:-1], stack[1][:-1], "x")
    with pytest.raises(ArtifactError, match="short.parquet: example ids differ"):
        load_aligned([paths[0], shorter])
    longer = write_logits(tmp_path / "long.parquet", ids + ["extra"], np.vstack([stack[1], stack[1][:1]]), "x")
    with pytest.raises(ArtifactError, match="long.parquet: example ids differ"):
        load_aligned([paths[0], longer])


def test_nan_logits_raise(tmp_path, three_models):
    ids, stack, paths = three_models
    bad = stack[2].copy()
    bad[3, 1] = np.nan
    path = write_logits(tmp_path / "nan.parquet", ids, bad, "x")
    with pytest.raises(ArtifactError, match="nan.parquet: logits contain NaN"):
        merge([paths[0], path], [0.5, 0.5], LABELS, EnsembleConfig())


def test_missing_or_corrupt_file_raises(tmp_path, three_models):
    _, _, paths = three_models
    with pytest.raises(ArtifactError, match="missing.parquet does not exist"):
        merge([paths[0], tmp_path / "missing.parquet"], [1, 1], LABELS, EnsembleConfig())
    with pytest.raises(ValueError, match="no logits files"):
        load_aligned([])


def test_ensemble_config_defaults():
    cfg = EnsembleConfig()
    assert cfg.reduction is Reduction.wmean and cfg.temperature == 2.0


def test_merge_scores_of_trained_models(tmp_path, trained_models, sentiment_spec, sentiment_split, model_config):
    """End to end on the tiny model: score two PVP models on D and merge them with their T accuracies."""
    paths = []
    for result in trained_models:
        out = tmp_path / f"{result.model_id}.parquet"
        score(sentiment_spec, result.model_dir, sentiment_split[1], out, model_config, ScoreConfig())
        paths.append(out)
    acc = [r.pre_train_accuracy for r in trained_models]
    table = merge(paths, acc, sentiment_spec.label_names, EnsembleConfig())
    stack = np.stack([logits_of(read_table(p)) for p in paths]).astype(np.float64)
    w = np.asarray(acc, np.float64)
    w = w / w.sum() if w.sum() > 0 else np.full(2, 0.5)
    np.testing.assert_allclose(logits_of(table), np.tensordot(w, stack, 1), rtol=1e-5, atol=1e-6)
    assert table.column("example_id").to_pylist() == sentiment_split[1].column("example_id").to_pylist()
    assert set(table.column("label").to_pylist()) <= set(sentiment_spec.label_names)
