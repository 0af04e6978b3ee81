"""pet_core.training and pet_core.optim: PET training of one PVP model on the tiny BERT."""

from __future__ import annotations

import copy
import inspect
import json
import logging
import math

import numpy as np
import pyarrow as pa
import pytest
import torch
from safetensors.torch import load_file

from pet_core.callbacks import LoggingCallback
from pet_core.config import ModelConfig, TrainConfig
from pet_core.modeling import MaskedLM
from pet_core.optim import (
    NumericalError, build_optimizer, check_finite, cycle_batches, mask_tokens, seed_everything,
)
from pet_core.pvp import PVP
from pet_core.kinds.cloze.model import ClozeModel
from pet_core.spec import TaskSpec
from pet_core.training import TRAIN_RECORD, accuracy_on, label_indices, model_id, train_pvp

from _petcore_support import SENTIMENT_SPEC, Recorder

FAST = TrainConfig(max_steps=4, batch_size=4, grad_accumulation=1, learning_rate=1e-3, score_batch_size=16)


@pytest.fixture(scope="module")
def split(sentiment_examples):
    """T: 8 labelled rows (4 per label); D: the other 32 rows, unlabelled."""
    t = sentiment_examples.slice(0, 8)
    d = sentiment_examples.slice(8)
    return t, d.set_column(3, "label", pa.nulls(d.num_rows, pa.string()))


@pytest.fixture(scope="module")
def trained(tmp_path_factory, sentiment_spec, split, model_config):
    out = tmp_path_factory.mktemp("train") / "g0-p0-s1"
    recorder = Recorder()
    cfg = FAST.model_copy(update={"mlm_alpha": 0.1})
    result = train_pvp(sentiment_spec, 0, 1, split[0], split[1], model_config, cfg, out, callbacks=[recorder])
    return result, out, recorder


def weights_of(model_dir):
    return load_file(str(model_dir / "model.safetensors"))


def same_weights(dir_a, dir_b) -> bool:
    wa, wb = weights_of(dir_a), weights_of(dir_b)
    return wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


# -- train_pvp ------------------------------------------------------------------------------------------------
def test_train_writes_model_dir_and_record(trained, sentiment_spec, model_config):
    result, out, _ = trained
    assert (out / "model.safetensors").is_file() and (out / "config.json").is_file()
    assert (out / "tokenizer.json").is_file() or (out / "vocab.txt").is_file()
    assert not list(out.parent.glob(".*.tmp")), "atomic_dir left a temp directory"
    record = json.loads((out / TRAIN_RECORD).read_text())
    assert record["model_id"] == result.model_id == model_id(0, 1, 0) == "g0-p0-s1"
    assert record["pattern"] == 0 and record["seed"] == 1 and record["generation"] == 0
    assert record["n_labeled"] == 8 and record["steps"] == 4
    assert record["template"] == sentiment_spec.patterns[0].template
    assert record["train_config"]["max_steps"] == 4 and record["train_config"]["mlm_alpha"] == 0.1
    assert record["model_config"]["backbone"] == model_config.backbone
    for key in ("pre_train_accuracy", "post_train_accuracy"):
        assert 0.0 <= record[key] <= 1.0 and record[key] * 8 == pytest.approx(round(record[key] * 8))
    assert math.isfinite(record["final_loss"])
    # the saved model loads as a masked LM with its head
    reloaded = MaskedLM.load(model_config, source=str(out))
    assert getattr(reloaded, "missing_head_keys", []) == []


def test_pre_train_accuracy_is_zero_shot_accuracy(trained, split, sentiment_spec, model_config):
    result, _, _ = trained
    mlm = MaskedLM.load(model_config)
    mlm.model.eval()
    zero_shot = accuracy_on(ClozeModel(mlm, PVP(sentiment_spec, 0, mlm.tokenizer, 64)), split[0], sentiment_spec, 4)
    assert result.pre_train_accuracy == zero_shot


def test_post_train_accuracy_is_saved_models_accuracy(trained, split, sentiment_spec, model_config):
    result, out, _ = trained
    mlm = MaskedLM.load(model_config, source=str(out))
    mlm.model.eval()
    model = ClozeModel(mlm, PVP(sentiment_spec, 0, mlm.tokenizer, 64))
    assert accuracy_on(model, split[0], sentiment_spec, 8) == result.post_train_accuracy


def test_callbacks_see_every_step(trained):
    result, _, recorder = trained
    kinds = [e[0] for e in recorder.events]
    assert kinds == ["begin"] + ["progress"] * 4 + ["end"]
    assert recorder.events[0] == ("begin", "train g0-p0-s1", 4)
    assert [e[2] for e in recorder.events[1:5]] == [1, 2, 3, 4]
    assert recorder.losses[-1] == pytest.approx(result.final_loss)
    assert recorder.events[-1][2] == {"pre_train_accuracy": result.pre_train_accuracy,
                                      "post_train_accuracy": result.post_train_accuracy}


