"""LM-BFF label search (pet_core.label_search) on the tiny BERT masked LM and on hand-made log-probs."""

from __future__ import annotations

import json

import pyarrow as pa
import pytest
import torch
from transformers import AutoModelForMaskedLM

from pet_core.config import TrainConfig, WordsConfig
from pet_core.kinds.cloze.model import ClozeModel
from pet_core.label_search import (
    STOP_WORDS,
    LabelSearchError,
    SearchResult,
    candidates,
    search,
    search_log_probs,
    vocabulary,
)
from pet_core.modeling import MaskedLM
from pet_core.pvp import PVP
from pet_core.spec import TaskSpec
from pet_core.training import train_pvp


@pytest.fixture(scope="module")
def mlm(model_config):
    return MaskedLM.load(model_config)


@pytest.fixture(scope="module")
def sentiment_t(sentiment_examples):
    """T: the first 16 sentiment rows (8 per label)."""
    return sentiment_examples.slice(0, 16)


def with_verbalizer(spec: TaskSpec, pattern_id: int, words: dict[str, list[str]]) -> TaskSpec:
    patterns = [p.model_dump() for p in spec.patterns]
    patterns[pattern_id]["verbalizer"] = words
    return TaskSpec.model_validate({**spec.model_dump(), "patterns": patterns})


def test_vocabulary_keeps_whole_one_token_words_only(tiny_tokenizer):
    vocab = vocabulary(tiny_tokenizer, space_before=True)
    tokens = tiny_tokenizer.convert_ids_to_tokens(list(vocab))
    assert {"good", "bad", "great", "terrible", "sports"} <= set(vocab.values())
    assert not [t for t in tokens if t.startswith("##") or t in tiny_tokenizer.all_special_tokens]
    assert all(w.isalpha() and len(w) >= 2 and w not in STOP_WORDS for w in vocab.values())
    assert {"it", "was", "the", ",", ".", "a"}.isdisjoint(vocab.values())  # in the vocabulary, filtered out
    for token_id, word in vocab.items():
        assert tiny_tokenizer(" " + word, add_special_tokens=False)["input_ids"] == [token_id]
    assert list(vocab.values()) == sorted(vocab.values())


def test_candidates_equal_brute_force_mean_log_softmax(mlm, tiny_mlm_dir, tiny_tokenizer, sentiment_spec,
                                                       sentiment_t):
    settings = WordsConfig(k_likely=15, k_per_label=5)
    found = candidates(mlm, sentiment_spec, 0, sentiment_t, settings)
    model = AutoModelForMaskedLM.from_pretrained(tiny_mlm_dir).eval()
    rows = [a for a, label in zip(sentiment_t.column("a").to_pylist(), sentiment_t.column("label").to_pylist(),
                                  strict=True) if label == "negative"]
    per_example = []
    with torch.no_grad():
        for text in rows:  # one example at a time, the pattern written out by hand: "{a} It was {mask}."
            enc = tiny_tokenizer(f"{text} It was {tiny_tokenizer.mask_token}.", return_tensors="pt")
            at = enc["input_ids"][0].tolist().index(tiny_tokenizer.mask_token_id)
            per_example.append(torch.log_softmax(model(**enc).logits[0, at], -1))
    mean = torch.stack(per_example).mean(0)
    vocab = vocabulary(tiny_tokenizer, space_before=True)
    expected = sorted(vocab, key=lambda i: (-float(mean[i]), vocab[i]))[:15]
    assert [w for w, _ in found["negative"]] == [vocab[i] for i in expected]
    assert [s for _, s in found["negative"]] == pytest.approx([float(mean[i]) for i in expected], abs=1e-5)


def test_search_is_deterministic_ranked_and_round_trips(mlm, sentiment_spec, sentiment_t):
    settings = WordsConfig(k_likely=20, k_per_label=6, n_pairs=8)
    result = search(mlm, sentiment_spec, 0, sentiment_t, settings)
    assert result == search(mlm, sentiment_spec, 0, sentiment_t, settings)
    assert result.folds == 4 and len(result.pairings) == 8
    keys = [(-p.cv_accuracy, -p.train_accuracy, -p.score) for p in result.pairings]
    assert keys == sorted(keys)
    assert all(result.pairings[0].cv_accuracy >= p.cv_accuracy for p in result.pairings)
    for pairing in result.pairings:
        assert len({w.lower() for w in pairing.words.values()}) == 2  # never one word for two labels
        assert all(w in [c for c, _ in result.candidates[label][:6]] for label, w in pairing.words.items())
    assert SearchResult.from_dict(json.loads(json.dumps(result.to_dict()))) == result
    best = result.best()
    assert sorted(best) == sentiment_spec.label_names and all(len(words) == 1 for words in best.values())
    with_verbalizer(sentiment_spec, 0, best)  # a valid verbalizer of the task spec


def test_search_finds_the_words_a_model_was_trained_to_predict(mlm, model_config, sentiment_spec, sentiment_t,
                                                               sentiment_examples, tmp_path):
    """Before PET training the spec's words are not among the top candidates; after 30 steps on them they are,
    each for its own label only."""
    spec_words = sentiment_spec.verbalizer(0)
    settings = WordsConfig(k_likely=5, k_per_label=5)

    def top(model: MaskedLM) -> dict[str, set[str]]:
        return {label: {w for w, _ in c} for label, c in candidates(model, sentiment_spec, 0, sentiment_t,
                                                                    settings).items()}

    assert all(not top(mlm)[label] & set(words) for label, words in spec_words.items())
    unlabeled = sentiment_examples.slice(16)
    unlabeled = unlabeled.set_column(3, "label", pa.nulls(unlabeled.num_rows, pa.string()))
    train = TrainConfig(max_steps=30, batch_size=8, grad_accumulation=1, learning_rate=1e-3, mlm_alpha=0)
    train_pvp(sentiment_spec, 0, 0, sentiment_t, unlabeled, model_config, train, tmp_path / "pvp")
    trained = top(MaskedLM.load(model_config, source=str(tmp_path / "pvp")))
    for label, words in spec_words.items():
        other = {w for other, ws in spec_words.items() if other != label for w in ws}
        assert trained[label] & set(words) and not trained[label] & other, (label, trained[label])


