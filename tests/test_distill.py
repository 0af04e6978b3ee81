"""pet_core.distill: the final sequence classifier trained on soft labels (and the supervised baseline)."""

from __future__ import annotations

import json
import math

import numpy as np
import pyarrow as pa
import pytest
import torch
from safetensors.torch import load_file

from pet_core.artifacts import logits_of
from pet_core.config import DistillConfig
from pet_core.distill import (
    DISTILL_RECORD, GoldLabels, SequenceClassifier, SoftLabels, distill, distillation_targets, evaluate,
)
from pet_core.ensemble import softmax
from pet_core.training import label_indices

from _petcore_support import Recorder

FAST = DistillConfig(max_steps=3, batch_size=8, learning_rate=1e-3, eval_batch_size=16)


@pytest.fixture(scope="module")
def soft_targets(sentiment_split):
    """Soft labels for D that lean towards the (hidden) gold label."""
    d = sentiment_split[1]
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(d.num_rows, 2))
    return softmax(logits, 2.0)


@pytest.fixture(scope="module")
def distilled(tmp_path_factory, sentiment_split, soft_targets, sentiment_spec, model_config):
    out = tmp_path_factory.mktemp("distill") / "classifier"
    recorder = Recorder()
    record = distill(sentiment_split[1], soft_targets, sentiment_spec.label_names, model_config, FAST, out,
                     seed=0, callbacks=[recorder])
    return record, out, recorder


def test_distill_writes_classifier_dir(distilled, sentiment_spec):
    record, out, recorder = distilled
    assert (out / "model.safetensors").is_file() and (out / "config.json").is_file()
    assert not list(out.parent.glob(".*.tmp"))
    saved = json.loads((out / DISTILL_RECORD).read_text())
    assert saved["stage"] == "distill" and saved["steps"] == 3 and saved["n_train"] == 32
    assert saved["labels"] == sentiment_spec.label_names and saved["seed"] == 0
    assert saved["config"]["temperature"] == 2.0
    assert math.isfinite(saved["final_loss"]) and saved["final_loss"] == record["final_loss"]
    config = json.loads((out / "config.json").read_text())
    assert config["id2label"] == {"0": "negative", "1": "positive"}
    assert [e[0] for e in recorder.events] == ["begin", "progress", "progress", "progress", "end"]


def test_evaluate_returns_metrics_and_predictions(distilled, sentiment_examples, model_config):
    _, out, _ = distilled
    metrics, predictions = evaluate(out, sentiment_examples, model_config, batch_size=7)
    assert predictions.column_names == ["example_id", "logits", "label"]
    assert predictions.column("example_id").to_pylist() == sentiment_examples.column("example_id").to_pylist()
    logits = logits_of(predictions)
    assert logits.shape == (40, 2) and np.isfinite(logits).all()
    names = ["negative", "positive"]
    assert predictions.column("label").to_pylist() == [names[i] for i in logits.argmax(1)]
    gold = np.array([names.index(x) for x in sentiment_examples.column("label").to_pylist()])
    assert metrics["n"] == 40
    assert metrics["accuracy"] == pytest.approx(float((logits.argmax(1) == gold).mean()))
    assert np.array(metrics["confusion"]).sum() == 40 and metrics["labels"] == names


def test_evaluate_is_independent_of_batch_size(distilled, sentiment_examples, model_config):
    _, out, _ = distilled
    _, p1 = evaluate(out, sentiment_examples, model_config, batch_size=1)
    _, p2 = evaluate(out, sentiment_examples, model_config, batch_size=64)
    # Other batch shapes sum float32 products in another order (up to ~1e-4 here on logits of ~5); a padding
    # or alignment bug moves logits by orders of magnitude more.
    np.testing.assert_allclose(logits_of(p1), logits_of(p2), atol=1e-3, rtol=1e-4)


def test_evaluate_unlabeled_gives_no_metrics(distilled, sentiment_split, model_config):
    _, out, _ = distilled
    metrics, predictions = evaluate(out, sentiment_split[1], model_config)
    assert metrics == {} and predictions.num_rows == 32