def test_same_seed_same_weights_other_seed_differs(tmp_path, sentiment_spec, split, model_config, trained):
    _, first, _ = trained
    cfg = FAST.model_copy(update={"mlm_alpha": 0.1})
    again = train_pvp(sentiment_spec, 0, 1, split[0], split[1], model_config, cfg, tmp_path / "again")
    assert same_weights(first, tmp_path / "again")
    other = train_pvp(sentiment_spec, 0, 2, split[0], split[1], model_config, cfg, tmp_path / "other")
    assert not same_weights(first, tmp_path / "other")
    assert other.model_id == "g0-p0-s2" and again.final_loss == trained[0].final_loss
    # identical weights give identical logits
    logits = []
    for d in (first, tmp_path / "again", tmp_path / "other"):
        mlm = MaskedLM.load(model_config, source=str(d))
        mlm.model.eval()
        logits.append(ClozeModel(mlm, PVP(sentiment_spec, 0, mlm.tokenizer, 64)).predict(
            split[1].column("a").to_pylist(), split[1].column("b").to_pylist(), 16))
    np.testing.assert_array_equal(logits[0], logits[1])
    assert not np.array_equal(logits[0], logits[2])


def test_mlm_loss_changes_training(tmp_path, sentiment_spec, split, model_config):
    base = FAST.model_copy(update={"max_steps": 2})
    train_pvp(sentiment_spec, 0, 3, split[0], split[1], model_config, base.model_copy(update={"mlm_alpha": 0.0}),
              tmp_path / "no-mlm")
    train_pvp(sentiment_spec, 0, 3, split[0], None, model_config, base, tmp_path / "no-d")
    train_pvp(sentiment_spec, 0, 3, split[0], split[1], model_config, base.model_copy(update={"mlm_alpha": 0.5}),
              tmp_path / "mlm")
    assert same_weights(tmp_path / "no-mlm", tmp_path / "no-d")  # alpha 0 ignores D entirely
    assert not same_weights(tmp_path / "no-mlm", tmp_path / "mlm")


def test_loss_decreases_on_separable_task(tmp_path, sentiment_spec, sentiment_examples, model_config):
    recorder = Recorder()
    cfg = TrainConfig(max_steps=30, batch_size=8, grad_accumulation=1, learning_rate=1e-2, mlm_alpha=0.0,
                      score_batch_size=32)
    labeled = sentiment_examples.slice(0, 16)
    result = train_pvp(sentiment_spec, 0, 0, labeled, None, model_config, cfg, tmp_path / "m",
                       callbacks=[recorder])
    losses = recorder.losses
    assert len(losses) == 30
    assert np.mean(losses[:5]) == pytest.approx(math.log(2), abs=0.15)  # starts near chance
    assert np.mean(losses[-5:]) < 0.6 * np.mean(losses[:5])
    assert result.post_train_accuracy >= 0.85 > result.pre_train_accuracy


def test_zero_weight_examples_do_not_matter(tmp_path, sentiment_spec, sentiment_examples, model_config):
    """Rows with sample weight 0 contribute nothing: flipping their labels gives the same model."""
    rows = sentiment_examples.slice(0, 8)
    labels = rows.column("label").to_pylist()
    flipped = [("negative" if x == "positive" else "positive") if i >= 4 else x for i, x in enumerate(labels)]
    rows_flipped = rows.set_column(3, "label", pa.array(flipped, pa.string()))
    weights = np.array([1.0] * 4 + [0.0] * 4)
    cfg = TrainConfig(max_steps=3, batch_size=8, grad_accumulation=1, learning_rate=1e-3, mlm_alpha=0.0)
    train_pvp(sentiment_spec, 0, 0, rows, None, model_config, cfg, tmp_path / "a", sample_weights=weights)
    train_pvp(sentiment_spec, 0, 0, rows_flipped, None, model_config, cfg, tmp_path / "b", sample_weights=weights)
    train_pvp(sentiment_spec, 0, 0, rows_flipped, None, model_config, cfg, tmp_path / "c")
    assert same_weights(tmp_path / "a", tmp_path / "b")
    assert not same_weights(tmp_path / "a", tmp_path / "c")


