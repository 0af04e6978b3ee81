"""Pattern-model kinds: every registered kind round-trips, the registry rejects what it must, and a kind
defined outside pet_core runs through the stages with its section in the cache keys and records."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Literal

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from pet_core import stages
from pet_core.config import ScoreConfig, TrainConfig
from pet_core.data import DataSource
from pet_core.kinds import KindConfig, KindError, KindRegistry, get_kind, known_kinds, registry
from pet_core.kinds.base import PatternModel, label_indices, load_pattern_model, texts
from pet_core.kinds.cloze.config import ClozeConfig
from pet_core.kinds.cloze.model import ClozeModel
from pet_core.optim import build_optimizer, seed_everything
from pet_core.run_config import DataConfig, RunConfig
from pet_core.store import ArtifactStore
from tests._petcore_support import SENTIMENT_SPEC

ROOT = Path(__file__).resolve().parents[1]
FAST = TrainConfig(max_steps=2, batch_size=4, grad_accumulation=1, learning_rate=1e-3, score_batch_size=8)
BACKBONE_FIXTURE = {"t5": "t5_model_config"}  # kinds that need another backbone than the tiny masked LM


# -- every registered kind ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", known_kinds())
def test_every_kind_trains_saves_and_loads_to_identical_logits(name, sentiment_spec, sentiment_split, request,
                                                               tmp_path):
    model_config = request.getfixturevalue(BACKBONE_FIXTURE.get(name, "model_config"))
    labeled, unlabeled = sentiment_split
    kind = get_kind(name).config()
    generator = seed_everything(0)
    model = get_kind(name).model_class().create(sentiment_spec, 0, model_config, kind)
    assert isinstance(model, PatternModel) and model.kind == name
    model.train()
    encodings = model.encode(*texts(labeled))
    unl = model.encode_unlabeled(*texts(unlabeled))
    gold = torch.tensor(label_indices(labeled, sentiment_spec))
    optimizer, _ = build_optimizer(model.param_groups(1e-3), 1e-3, 0.0, 1e-8, 3, 0)
    before = [p.detach().clone() for g in model.param_groups(1e-3) for _, p in g.named]
    for step in range(3):
        rows = [(2 * step + i) % labeled.num_rows for i in range(4)]
        loss = torch.nn.functional.cross_entropy(model.label_logits(encodings, rows), gold[rows])
        if unl is not None:
            loss = loss + 0.1 * model.aux_loss(unl, [0, 1, 2], generator, FAST)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    after = [p.detach() for g in model.param_groups(1e-3) for _, p in g.named]
    assert any(not torch.equal(a, b) for a, b in zip(before, after, strict=True)), "training changed nothing"
    model.train(False)
    logits = model.predict(*texts(labeled), batch_size=3)
    assert logits.shape == (labeled.num_rows, len(sentiment_spec.labels)) and np.isfinite(logits).all()
    model.save(tmp_path)
    (tmp_path / "train_record.json").write_text(json.dumps({"pattern": 0, "kind": kind.to_dict()}))
    loaded, record = load_pattern_model(sentiment_spec, tmp_path, model_config)
    assert type(loaded) is type(model) and record["kind"] == kind.to_dict() and record["kind"]["kind"] == name
    np.testing.assert_allclose(loaded.predict(*texts(labeled), batch_size=5), logits, rtol=0, atol=1e-5)
    assert loaded.accuracy(labeled, sentiment_spec, 4) == float((logits.argmax(1) == gold.numpy()).mean())


# -- the registry -------------------------------------------------------------------------------------------------
def test_a_kind_registered_twice_is_an_error():
    fresh = registry.builtin_registry()
    with pytest.raises(KindError, match="'cloze' is already registered"):
        fresh.register("cloze", ClozeConfig, ClozeModel)


def test_a_kind_config_must_name_its_kind():
    class Mislabelled(KindConfig):
        kind: Literal["other"] = "other"

    with pytest.raises(KindError, match="must default to 'mine'"):
        KindRegistry().register("mine", Mislabelled, ClozeModel)


def test_unknown_kind_fails_config_validation_listing_the_known_kinds():
    config = {"task": SENTIMENT_SPEC, "data": {"pool": {"path": "/data/pool.csv"}}, "model": {"backbone": "org/mlm"}}
    known = "cloze, prefix_tuning, prompt_tuning, ptuning, t5"
    with pytest.raises(ValidationError, match=rf"unknown pattern-model kind 'gpt'; known kinds: {known}"):
        RunConfig.model_validate({**config, "patterns": [0, {"pattern": 1, "kind": "gpt"}]})
    with pytest.raises(ValidationError, match=r"pattern 1, kind 'cloze': n_tokens: Extra inputs"):
        RunConfig.model_validate({**config, "patterns": [{"pattern": 1, "kind": "cloze", "n_tokens": 8}]})
    with pytest.raises(ValidationError, match=r"patterns must be distinct"):
        RunConfig.model_validate({**config, "patterns": [1, {"pattern": 1}]})
    chosen = RunConfig.model_validate({**config, "patterns": [0, {"pattern": 1, "kind": "cloze"}]})
    assert chosen.pattern_ids() == [0, 1] and chosen.kind_for(1) == ClozeConfig() == chosen.kind_for(0)


def test_pet_core_imports_no_prefect_tasks_or_flows():
    code = ("import importlib, pkgutil, sys, pet_core\n"
            "for info in pkgutil.walk_packages(pet_core.__path__, 'pet_core.'):\n"
            "    importlib.import_module(info.name)\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('prefect', 'tasks', 'flows')))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300,
                         check=True).stdout
    assert out.strip() == "[]", out


# -- a plug-in kind through the stages --------------------------------------------------------------------------
class SharpConfig(KindConfig):
    kind: Literal["sharp-cloze"] = "sharp-cloze"
    sharpness: float = 2.0


class SharpCloze(ClozeModel):
    """PET's cloze kind with its label logits multiplied by a factor: a kind written outside pet_core."""

    kind = "sharp-cloze"

    def label_logits(self, encodings, indices):
        return super().label_logits(encodings, indices) * self.kind_config.sharpness


