"""The ``t5`` kind on a tiny random T5 (BPE tokenizer with T5's sentinels, built on the fly): training, the three
score modes against hand computations with the HF model, save/load, validation, and a whole run."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from pet_core import pipeline
from pet_core.config import TrainConfig
from pet_core.kinds import get_kind
from pet_core.kinds.base import load_pattern_model, texts
from pet_core.kinds.t5.config import T5KindConfig
from pet_core.kinds.t5.model import T5Model
from pet_core.optim import seed_everything
from pet_core.spec import TaskSpec
from pet_core.training import train_pvp
from pet_core.validate import validate
from tests._petcore_support import SENTIMENT_SPEC, Recorder
from tests._run_support import tiny_run_config, write_topic_data

# "dreadful" and "splendid" are not in the tokenizer's corpus: they split into several pieces
MULTI_SPEC = TaskSpec.model_validate({**SENTIMENT_SPEC, "labels": [
    {"name": "negative", "raw": [0], "words": ["bad", "dreadful"]},
    {"name": "positive", "raw": [1], "words": ["good", "splendid"]}]})


def create(spec, model_config, pattern=0, **options) -> T5Model:
    seed_everything(0)
    return get_kind("t5").model_class().create(spec, pattern, model_config, get_kind("t5").config(options))


@torch.no_grad()
def hand_word_log_probs(model: T5Model, text: str, word_ids: list[int]) -> torch.Tensor:
    """Per-token log-probs of ``<extra_id_0> WORD <extra_id_1>`` from the HF model alone (its own shift)."""
    hf, tok = model.model, model.tokenizer
    (enc,) = model.pvp.encode_texts([text], [None])
    labels = torch.tensor([[tok.convert_tokens_to_ids("<extra_id_0>"), *word_ids,
                            tok.convert_tokens_to_ids("<extra_id_1>")]])
    out = hf(input_ids=torch.tensor([enc.input_ids]), labels=labels)
    token = torch.log_softmax(out.logits[0].float(), -1).gather(1, labels[0, :, None])[:, 0]
    torch.testing.assert_close(-token.mean(), out.loss, rtol=0, atol=1e-5)  # the HF loss is the mean NLL
    return token


def test_the_encoder_input_has_the_sentinel_where_the_mask_is(sentiment_spec, t5_model_config):
    model = create(sentiment_spec, t5_model_config)
    (enc,) = model.encode(["a dull film"], [None])
    tok = model.tokenizer
    assert enc.input_ids[enc.mask_positions[0]] == tok.convert_tokens_to_ids("<extra_id_0>")
    assert enc.input_ids[-1] == tok.eos_token_id and tok.mask_token_id is None
    assert tok.convert_ids_to_tokens(enc.input_ids) == [
        *tok.tokenize("a dull film"), *tok.tokenize("It was"), "<extra_id_0>", *tok.tokenize("."), "</s>"]


def test_sum_mean_and_first_scores_equal_hand_computations_with_the_hf_model(sentiment_examples, t5_model_config):
    lengths = {len(ids) for per in create(MULTI_SPEC, t5_model_config).pvp.verbalizer.token_ids.values()
               for ids in per}
    assert max(lengths) > 1 and min(lengths) == 1, "the spec must mix one-token and multi-token words"
    a, b = texts(sentiment_examples.slice(0, 3))
    scores = {}
    for mode in ("sum", "mean", "first"):
        model = create(MULTI_SPEC, t5_model_config, score=mode)
        model.train(False)
        with torch.no_grad():
            scores[mode] = model.label_logits(model.encode(a, b), [0, 1, 2])
    verbalizer = model.pvp.verbalizer
    for row, text in enumerate(a):
        for li, label in enumerate(verbalizer.label_names):
            per_word = [hand_word_log_probs(model, text, ids) for ids in verbalizer.token_ids[label]]
            expected = {"sum": np.mean([t.sum().item() for t in per_word]),
                        "mean": np.mean([t.mean().item() for t in per_word]),
                        "first": np.mean([t[1].item() for t in per_word])}
            for mode, value in expected.items():
                assert scores[mode][row, li].item() == pytest.approx(value, abs=1e-4), (mode, row, label)
    assert not torch.allclose(scores["sum"], scores["mean"]) and not torch.allclose(scores["sum"], scores["first"])


def test_training_lowers_the_loss_and_raises_accuracy_on_t(sentiment_spec, sentiment_split, t5_model_config,
                                                           tmp_path):
    labeled, _ = sentiment_split
    recorder = Recorder()
    config = TrainConfig(max_steps=20, batch_size=4, grad_accumulation=1, learning_rate=3e-3, score_batch_size=8)
    result = train_pvp(sentiment_spec, 0, 0, labeled, None, t5_model_config, config, tmp_path / "m",
                       callbacks=[recorder], kind=T5KindConfig())
    losses = recorder.losses
    assert len(losses) == 20 and np.mean(losses[-5:]) < np.mean(losses[:5])
    assert result.post_train_accuracy == 1.0 > result.pre_train_accuracy
    record = json.loads((tmp_path / "m" / "train_record.json").read_text())
    assert record["kind"] == {"kind": "t5", "score": "sum"}
    model, _ = load_pattern_model(sentiment_spec, tmp_path / "m", t5_model_config)
    assert isinstance(model, T5Model) and model.encode_unlabeled(*texts(labeled)) is None
    logits = model.predict(*texts(labeled), batch_size=3)
    assert logits.shape == (labeled.num_rows, 2) and np.isfinite(logits).all()


def test_save_and_load_keep_the_logits_and_the_score_mode(topic_spec, topic_examples, t5_model_config, tmp_path):
    model = create(topic_spec, t5_model_config, pattern=1, score="mean")
    with torch.no_grad():  # move the weights away from the backbone's, so that load must read the saved ones
        for p in model.module.parameters():
            p.add_(0.01 * torch.randn_like(p))
    model.train(False)
    logits = model.predict(*texts(topic_examples), batch_size=7)
    assert logits.shape == (topic_examples.num_rows, 3)
    model.save(tmp_path)
    assert (tmp_path / "model.safetensors").is_file() and (tmp_path / "tokenizer.json").is_file()
    (tmp_path / "train_record.json").write_text(json.dumps({"pattern": 1, "kind": model.kind_config.to_dict()}))
    loaded, _ = load_pattern_model(topic_spec, tmp_path, t5_model_config)
    assert loaded.settings.score == "mean"
    np.testing.assert_allclose(loaded.predict(*texts(topic_examples), batch_size=4), logits, rtol=0, atol=1e-5)


# -- validation -----------------------------------------------------------------------------------------------
def t5_patterns(**options):
    return [{"pattern": 0, "kind": "t5", **options}, {"pattern": 1, "kind": "t5", **options}]


def test_a_backbone_without_sentinels_is_one_clear_error(topic_data, tiny_mlm_dir, tmp_path):
    config = tiny_run_config(topic_data, tiny_mlm_dir, tmp_path / "store", patterns=t5_patterns())
    errors = validate(config).errors
    assert len(errors) == 2 and all("has no sentinel token <extra_id_0>" in e and str(tiny_mlm_dir) in e
                                    and "use a T5 backbone" in e for e in errors), errors
    assert not any("mask token" in e for e in errors), "a t5-only run needs no mask token"


def test_a_template_that_writes_the_sentinel_itself_is_refused(t5_model_config, tiny_t5_dir):
    from transformers import AutoTokenizer

    spec = TaskSpec.model_validate({**SENTIMENT_SPEC, "patterns": ["{a} <extra_id_0> It was {mask}."]})
    with pytest.raises(ValueError, match=r"pattern 0 .* writes a T5 sentinel itself: write \{mask\}"):
        T5Model.check(spec, 0, AutoTokenizer.from_pretrained(tiny_t5_dir), t5_model_config, T5KindConfig(), [], [])


def test_validate_accepts_a_t5_only_run_and_reports_its_words(topic_data, tiny_t5_dir, tmp_path):
    config = tiny_run_config(topic_data, tiny_t5_dir, tmp_path / "store", patterns=t5_patterns(score="first"))
    report = validate(config)
    assert report.ok, report.errors
    assert report.facts["kinds"]["pattern 0"].startswith("t5 (") and "unknown" not in report.facts["kinds"]["pattern 0"]
    assert report.facts["word tokens"]["World"] == "▁World"
    cloze = validate(tiny_run_config(topic_data, tiny_t5_dir, tmp_path / "store"))
    assert any("tokenizer has no mask token" in e and "pattern 0, kind 'cloze'" in e for e in cloze.errors)
    words = validate(tiny_run_config(topic_data, tiny_t5_dir, tmp_path / "store", patterns=t5_patterns(),
                                     words={"patterns": [0]}))
    assert any("words.patterns: pattern 0 is kind 't5'" in e for e in words.errors)


# -- a whole run ----------------------------------------------------------------------------------------------
def test_a_whole_run_on_t5_trains_scores_merges_distils_into_a_t5_classifier_and_evaluates(tiny_t5_dir, tmp_path):
    from transformers import AutoConfig

    data = write_topic_data(tmp_path / "data")
    config = tiny_run_config(data, tiny_t5_dir, tmp_path / "store", patterns=t5_patterns())
    assert validate(config).ok
    result = pipeline.run(config)
    (gen,) = result.generations
    assert [t.info["model_id"] for t in gen.trained] == ["g0-p0-s1", "g0-p1-s1"]
    classifier = result.classifier.out("classifier").path
    assert AutoConfig.from_pretrained(classifier).architectures == ["T5ForSequenceClassification"]
    final = result.summary(config.task_spec(), config)["final"]
    assert final["n"] == 9 and 0.0 <= final["accuracy"] <= 1.0