def test_empty_labeled_set_saves_zero_shot_model(tmp_path, sentiment_spec, split, model_config, tiny_mlm_dir):
    empty = split[0].slice(0, 0)
    result = train_pvp(sentiment_spec, 1, 0, empty, split[1], model_config, FAST, tmp_path / "zs", generation=2)
    assert result.steps == 0 and result.pre_train_accuracy is None and result.post_train_accuracy is None
    assert result.final_loss is None and result.model_id == "g2-p1-s0"
    assert same_weights(tmp_path / "zs", tiny_mlm_dir)


def test_model_name_overrides_id(tmp_path, sentiment_spec, split, model_config):
    if "model_name" not in inspect.signature(train_pvp).parameters:
        pytest.skip("train_pvp has no model_name parameter in this version")
    cfg = FAST.model_copy(update={"max_steps": 1})
    result = train_pvp(sentiment_spec, 0, 0, split[0], None, model_config, cfg, tmp_path / "n", model_name="custom")
    assert result.model_id == "custom"
    assert json.loads((tmp_path / "n" / TRAIN_RECORD).read_text())["model_id"] == "custom"


def test_multi_token_training_runs(tmp_path, split, model_config):
    data = copy.deepcopy(SENTIMENT_SPEC)
    data["multi_token"] = True
    data["labels"][1]["words"] = ["good", "goodish"]
    spec = TaskSpec.model_validate(data)
    cfg = FAST.model_copy(update={"max_steps": 2, "mlm_alpha": 0.0})
    result = train_pvp(spec, 0, 0, split[0], None, model_config, cfg, tmp_path / "mt")
    assert result.steps == 2 and math.isfinite(result.final_loss)


def test_existing_output_is_replaced(tmp_path, sentiment_spec, split, model_config):
    out = tmp_path / "m"
    out.mkdir()
    (out / "stale.txt").write_text("old")
    train_pvp(sentiment_spec, 0, 0, split[0], None, model_config, FAST.model_copy(update={"max_steps": 1}), out)
    assert not (out / "stale.txt").exists() and (out / TRAIN_RECORD).is_file()


def test_label_indices(sentiment_examples, sentiment_spec):
    idx = label_indices(sentiment_examples.slice(0, 4), sentiment_spec)
    assert idx.tolist() == [1, 0, 1, 0] and idx.dtype == np.int64


# -- optim ----------------------------------------------------------------------------------------------------
def test_check_finite():
    check_finite(torch.tensor(1.5), "ok")
    with pytest.raises(NumericalError, match=r"train g0-p0-s0 step 7: loss is nan"):
        check_finite(torch.tensor(float("nan")), "train g0-p0-s0 step 7")
    with pytest.raises(NumericalError, match="loss is inf"):
        check_finite(torch.tensor(float("inf")), "distill step 0")


def test_training_with_nan_raises_numerical_error(tmp_path, sentiment_spec, split, model_config, tiny_mlm_dir):
    """A backbone whose weights hold a NaN makes the very first loss NaN: the stage stops, writes nothing."""
    from transformers import AutoModelForMaskedLM, AutoTokenizer

    broken = tmp_path / "nan-model"
    model = AutoModelForMaskedLM.from_pretrained(tiny_mlm_dir)
    with torch.no_grad():
        model.cls.predictions.transform.dense.weight[0, 0] = float("nan")
    model.save_pretrained(broken)
    AutoTokenizer.from_pretrained(tiny_mlm_dir).save_pretrained(broken)
    cfg = ModelConfig(backbone=str(broken), max_seq_length=64, device="cpu", precision="fp32")
    with pytest.raises(NumericalError, match="train g0-p0-s0 step 0"):
        train_pvp(sentiment_spec, 0, 0, split[0], None, cfg, FAST, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    assert not list(tmp_path.glob(".out.*"))


def test_seed_everything_is_reproducible():
    g1 = seed_everything(5)
    a = (torch.rand(3), torch.rand(3, generator=g1), np.random.rand())
    g2 = seed_everything(5)
    b = (torch.rand(3), torch.rand(3, generator=g2), np.random.rand())
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) and a[2] == b[2]


def test_cycle_batches():
    gen = torch.Generator().manual_seed(0)
    it = cycle_batches(7, 3, gen)
    first_pass = [next(it) for _ in range(3)]
    assert [len(b) for b in first_pass] == [3, 3, 1]
    assert sorted(i for b in first_pass for i in b) == list(range(7))
    second_pass = [next(it) for _ in range(3)]
    assert sorted(i for b in second_pass for i in b) == list(range(7))
    with pytest.raises(ValueError, match="empty"):
        next(cycle_batches(0, 3, gen))


