"""pet_core.adapt: continued MLM training that learns the missing head of an encoder-only backbone."""

from __future__ import annotations

import json
import math
import shutil
import time
from pathlib import Path

import pyarrow as pa
import pytest
import torch
from safetensors.torch import load_file

from pet_core import stages
from pet_core.adapt import ADAPT_RECORD, adapt_backbone, plain_texts
from pet_core.artifacts import sha256_path, write_table
from pet_core.callbacks import Callback
from pet_core.config import AdaptConfig, ModelConfig
from pet_core.modeling import BackboneError, MaskedLM
from pet_core.store import ArtifactStore, Ref

from _petcore_support import Recorder
from _run_support import drop_mlm_head, save_headless_encoder

FAST = AdaptConfig(max_steps=40, batch_size=8, learning_rate=1e-3, head_learning_rate=5e-3, max_seq_length=32)


@pytest.fixture(scope="module", params=["base-model", "dropped-keys"])
def headless_dir(request, tiny_mlm_dir, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp(f"headless-{request.param}") / "encoder"
    make = save_headless_encoder if request.param == "base-model" else drop_mlm_head
    return make(Path(tiny_mlm_dir), out)


@pytest.fixture(scope="module")
def corpus(sentiment_examples) -> pa.Table:
    return sentiment_examples


def config_for(path: Path) -> ModelConfig:
    return ModelConfig(backbone=str(path), max_seq_length=64, device="cpu", precision="fp32")


@pytest.fixture(scope="module")
def adapted(headless_dir, corpus, tmp_path_factory):
    out = tmp_path_factory.mktemp("adapted") / "backbone"
    recorder = Recorder()
    info = adapt_backbone(config_for(headless_dir), FAST, corpus, out, callbacks=[recorder])
    return {"out": out, "info": info, "losses": recorder.losses, "events": recorder.events}


def test_headless_backbone_is_refused(headless_dir):
    with pytest.raises(BackboneError) as err:
        MaskedLM.load(config_for(headless_dir))
    message = str(err.value)
    assert str(headless_dir) in message and "no trained MLM head" in message
    assert "cls.predictions" in message and "adapt" in message
    loaded = MaskedLM.load(config_for(headless_dir), require_head=False)
    assert loaded.missing_head_keys and all(k.startswith("cls.") for k in loaded.missing_head_keys)


def test_adapt_learns_the_head(adapted):
    losses = adapted["losses"]
    assert len(losses) == FAST.max_steps and all(map(math.isfinite, losses))
    start, end = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    assert end < start - 0.1, f"MLM loss did not fall: {start:.3f} -> {end:.3f}"
    assert adapted["events"][0] == ("begin", "adapt", FAST.max_steps) and adapted["events"][-1][0] == "end"


def test_adapted_backbone_loads_with_its_head(adapted):
    out = adapted["out"]
    assert (out / "model.safetensors").is_file() and (out / "config.json").is_file()
    assert not list(out.parent.glob(".*.tmp"))
    loaded = MaskedLM.load(config_for(out), require_head=True)
    assert loaded.missing_head_keys == []
    keys = load_file(str(out / "model.safetensors")).keys()
    assert any(k.startswith("cls.predictions.transform") for k in keys)


def test_adapt_record_lists_the_new_head_weights(adapted, corpus):
    record = json.loads((adapted["out"] / ADAPT_RECORD).read_text())
    assert record == json.loads(json.dumps(adapted["info"]))
    assert record["steps"] == FAST.max_steps and record["texts"] == corpus.num_rows
    new = record["new_head_weights"]
    assert new and all(k.startswith("cls.predictions") for k in new)
    assert {"cls.predictions.transform.dense.weight", "cls.predictions.transform.LayerNorm.weight"} <= set(new)
    assert not any(k.startswith("bert.") for k in new)
    assert record["config"]["max_steps"] == FAST.max_steps


def test_adapt_of_a_backbone_with_head_adds_nothing(tiny_mlm_dir, corpus, tmp_path):
    info = adapt_backbone(config_for(Path(tiny_mlm_dir)), FAST.model_copy(update={"max_steps": 2}), corpus,
                          tmp_path / "out")
    assert info["new_head_weights"] == [] and info["steps"] == 2


def test_a_slowed_down_adapt_writes_the_same_backbone(tiny_mlm_dir, corpus, tmp_path):
    """No wall-clock budget: a busy machine (simulated by sleeping at every step) gets identical bytes."""
    class Slow(Callback):
        def on_progress(self, stage, done, total, **metrics):
            time.sleep(0.05)

    config = FAST.model_copy(update={"max_steps": 6})
    fast = adapt_backbone(config_for(Path(tiny_mlm_dir)), config, corpus, tmp_path / "fast")
    slow = adapt_backbone(config_for(Path(tiny_mlm_dir)), config, corpus, tmp_path / "slow", callbacks=[Slow()])
    assert fast == slow and fast["steps"] == 6 and "wall_s" not in fast
    assert sha256_path(tmp_path / "fast") == sha256_path(tmp_path / "slow")


def test_freeze_layers_keeps_embeddings_and_lowest_layers(tiny_mlm_dir, corpus, tmp_path):
    before = load_file(str(Path(tiny_mlm_dir) / "model.safetensors"))
    adapt_backbone(config_for(Path(tiny_mlm_dir)), FAST.model_copy(update={"max_steps": 3, "freeze_layers": 1}),
                   corpus, tmp_path / "out")
    after = load_file(str(tmp_path / "out" / "model.safetensors"))
    frozen = [k for k in before if k.startswith(("bert.embeddings.", "bert.encoder.layer.0."))]
    trained = [k for k in before if k.startswith("bert.encoder.layer.1.") and k.endswith("weight")]
    assert frozen and trained
    assert all(torch.equal(before[k], after[k]) for k in frozen)
    assert any(not torch.equal(before[k], after[k]) for k in trained)


def test_adapt_needs_text(tiny_mlm_dir, corpus, tmp_path):
    with pytest.raises(ValueError, match="D is empty"):
        adapt_backbone(config_for(Path(tiny_mlm_dir)), FAST, corpus.slice(0, 0), tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_plain_texts_joins_a_and_b(topic_examples):
    texts = plain_texts(topic_examples)
    first = topic_examples.slice(0, 1).to_pylist()[0]
    assert texts[0] == f"{first['a']} {first['b']}"
    assert plain_texts(pa.table({"a": ["x"], "b": pa.array([None], pa.string())})) == ["x"]


def test_adapt_stage_over_the_store(headless_dir, corpus, tmp_path):
    store = ArtifactStore(tmp_path / "store")
    unlabeled = Ref.of(write_table(corpus, tmp_path / "d.parquet"))
    config = FAST.model_copy(update={"max_steps": 3})
    first = stages.adapt(store, config_for(headless_dir), config, unlabeled)
    assert not first.cached and first.info["steps"] == 3 and first.info["new_head_weights"]
    backbone = Path(first.out("backbone").path)
    assert MaskedLM.load(config_for(backbone)).missing_head_keys == []
    again = stages.adapt(store, config_for(headless_dir), config, unlabeled)
    assert again.cached and again.to_dict() == first.to_dict()
    # the key hashes the backbone's content: the same encoder under another path is a cache hit
    moved = tmp_path / "moved-encoder"
    shutil.copytree(headless_dir, moved)
    assert stages.adapt(store, config_for(moved), config, unlabeled).cached