def test_train_accuracy_equals_cloze_model_accuracy(mlm, model_config, topic_spec, topic_examples):
    result = search(mlm, topic_spec, 1, topic_examples, WordsConfig(k_likely=8, k_per_label=4, n_pairs=4))
    for pairing in result.pairings:
        spec = with_verbalizer(topic_spec, 1, pairing.verbalizer())
        model = ClozeModel(mlm, PVP(spec, 1, mlm.tokenizer, model_config.max_seq_length))
        assert model.accuracy(topic_examples, spec, batch_size=8) == pytest.approx(pairing.train_accuracy)


def test_product_is_exhaustive_up_to_the_cap_then_a_beam(mlm, topic_spec, topic_examples):
    full = search(mlm, topic_spec, 0, topic_examples, WordsConfig(k_likely=3, k_per_label=3, n_pairs=100,
                                                                        max_combinations=27))
    lists = [[w.lower() for w, _ in full.candidates[label]] for label in topic_spec.label_names]
    distinct = [(a, b, c) for a in lists[0] for b in lists[1] for c in lists[2] if len({a, b, c}) == 3]
    assert len(full.pairings) == len(distinct)
    beam = search(mlm, topic_spec, 0, topic_examples, WordsConfig(k_likely=3, k_per_label=3, n_pairs=100,
                                                                        max_combinations=5))
    assert len(beam.pairings) <= 5
    assert max(p.train_accuracy for p in beam.pairings) <= max(p.train_accuracy for p in full.pairings)


def test_seed_words_come_first(mlm, sentiment_spec, sentiment_t):
    spec_seeded = candidates(mlm, sentiment_spec, 0, sentiment_t, WordsConfig(k_likely=5, seed_spec_words=True,
                                                                                 k_per_label=5))
    assert [w for w, _ in spec_seeded["negative"][:2]] == ["bad", "terrible"]
    assert [w for w, _ in spec_seeded["positive"][:2]] == ["good", "great"]
    assert len(spec_seeded["negative"]) == 5
    plain = candidates(mlm, sentiment_spec, 0, sentiment_t, WordsConfig(k_likely=5, k_per_label=5))
    explicit = search(mlm, sentiment_spec, 0, sentiment_t, WordsConfig(k_likely=5, k_per_label=5),
                      seed_words={"negative": ["no"]})  # a stop word, but a seed is the user's choice
    assert explicit.candidates["negative"][0][0] == "no"
    assert explicit.candidates["positive"] == plain["positive"]
    with pytest.raises(LabelSearchError, match="'unwatchable' .* not one token"):
        candidates(mlm, sentiment_spec, 0, sentiment_t, WordsConfig(), seed_words={"negative": ["unwatchable"]})


def test_label_without_example_is_one_clear_error(mlm, sentiment_spec, sentiment_examples):
    positives = sentiment_examples.filter(sentiment_examples.column("label").to_numpy(zero_copy_only=False)
                                          == "positive")
    with pytest.raises(LabelSearchError, match="label 'negative' has no example in T") as err:
        search(mlm, sentiment_spec, 0, positives, WordsConfig())
    assert "\n" not in str(err.value)
    with pytest.raises(ValueError, match="k_per_label"):
        WordsConfig(k_likely=3, k_per_label=4)


def test_one_example_per_label_means_no_cross_validation(mlm, sentiment_spec, sentiment_examples):
    result = search(mlm, sentiment_spec, 1, sentiment_examples.slice(0, 2), WordsConfig(k_likely=4, k_per_label=4))
    assert result.folds == 0 and all(p.cv_accuracy is None for p in result.pairings)
    assert [p.train_accuracy for p in result.pairings] == sorted((p.train_accuracy for p in result.pairings),
                                                                  reverse=True)


def test_cross_validation_demotes_a_word_likely_through_one_example():
    """'gamma' is the top negative word on T only thanks to the first negative example; the pairing with the
    steady 'alpha' is as accurate on T but found in every fold, so it ranks first."""
    words = {0: "alpha", 1: "beta", 2: "gamma", 3: "delta", 4: "eps"}
    neg = [-2.5, -20.0, -3.0, -20.0, -2.8]
    pos = [-20.0, -1.0, -20.0, -1.5, -20.0]
    rows = [[*neg[:2], 0.0, *neg[3:]], neg, neg, neg, pos, pos, pos, pos]
    labels = ["negative"] * 4 + ["positive"] * 4
    settings = WordsConfig(k_likely=2, k_per_label=2, folds=4, n_pairs=4)
    result = search_log_probs(torch.tensor(rows), labels, ["negative", "positive"], words, settings)
    assert [w for w, _ in result.candidates["negative"]] == ["gamma", "alpha"]
    assert [(p.words["negative"], p.words["positive"], p.cv_accuracy, p.train_accuracy) for p in result.pairings] == [
        ("alpha", "beta", 1.0, 1.0), ("alpha", "delta", 1.0, 1.0), ("gamma", "beta", 0.75, 1.0),
        ("gamma", "delta", 0.75, 1.0)]