def test_distill_same_seed_same_weights(tmp_path, distilled, sentiment_split, soft_targets, sentiment_spec,
                                        model_config):
    _, first, _ = distilled
    distill(sentiment_split[1], soft_targets, sentiment_spec.label_names, model_config, FAST, tmp_path / "a", seed=0)
    distill(sentiment_split[1], soft_targets, sentiment_spec.label_names, model_config, FAST, tmp_path / "b", seed=1)
    wa, w0, wb = (load_file(str(d / "model.safetensors")) for d in (tmp_path / "a", first, tmp_path / "b"))
    assert all(torch.equal(wa[k], w0[k]) for k in w0)
    assert not all(torch.equal(wb[k], w0[k]) for k in w0)


def test_distill_fits_soft_targets_at_temperature(tmp_path, sentiment_split, model_config):
    """KL(target ‖ softmax(s/T))·T² is minimal when softmax(s/T) equals the target."""
    d = sentiment_split[1].slice(0, 8)
    target = np.tile(np.array([[0.8, 0.2]], np.float32), (8, 1))
    cfg = DistillConfig(max_steps=40, batch_size=8, learning_rate=1e-2, temperature=2.0)
    record = distill(d, target, ["negative", "positive"], model_config, cfg, tmp_path / "c", seed=0)
    clf = SequenceClassifier(str(tmp_path / "c"), model_config)
    logits = clf.predict(d, 8)
    np.testing.assert_allclose(softmax(logits, 2.0), target, atol=0.08)
    assert not np.allclose(softmax(logits, 1.0), target, atol=0.08)  # the fit is at T = 2, not T = 1
    assert record["final_loss"] < 0.05


def test_supervised_mode(tmp_path, sentiment_examples, sentiment_spec, model_config):
    train = sentiment_examples.slice(0, 16)
    gold = label_indices(train, sentiment_spec)
    cfg = DistillConfig(max_steps=25, batch_size=8, learning_rate=1e-2, head_init="random")  # the loss alone
    record = distill(train, gold, sentiment_spec.label_names, model_config, cfg, tmp_path / "sup",
                     objective=GoldLabels())
    assert record["stage"] == "supervised"
    metrics, _ = evaluate(tmp_path / "sup", train, model_config)
    assert metrics["accuracy"] >= 0.9


def test_distill_pairs_of_texts(tmp_path, topic_examples, topic_spec, model_config):
    targets = label_indices(topic_examples, topic_spec)
    record = distill(topic_examples, targets, topic_spec.label_names, model_config, FAST, tmp_path / "pair",
                     objective=GoldLabels())
    assert record["n_train"] == 30
    metrics, predictions = evaluate(tmp_path / "pair", topic_examples, model_config)
    assert metrics["labels"] == topic_spec.label_names and logits_of(predictions).shape == (30, 3)


def test_distill_empty_train_raises(tmp_path, sentiment_split, model_config):
    with pytest.raises(ValueError, match="at least one training example"):
        distill(sentiment_split[1].slice(0, 0), np.zeros((0, 2)), ["a", "b"], model_config, FAST, tmp_path / "x")


def test_distillation_targets_align(sentiment_split):
    d = sentiment_split[1]
    ids = d.column("example_id").to_pylist()
    soft = np.random.default_rng(0).dirichlet([1, 1], size=len(ids)).astype(np.float32)
    perm = np.random.default_rng(1).permutation(len(ids))
    table = pa.table({"example_id": [ids[i] for i in perm],
                      "soft_labels": pa.FixedSizeListArray.from_arrays(pa.array(soft[perm].reshape(-1)), 2)})
    np.testing.assert_array_equal(distillation_targets(table, d), soft)
    with pytest.raises(ValueError, match="soft labels miss 1 unlabelled examples"):
        distillation_targets(table.slice(1), d)


def test_distill_config_defaults():
    cfg = DistillConfig()
    assert cfg.temperature == 2.0 and cfg.max_steps == 5000 and cfg.batch_size == 16
    assert cfg.include_labeled is True and cfg.head_init.value == "probe"


