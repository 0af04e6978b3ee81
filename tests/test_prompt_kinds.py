"""The kinds with learned prompts (ptuning, prompt_tuning, prefix_tuning) on the tiny masked LM: where the soft
tokens go, what trains, what is saved, and that they run through PET's stages beside cloze models."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from pet_core import pipeline
from pet_core.artifacts import ArtifactError
from pet_core.config import ModelConfig
from pet_core.kinds import get_kind
from pet_core.kinds.base import label_indices, load_pattern_model, texts
from pet_core.kinds.cloze.model import ClozeModel
from pet_core.kinds.prompts import ADAPTER_RECORD, ADAPTER_WEIGHTS
from pet_core.modeling import collate
from pet_core.optim import seed_everything
from pet_core.pvp import PVP
from pet_core.run_config import RunConfig
from pet_core.spec import TaskSpec
from tests._petcore_support import SENTIMENT_SPEC, build_tiny_mlm

SOFT_SPEC = TaskSpec.model_validate({**SENTIMENT_SPEC,
                                     "patterns": ["{a} {soft:2} It was {mask}.", "{a} It was {mask}."]})


def create(name: str, spec: TaskSpec, pattern: int, model_config: ModelConfig, **options):
    seed_everything(0)
    return get_kind(name).model_class().create(spec, pattern, model_config, get_kind(name).config(options))


def test_soft_slots_and_prepended_tokens_sit_where_the_template_puts_them(tiny_tokenizer):
    pvp = PVP(SOFT_SPEC, 0, tiny_tokenizer, 64, prepend=3)
    (enc,) = pvp.encode_texts(["good film"], [None])
    plain = PVP(SOFT_SPEC, 1, tiny_tokenizer, 64).encode_texts(["good film"], [None])[0]
    text = len(plain.input_ids) - 1 - len(plain.mask_positions) - 4  # [CLS] … [SEP] minus "It was [MASK] ."
    assert pvp.n_soft == 5 and enc.soft_positions == [1, 2, 3, 4 + text, 5 + text]
    assert enc.mask_positions == [m + 5 for m in plain.mask_positions]
    assert all(enc.input_ids[p] == tiny_tokenizer.unk_token_id for p in enc.soft_positions)
    assert [i for k, i in enumerate(enc.input_ids) if k not in enc.soft_positions] == plain.input_ids


def test_soft_tokens_equal_to_the_placeholder_embedding_give_the_cloze_encoder_output(sentiment_split, model_config):
    """The soft vectors replace exactly the placeholder positions: with vectors equal to the placeholder's own
    embedding, the encoder output is the plain LM's on the same ids."""
    model = create("prompt_tuning", SOFT_SPEC, 0, model_config, n_tokens=2)
    embeddings = model.mlm.model.get_input_embeddings().weight
    with torch.no_grad():
        model.encoder.embedding.weight.copy_(embeddings[model.mlm.tokenizer.unk_token_id].expand(4, -1))
    model.train(False)
    encoded = model.encode(*texts(sentiment_split[0]))[1]
    batch = collate(encoded, list(range(6)), 0)
    assert batch.soft_positions.shape == (6, 4)
    with torch.no_grad():
        torch.testing.assert_close(model._hidden(batch), model.mlm.encode(batch), rtol=0, atol=1e-5)


@pytest.mark.parametrize(("name", "options"), [("prompt_tuning", {"n_tokens": 4}), ("prefix_tuning", {}),
                                               ("prefix_tuning", {"projection": 16}),
                                               ("ptuning", {"finetune_lm": False, "encoder": "mlp"})])
