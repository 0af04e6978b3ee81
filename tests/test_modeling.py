"""pet_core.modeling and pet_core.kinds.cloze.model: loading MLMs, label logits at mask positions."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from pet_core.config import ModelConfig, Precision
from pet_core.modeling import (
    BackboneError, MaskedLM, collate, gather_positions, head_modules, label_scores, length_sorted_batches,
    resolve_backbone, resolve_device, resolve_precision,
)
from pet_core.pvp import PVP, Encoded
from pet_core.kinds.cloze.model import ClozeModel
from pet_core.spec import TaskSpec

from _petcore_support import SENTIMENT_SPEC


@pytest.fixture(scope="module")
def mlm(model_config) -> MaskedLM:
    loaded = MaskedLM.load(model_config)
    loaded.model.eval()
    return loaded


@pytest.fixture(scope="module")
def headless_dir(tmp_path_factory, tiny_mlm_dir):
    """A BERT checkpoint without MLM head (BertModel saved with the tiny tokenizer)."""
    from transformers import AutoConfig, AutoTokenizer, BertModel

    out = tmp_path_factory.mktemp("headless") / "model"
    torch.manual_seed(0)
    BertModel(AutoConfig.from_pretrained(tiny_mlm_dir)).save_pretrained(out, safe_serialization=True)
    AutoTokenizer.from_pretrained(tiny_mlm_dir).save_pretrained(out)
    return out


# -- label_scores ---------------------------------------------------------------------------------------------
def test_label_scores_average_words_per_label():
    logits = torch.tensor([[0.0, 1.0, 2.0, 3.0, 4.0, 5.0], [5.0, 4.0, 3.0, 2.0, 1.0, 0.0]])
    scores = label_scores(logits, token_ids=[1, 3, 4, 5], owner=[0, 0, 1, 2], n_labels=3)
    expected = torch.tensor([[(1 + 3) / 2, 4.0, 5.0], [(4 + 2) / 2, 1.0, 0.0]])
    torch.testing.assert_close(scores, expected)


def test_label_scores_keeps_gradient():
    logits = torch.randn(3, 10, requires_grad=True)
    label_scores(logits, [2, 7], [0, 1], 2).sum().backward()
    grad = logits.grad
    assert torch.all(grad[:, [2, 7]] == 1) and grad.sum() == 6


def test_gather_positions():
    hidden = torch.arange(2 * 4 * 3, dtype=torch.float32).view(2, 4, 3)
    out = gather_positions(hidden, torch.tensor([[1, 3], [0, 2]]))
    torch.testing.assert_close(out, torch.stack([hidden[0, [1, 3]], hidden[1, [0, 2]]]))


def test_collate_pads_and_masks():
    enc = [Encoded([2, 5, 4, 3], [2]), Encoded([2, 4, 3], [1]), Encoded([2, 7, 7, 7, 4, 3], [4])]
    batch = collate(enc, [2, 0], pad_id=0)
    assert batch.indices == [2, 0]
    assert batch.input_ids.tolist() == [[2, 7, 7, 7, 4, 3], [2, 5, 4, 3, 0, 0]]
    assert batch.attention_mask.tolist() == [[1] * 6, [1, 1, 1, 1, 0, 0]]
    assert batch.mask_positions.tolist() == [[4], [2]]


def test_length_sorted_batches_cover_every_index_once():
    enc = [Encoded([0] * n, [0]) for n in (3, 9, 1, 5, 7, 2, 8)]
    batches = list(length_sorted_batches(enc, 3))
    assert sorted(i for b in batches for i in b) == list(range(7))
    assert [len(b) for b in batches] == [3, 3, 1]
    lengths = [len(enc[i].input_ids) for b in batches for i in b]
    assert lengths == sorted(lengths, reverse=True)


# -- devices and precision ------------------------------------------------------------------------------------
def test_resolve_device_and_precision():
    assert resolve_device("cpu") == torch.device("cpu")
    if not torch.cuda.is_available():
        assert resolve_device("auto") == torch.device("cpu")
        with pytest.raises(BackboneError, match="CUDA is not available"):
            resolve_device("cuda:0")
    cpu = torch.device("cpu")
    assert resolve_precision(Precision.fp32, cpu) is None
    assert resolve_precision(Precision.bf16, cpu) is torch.bfloat16
    assert resolve_precision(Precision.auto, cpu) in (None, torch.bfloat16)


def test_resolve_backbone(tmp_path, tiny_mlm_dir):
    assert resolve_backbone(str(tiny_mlm_dir)) == str(tiny_mlm_dir)
    assert resolve_backbone("org/some-model") == "org/some-model"  # hub names pass through
    with pytest.raises(BackboneError, match="does not exist"):
        resolve_backbone(str(tmp_path / "nope"))


# -- loading --------------------------------------------------------------------------------------------------
def test_tiny_checkpoint_loads_with_auto_classes(tiny_mlm_dir):
    from transformers import AutoModelForMaskedLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_mlm_dir)
    model, info = AutoModelForMaskedLM.from_pretrained(tiny_mlm_dir, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    assert tok.mask_token == "[MASK]" and model.config.vocab_size == len(tok)
    assert (tiny_mlm_dir / "model.safetensors").is_file()


def test_load_masked_lm(mlm, tiny_tokenizer):
    assert mlm.device == torch.device("cpu") and mlm.autocast_dtype is None
    assert getattr(mlm, "missing_head_keys", []) == []
    assert len(mlm.head) == 1 and mlm.head[0] is mlm.model.cls
    assert head_modules(mlm.model) == [mlm.model.cls]
    assert mlm.tokenizer.get_vocab() == tiny_tokenizer.get_vocab()


def test_load_missing_path_raises(tmp_path, model_config):
    with pytest.raises(BackboneError, match="does not exist"):
        MaskedLM.load(model_config, source=str(tmp_path / "missing"))


def test_load_empty_dir_raises(tmp_path, model_config):
    with pytest.raises(BackboneError, match="cannot load masked LM"):
        MaskedLM.load(model_config, source=str(tmp_path))


def test_load_checkpoint_without_mlm_head_raises(headless_dir, model_config):
    with pytest.raises(BackboneError) as info:
        MaskedLM.load(model_config, source=str(headless_dir))
    message = str(info.value)
    assert "has no trained MLM head" in message and "cls.predictions" in message
    loaded = MaskedLM.load(model_config, source=str(headless_dir), require_head=False)
    assert isinstance(loaded, MaskedLM)


# -- mask logits ----------------------------------------------------------------------------------------------
def sentiment_batch(mlm, spec, texts, pattern=0):
    pvp = PVP(spec, pattern, mlm.tokenizer, 64)
    enc = pvp.encode_texts(texts, [None] * len(texts))
    return pvp, enc, collate(enc, list(range(len(enc))), mlm.tokenizer.pad_token_id)


def test_mask_logits_match_full_forward(mlm, sentiment_spec, sentiment_examples):
    texts = sentiment_examples.column("a").to_pylist()[:8]
    _, _, batch = sentiment_batch(mlm, sentiment_spec, texts)
    with torch.no_grad():
        gathered = mlm.mask_logits(batch)
        full = mlm.model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
    assert gathered.shape == (8, 1, mlm.model.config.vocab_size) and gathered.dtype == torch.float32
    rows = torch.arange(8)
    torch.testing.assert_close(gathered[:, 0], full[rows, batch.mask_positions[:, 0]], atol=1e-5, rtol=1e-5)


def test_pvp_model_logits_are_verbalizer_scores(mlm, sentiment_spec, sentiment_examples):
    texts = sentiment_examples.column("a").to_pylist()[:6]
    pvp, _, batch = sentiment_batch(mlm, sentiment_spec, texts)
    model = ClozeModel(mlm, pvp)
    got = model.predict(texts, [None] * 6, batch_size=4)
    assert got.shape == (6, 2) and got.dtype == np.float32
    with torch.no_grad():
        full = mlm.model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
    at_mask = full[torch.arange(6), batch.mask_positions[:, 0]]
    ids = mlm.tokenizer.convert_tokens_to_ids(["bad", "terrible", "good", "great"])
    expected = torch.stack([at_mask[:, ids[:2]].mean(1), at_mask[:, ids[2:]].mean(1)], 1)
    np.testing.assert_allclose(got, expected.numpy(), atol=1e-5, rtol=1e-5)


def test_predict_independent_of_batching(mlm, topic_spec, topic_examples):
    model = ClozeModel(mlm, PVP(topic_spec, 0, mlm.tokenizer, 64))
    a, b = topic_examples.column("a").to_pylist(), topic_examples.column("b").to_pylist()
    one = model.predict(a, b, batch_size=1)
    many = model.predict(a, b, batch_size=7)
    np.testing.assert_allclose(one, many, atol=1e-5, rtol=1e-5)
    # order is the input order: reversed input gives reversed output
    np.testing.assert_allclose(model.predict(a[::-1], b[::-1], batch_size=7), many[::-1], atol=1e-5, rtol=1e-5)


def test_predict_progress_callback(mlm, topic_spec, topic_examples):
    model = ClozeModel(mlm, PVP(topic_spec, 1, mlm.tokenizer, 64))
    calls = []
    model.predict(topic_examples.column("a").to_pylist(), topic_examples.column("b").to_pylist(), batch_size=8,
                  progress=lambda done, total: calls.append((done, total)))
    assert calls == [(8, 30), (16, 30), (24, 30), (30, 30)]


def test_batch_logits_equals_predict_in_eval(mlm, sentiment_spec, sentiment_examples):
    texts = sentiment_examples.column("a").to_pylist()[:5]
    model = ClozeModel(mlm, PVP(sentiment_spec, 1, mlm.tokenizer, 64))
    enc = model.encode(texts, [None] * 5)
    assert list(enc) == [1]
    logits = model.label_logits(enc, [0, 1, 2, 3, 4])
    assert logits.requires_grad
    np.testing.assert_allclose(logits.detach().numpy(), model.predict(texts, [None] * 5, 5), atol=1e-5)


# -- multi-token verbalizers ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def multi_spec(tiny_tokenizer) -> TaskSpec:
    data = copy.deepcopy(SENTIMENT_SPEC)
    data["multi_token"] = True
    data["labels"][0]["words"] = ["bad"]
    data["labels"][1]["words"] = ["goodish"]
    assert len(tiny_tokenizer.tokenize("goodish")) > 1
    return TaskSpec.model_validate(data)


def reference_decode(mlm, pvp, text, word_ids):
    """Most-confident-first decoding of one word for one example, written out naively."""
    enc = pvp.encode_texts([text], [None], n_masks=len(word_ids))[0]
    ids = torch.tensor([enc.input_ids])
    remaining = list(range(len(word_ids)))
    total = 0.0
    with torch.no_grad():
        while remaining:
            logprobs = torch.log_softmax(mlm.model(input_ids=ids).logits[0], -1)
            scores = {k: logprobs[enc.mask_positions[k], word_ids[k]].item() for k in remaining}
            best = max(scores, key=scores.get)
            total += scores[best]
            ids[0, enc.mask_positions[best]] = word_ids[best]
            remaining.remove(best)
    return total


def test_multi_token_predict_matches_reference_decoding(mlm, multi_spec):
    pvp = PVP(multi_spec, 0, mlm.tokenizer, 64)
    model = ClozeModel(mlm, pvp)
    assert model.multi_token
    texts = ["a wonderful and moving film", "a dull and boring mess", "i loved every minute of it"]
    got = model.predict(texts, [None] * 3, batch_size=2)
    assert got.shape == (3, 2) and np.isfinite(got).all()
    for row, text in enumerate(texts):
        for col, label in enumerate(multi_spec.label_names):
            expected = reference_decode(mlm, pvp, text, pvp.verbalizer.token_ids[label][0])
            assert got[row, col] == pytest.approx(expected, abs=1e-4)
    assert (got <= 0).all()  # sums of log-probabilities


def test_multi_token_batch_logits_parallel_pass(mlm, multi_spec):
    pvp = PVP(multi_spec, 1, mlm.tokenizer, 64)
    model = ClozeModel(mlm, pvp)
    enc = model.encode(["a dull and boring mess", "great acting"], [None, None])
    assert sorted(enc) == [1, len(pvp.verbalizer.token_ids["positive"][0])]
    logits = model.label_logits(enc, [0, 1])
    assert logits.shape == (2, 2) and logits.requires_grad
    # label 'negative' has a one-token word: its parallel score is the log-prob at the single mask
    batch = collate(enc[1], [0, 1], mlm.tokenizer.pad_token_id)
    with torch.no_grad():
        logprobs = torch.log_softmax(mlm.mask_logits(batch)[:, 0], -1)
    bad = mlm.tokenizer.convert_tokens_to_ids("bad")
    torch.testing.assert_close(logits[:, 0].detach(), logprobs[:, bad], atol=1e-5, rtol=1e-5)


def test_model_config_validation():
    with pytest.raises(ValueError):
        ModelConfig(backbone="x", max_seq_length=4)
    cfg = ModelConfig(backbone="x", precision="bf16")
    assert cfg.precision is Precision.bf16
    assert ModelConfig.from_dict(cfg.to_dict()) == cfg


def test_a_hub_name_that_cannot_be_loaded_fails_in_seconds_with_one_line(monkeypatch):
    """Offline mode, an unreachable hub or an unknown name: one BackboneError in seconds, not a minute of
    retries (transformers' own behaviour); whether this machine reaches the hub decides which message."""
    import time

    from huggingface_hub import constants

    from pet_core.backbone import hub_problem, loadable_backbone

    name = "petflow-tests/no-such-model-4f2a"
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)  # the test session sets it
    hub_problem.cache_clear()
    started = time.monotonic()
    with pytest.raises(BackboneError, match=r"cannot load backbone: (.*hub cannot be reached|the Hugging Face hub has "
                                            r"no model)"):
        loadable_backbone(name)
    assert time.monotonic() - started < 30
    hub_problem.cache_clear()
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    assert "HF_HUB_OFFLINE is set" in hub_problem(name) and "hf download" in hub_problem(name)
    hub_problem.cache_clear()
    assert hub_problem("./a/local/path") is None