def test_steps_follow_epochs_within_bounds():
    cfg = DistillConfig(epochs=4, batch_size=16, min_steps=10, max_steps=300)
    assert cfg.steps_for(300) == 75  # ceil(4 · 300 / 16)
    assert cfg.steps_for(8) == 10  # a tiny set still gets min_steps
    assert cfg.steps_for(5000) == 300  # max_steps caps a large set
    assert DistillConfig(epochs=4, batch_size=8, grad_accumulation=2, min_steps=1).steps_for(100) == 25


def test_bucketed_batches_cover_each_pass_once_with_little_padding():
    from pet_core.distill import bucketed_batches

    lengths = [int(x) for x in np.random.default_rng(0).integers(5, 200, size=500)]
    gen = torch.Generator().manual_seed(0)
    stream = bucketed_batches(lengths, 10, gen, pool=10)
    first = [next(stream) for _ in range(50)]
    assert sorted(i for b in first for i in b) == list(range(500))
    padded = sum(len(b) * max(lengths[i] for i in b) for b in first)
    rng = np.random.default_rng(1).permutation(500)
    padded_random = sum(10 * max(lengths[i] for i in rng[s : s + 10]) for s in range(0, 500, 10))
    assert padded < 0.75 * padded_random
    again = bucketed_batches(lengths, 10, torch.Generator().manual_seed(0), pool=10)
    assert [next(again) for _ in range(50)] == first  # seeded: the same order every time


@pytest.mark.parametrize("soft", [True, False])
def test_probe_start_follows_the_targets_before_any_step(tmp_path, sentiment_split, model_config, soft):
    """head_init=probe: with no fine-tuning to speak of, the student already predicts its targets."""
    d = sentiment_split[1]
    labels = np.random.default_rng(3).integers(0, 2, size=d.num_rows)
    targets = softmax(np.eye(2)[labels] * 3.0, 2.0).astype(np.float32) if soft else labels
    agreement = {}
    for init in ("probe", "random"):
        cfg = DistillConfig(max_steps=1, learning_rate=1e-9, head_init=init, batch_size=8)
        objective = SoftLabels(cfg.temperature) if soft else GoldLabels()
        record = distill(d, targets, ["negative", "positive"], model_config, cfg, tmp_path / init, objective=objective)
        metrics, _ = evaluate(tmp_path / init, d.set_column(3, "label", pa.array(
            [["negative", "positive"][i] for i in labels])), model_config)
        assert record["agreement"] == pytest.approx(metrics["accuracy"])
        agreement[init] = metrics["accuracy"]
    assert agreement["probe"] >= 0.9 > agreement["random"]


def test_a_slowed_down_distillation_writes_the_same_classifier(tmp_path, sentiment_split, soft_targets,
                                                                model_config):
    """Timings stay out of the artifact: a busy machine (sleeping at every step) gets identical bytes."""
    import time

    from pet_core.artifacts import sha256_path
    from pet_core.callbacks import Callback

    class Slow(Callback):
        def on_progress(self, stage, done, total, **metrics):
            time.sleep(0.05)

    cfg = FAST.model_copy(update={"max_steps": 4})
    fast = distill(sentiment_split[1], soft_targets, ["negative", "positive"], model_config, cfg, tmp_path / "f")
    slow = distill(sentiment_split[1], soft_targets, ["negative", "positive"], model_config, cfg, tmp_path / "s",
                   callbacks=[Slow()])
    assert fast == slow and "wall_s" not in fast
    assert sha256_path(tmp_path / "f") == sha256_path(tmp_path / "s")


def test_gradient_checkpointing_trades_memory_for_compute_not_results(tmp_path, sentiment_examples, sentiment_spec,
                                                                        model_config):
    """Recomputed activations (dropout RNG replayed) give the classifier that keeping them gives."""
    train = sentiment_examples.slice(0, 16)
    gold = label_indices(train, sentiment_spec)
    logits = {}
    for flag in (False, True):
        cfg = DistillConfig(max_steps=4, batch_size=8, learning_rate=1e-3, gradient_checkpointing=flag)
        distill(train, gold, sentiment_spec.label_names, model_config, cfg, tmp_path / str(flag),
                objective=GoldLabels())
        logits[flag] = logits_of(evaluate(tmp_path / str(flag), train, model_config)[1])
    np.testing.assert_allclose(logits[True], logits[False], atol=1e-5, rtol=1e-5)
    assert not np.allclose(logits[False], 0)