def test_frozen_lm_kinds_train_only_the_prompt_and_save_a_small_adapter(name, options, sentiment_spec,
                                                                       sentiment_split, model_config, tmp_path):
    labeled = sentiment_split[0]
    model = create(name, sentiment_spec, 0, model_config, **options)
    lm_before = {k: v.clone() for k, v in model.mlm.model.state_dict().items()}
    groups = model.param_groups(1e-3)
    assert len(groups) == 1 and groups[0].lr == model.settings.learning_rate if name != "ptuning" else True
    optimizer = torch.optim.AdamW([p for g in groups for _, p in g.named], lr=1e-2)
    gold = torch.tensor(label_indices(labeled, sentiment_spec))
    encodings = model.encode(*texts(labeled))
    model.train()
    for _ in range(3):
        torch.nn.functional.cross_entropy(model.label_logits(encodings, list(range(8))), gold[:8]).backward()
        optimizer.step()
        optimizer.zero_grad()
    assert all(torch.equal(v, model.mlm.model.state_dict()[k]) for k, v in lm_before.items()), "the LM trained"
    assert model.encode_unlabeled(*texts(labeled)) is None
    model.save(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([ADAPTER_RECORD, ADAPTER_WEIGHTS])
    info = json.loads((tmp_path / ADAPTER_RECORD).read_text())
    lm_size = sum(p.numel() for p in lm_before.values())
    assert info["trainable_parameters"] == model.trainable_parameters() < 0.2 * lm_size
    assert (tmp_path / ADAPTER_WEIGHTS).stat().st_size < 4 * info["trainable_parameters"] + 4096


def test_ptuning_fine_tunes_the_lm_and_its_encoder_at_two_learning_rates(sentiment_spec, model_config, tmp_path):
    model = create("ptuning", SOFT_SPEC, 0, model_config, encoder_learning_rate=5e-4)
    assert model.pvp.n_soft == 2 and model.pvp.prepend == 0, "a template with {soft} slots gets no prepended tokens"
    lm, prompt = model.param_groups(1e-5)
    assert (lm.lr, prompt.lr) == (1e-5, 5e-4) and all(n.startswith("prompt.") for n, _ in prompt.named)
    assert any("lstm" in n for n, _ in prompt.named) and model.encode_unlabeled(["a b"], [None]) is not None
    assert create("ptuning", sentiment_spec, 0, model_config).pvp.n_soft == 4, "plain templates get 4 tokens"
    model.save(tmp_path)
    assert (tmp_path / "model.safetensors").is_file() and (tmp_path / ADAPTER_WEIGHTS).is_file()


def test_templates_with_soft_slots_are_refused_by_kinds_that_cannot_fill_them(model_config, tiny_tokenizer):
    for kind, message in [(ClozeModel, "train it as kind 'ptuning' or 'prompt_tuning'"),
                          (get_kind("prefix_tuning").model_class(), "use a template without them")]:
        with pytest.raises(ValueError, match=rf"pattern 0 .* has \{{soft\}} slots.*{message}"):
            kind.check(SOFT_SPEC, 0, tiny_tokenizer, model_config, get_kind(kind.kind).config(), ["a"], [None])
    with pytest.raises(ValueError, match=r"\{soft:N\} slots need"):
        TaskSpec.model_validate({**SENTIMENT_SPEC, "patterns": ["{a} {soft:0} {mask}"]})


def test_an_adapter_refuses_a_backbone_it_was_not_trained_on(sentiment_spec, model_config, tmp_path):
    model = create("prompt_tuning", sentiment_spec, 0, model_config)
    model.save(tmp_path / "adapter")
    record = {"pattern": 0, "kind": {"kind": "prompt_tuning"}}
    (tmp_path / "adapter" / "train_record.json").write_text(json.dumps(record))
    other = ModelConfig(**{**model_config.to_dict(), "backbone": str(build_tiny_mlm(tmp_path / "other", seed=1))})
    with pytest.raises(ArtifactError, match=r"was trained on backbone .* not on this run's backbone"):
        load_pattern_model(sentiment_spec, tmp_path / "adapter", other)


def test_a_mixed_ensemble_runs_pet_and_ipet_to_one_classifier(model_config, sentiment_data, tmp_path):
    spec = {**SENTIMENT_SPEC, "patterns": [*SENTIMENT_SPEC["patterns"], "{a} {soft} It was {mask}.", "{a} So {mask}."]}
    config = RunConfig.model_validate({
        "task": spec, "model": model_config.to_dict(), "seeds": [1],
        "data": {"pool": {"path": str(sentiment_data / "pool.csv")}, "n_labeled": 8, "n_unlabeled": 12,
                 "holdout": 8},
        "patterns": [0, {"pattern": 1, "kind": "prompt_tuning", "n_tokens": 2},
                     {"pattern": 2, "kind": "ptuning", "encoder": "mlp"}, {"pattern": 3, "kind": "prefix_tuning"}],
        "train": {"max_steps": 2, "batch_size": 4, "grad_accumulation": 1, "learning_rate": 1e-3},
        "ipet": {"generations": 1}, "distill": {"max_steps": 2, "min_steps": 1, "batch_size": 4},
        "baseline": False,
        "store": str(tmp_path / "store"), "runs_dir": str(tmp_path / "runs")})
    result = pipeline.run(config)
    kinds = {}
    assert len(result.generations) == 2
    for generation in result.generations:
        assert len(generation.trained) == 4 and len(generation.test_logits) == 4
        for trained in generation.trained:
            record = json.loads((Path(trained.out("model").path) / "train_record.json").read_text())
            kinds[(generation.index, record["pattern"])] = record["kind"]["kind"]
    assert set(kinds.values()) == {"cloze", "prompt_tuning", "ptuning", "prefix_tuning"}
    assert kinds[(1, 3)] == kinds[(0, 3)] == "prefix_tuning"
    assert 0 <= result.evaluation.info["accuracy"] <= 1
    summary = result.summary(config.task_spec(), config)
    assert [len(g["pre_train_accuracy"]) for g in summary["generations"]] == [4, 4]
    assert all(np.isfinite(g["ensemble"]["accuracy"]) for g in summary["generations"])


def test_validate_names_each_patterns_kind_and_what_it_will_train(model_config, sentiment_data):
    from transformers import AutoConfig, AutoModelForMaskedLM

    from pet_core.validate import validate

    spec = {**SENTIMENT_SPEC, "patterns": [*SENTIMENT_SPEC["patterns"], "{a} {soft:3} So {mask}."]}
    base = {"task": spec, "model": model_config.to_dict(),
            "data": {"pool": {"path": str(sentiment_data / "pool.csv")}, "n_labeled": 8, "n_unlabeled": 8}}
    report = validate(RunConfig.model_validate({**base, "patterns": [
        0, {"pattern": 1, "kind": "prefix_tuning", "n_tokens": 3}, {"pattern": 2, "kind": "prompt_tuning"}]}))
    assert report.ok, report.errors
    lm = AutoConfig.from_pretrained(model_config.backbone)
    weights = sum(p.numel() for p in AutoModelForMaskedLM.from_pretrained(model_config.backbone).parameters())
    cloze = f"{weights / 1e6:.1f} M" if weights >= 1e6 else f"{weights:,}"
    assert report.facts["kinds"] == {
        "pattern 0": f"cloze ({cloze} trainable parameters)",
        "pattern 1": f"prefix_tuning ({3 * lm.num_hidden_layers * 2 * lm.hidden_size:,} trainable parameters)",
        "pattern 2": f"prompt_tuning ({(8 + 3) * lm.hidden_size:,} trainable parameters)"}
    refused = validate(RunConfig.model_validate({**base, "patterns": [2]}))
    assert refused.errors == [("pattern 2 ('{a} {soft:3} So {mask}.') has {soft} slots, which kind "
                               "'cloze' cannot fill; train it as kind 'ptuning' or 'prompt_tuning', or use a "
                               "template without them")]