@pytest.fixture
def with_plugin(monkeypatch):
    plugged = registry.builtin_registry()
    plugged.register("sharp-cloze", SharpConfig, SharpCloze)
    monkeypatch.setattr(registry, "_default", plugged)
    return plugged


def test_a_plugin_kind_runs_through_train_and_score_with_its_section_in_keys_and_records(
        with_plugin, sentiment_spec, model_config, sentiment_data, tmp_path):
    config = RunConfig.model_validate({
        "task": SENTIMENT_SPEC, "model": model_config.to_dict(),
        "data": {"pool": {"path": str(sentiment_data / "pool.csv")}, "n_labeled": 8, "n_unlabeled": 8},
        "patterns": [0, {"pattern": 1, "kind": "sharp-cloze", "sharpness": 3.0}]})
    assert config.kind_for(1) == SharpConfig(sharpness=3.0)
    store = ArtifactStore(tmp_path / "store")
    prepared = stages.prepare(store, sentiment_spec, DataConfig(pool=DataSource(path=str(sentiment_data / "pool.csv")),
                                                                n_labeled=8, n_unlabeled=8))
    labeled, unlabeled = prepared.out("labeled"), prepared.out("unlabeled")

    def train(kind):
        return stages.train(store, sentiment_spec, model_config, FAST, 1, 1, 0, labeled, unlabeled, kind=kind)

    cloze, sharp, sharper = train(None), train(config.kind_for(1)), train(SharpConfig(sharpness=5.0))
    assert len({cloze.key, sharp.key, sharper.key}) == 3, "the kind and its section must enter the train key"
    assert train(SharpConfig(sharpness=3.0)).cached
    record = json.loads((Path(sharp.out("model").path) / "train_record.json").read_text())
    assert record["kind"] == {"kind": "sharp-cloze", "sharpness": 3.0}
    model, _ = load_pattern_model(sentiment_spec, sharp.out("model").path, model_config)
    assert isinstance(model, SharpCloze) and model.kind_config.sharpness == 3.0
    scored = stages.score(store, sentiment_spec, model_config, ScoreConfig(), sharp.out("model"), labeled)
    assert scored.info["rows"] == 8
    assert scored.config["kind"] == {"kind": "sharp-cloze", "sharpness": 3.0}
    assert stages.score(store, sentiment_spec, model_config, ScoreConfig(), cloze.out("model"),
                        labeled).config["kind"] == {"kind": "cloze"}