def test_mask_tokens(tiny_tokenizer):
    tok = tiny_tokenizer
    enc = tok(["a wonderful and moving film with great music", "bad"], padding=True, return_tensors="pt")
    ids, att = enc["input_ids"], enc["attention_mask"]
    gen = torch.Generator().manual_seed(0)
    masked, labels = mask_tokens(ids, att, tok, 0.15, gen)
    special = torch.isin(ids, torch.tensor(tok.all_special_ids)) | (att == 0)
    chosen = labels != -100
    assert not (chosen & special).any()
    assert chosen.any(1).all()  # at least one target per row (the short row too)
    assert torch.equal(labels[chosen], ids[chosen])
    assert torch.equal(masked[~chosen], ids[~chosen])
    again = mask_tokens(ids, att, tok, 0.15, torch.Generator().manual_seed(0))
    assert torch.equal(again[0], masked) and torch.equal(again[1], labels)


def test_mask_tokens_rates(tiny_tokenizer):
    tok = tiny_tokenizer
    ids = torch.randint(5, len(tok), (200, 100), generator=torch.Generator().manual_seed(1))
    att = torch.ones_like(ids)
    masked, labels = mask_tokens(ids, att, tok, 0.15, torch.Generator().manual_seed(2))
    chosen = labels != -100
    assert 0.13 < chosen.float().mean() < 0.17
    as_mask = (masked == tok.mask_token_id) & chosen
    kept = (masked == ids) & chosen
    assert 0.77 < as_mask.sum() / chosen.sum() < 0.83
    assert 0.07 < kept.sum() / chosen.sum() < 0.14  # 10 % kept, plus random replacements that hit the same id


def test_build_optimizer_groups(model_config):
    mlm = MaskedLM.load(model_config)
    opt, sched = build_optimizer(mlm.model, lr=1e-3, weight_decay=0.01, eps=1e-8, total_steps=10, warmup_steps=0)
    names = {id(p): n for n, p in mlm.model.named_parameters()}
    decay, no_decay = opt.param_groups
    assert decay["weight_decay"] == 0.01 and no_decay["weight_decay"] == 0.0
    assert all("bias" not in names[id(p)] and "LayerNorm" not in names[id(p)] for p in decay["params"])
    assert all("bias" in names[id(p)] or "LayerNorm" in names[id(p)] for p in no_decay["params"])
    n_params = len({id(p) for p in mlm.model.parameters()})
    assert len(decay["params"]) + len(no_decay["params"]) == n_params
    assert sched.get_last_lr()[0] == pytest.approx(1e-3)
    for _ in range(5):
        opt.step()
        sched.step()
    assert sched.get_last_lr()[0] == pytest.approx(5e-4)  # linear decay, no warm-up


def test_build_optimizer_param_lrs(model_config):
    mlm = MaskedLM.load(model_config)
    head = {id(p): 1e-2 for p in mlm.model.cls.parameters()}
    opt, _ = build_optimizer(mlm.model, 1e-4, 0.01, 1e-8, 10, 0, param_lrs=head)
    by_lr = {}
    for group in opt.param_groups:
        by_lr.setdefault(group["lr"], set()).update(id(p) for p in group["params"])
    assert by_lr[1e-2] == set(head)
    assert len(by_lr[1e-4]) + len(by_lr[1e-2]) == len({id(p) for p in mlm.model.parameters()})


def test_train_config_paper_defaults():
    cfg = TrainConfig()
    assert cfg.learning_rate == 1e-5 and cfg.weight_decay == 0.01 and cfg.max_grad_norm == 1.0
    assert cfg.batch_size * cfg.grad_accumulation == 16 and cfg.unlabeled_ratio == 3
    assert cfg.mlm_alpha == 1e-4 and cfg.use_mlm and cfg.warmup_steps == 0
    assert not TrainConfig(mlm_alpha=0).use_mlm
    with pytest.raises(ValueError):
        TrainConfig(mlm_alpha=1.0)
    with pytest.raises(ValueError):
        TrainConfig(unknown=1)


def test_logging_callback(caplog):
    cb = LoggingCallback(every_fraction=0.5)
    with caplog.at_level(logging.INFO, logger="pet_core"):
        cb.on_stage_begin("train x", 4)
        for step in range(1, 5):
            cb.on_progress("train x", step, 4, loss=0.5)
        cb.on_stage_end("train x", {"acc": 1.0})
    lines = [r.getMessage() for r in caplog.records]
    assert lines[0] == "train x: starting (4 units)"
    # a line when the done fraction passes the next tenth-mark (here halves) after the last line, and at the end
    assert [line for line in lines if "/4" in line] == ["train x: 1/4 loss=0.5", "train x: 3/4 loss=0.5",
                                                       "train x: 4/4 loss=0.5"]
    assert lines[-1] == "train x: done {'acc': 1.0}"
