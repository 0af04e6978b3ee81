"""LM-BFF demonstrations: the ``{demos}`` slot written by the PVP, drawn from T by the cloze kinds (never the
query, fresh per training step, fixed per text at inference), filtered by similarity, saved with the model."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from pet_core.artifacts import ArtifactError
from pet_core.config import ScoreConfig, TrainConfig
from pet_core.kinds import get_kind, known_kinds
from pet_core.kinds.base import load_pattern_model, texts
from pet_core.kinds.demos import DEMO_POOL, DemoEncodings, DemoPool, candidates, text_key
from pet_core.pvp import PVP
from pet_core.scoring import score
from pet_core.spec import TaskSpec
from pet_core.training import train_pvp
from tests._petcore_support import SENTIMENT_SPEC

DEMO_TEMPLATE = "{a} It was {mask}. {demos}"
FAST = TrainConfig(max_steps=3, batch_size=4, grad_accumulation=1, learning_rate=1e-3, score_batch_size=8)
CLOZE_FAMILY = [k for k in known_kinds() if k != "t5"]


def demo_spec(template: str = DEMO_TEMPLATE) -> TaskSpec:
    return TaskSpec.model_validate({**SENTIMENT_SPEC, "patterns": [template]})


def tokens(tokenizer, ids: list[int]) -> list[str]:
    return tokenizer.convert_ids_to_tokens(ids)


# -- the template slot ----------------------------------------------------------------------------------------
def test_a_template_takes_one_demos_slot_and_nothing_else_new():
    assert demo_spec().patterns[0].template == DEMO_TEMPLATE
    with pytest.raises(ValueError, match=r"at most one \{demos\} slot, found 2"):
        demo_spec("{a} It was {mask}. {demos} {demos}")
    with pytest.raises(ValueError, match=r"unknown placeholder\(s\) \['demo'\]"):
        demo_spec("{a} It was {mask}. {demo}")


def test_demonstrations_are_the_pattern_with_each_label_word_at_the_mask(tiny_tokenizer):
    pvp = PVP(demo_spec(), 0, tiny_tokenizer, 64)
    query, bad, good = pvp.slot_ids(["a dull film", "an awful story", "a great cast"], [None] * 3)
    plain = pvp.assemble(query)
    assert tokens(tiny_tokenizer, plain.input_ids) == ["[CLS]", "a", "dull", "film", "it", "was", "[MASK]", ".",
                                                       "[SEP]"]
    enc = pvp.assemble(query, 1, [(0, bad), (1, good)])
    assert tokens(tiny_tokenizer, enc.input_ids) == [
        "[CLS]", "a", "dull", "film", "it", "was", "[MASK]", ".",
        "[SEP]", "an", "awful", "story", "it", "was", "bad", ".",
        "[SEP]", "a", "great", "cast", "it", "was", "good", ".", "[SEP]"]
    assert enc.mask_positions == plain.mask_positions == [6] and enc.truncated == 0
    assert pvp.encode_texts(["a dull film"], [None])[0].input_ids == plain.input_ids  # no demos: slot empty


def test_demonstrations_are_shortened_before_the_query(tiny_tokenizer):
    long_query = " ".join(["great"] * 12)
    long_demo = " ".join(["dull"] * 30)
    pvp = PVP(demo_spec(), 0, tiny_tokenizer, 32)
    query, demo = pvp.slot_ids([long_query, long_demo], [None, None])
    enc = pvp.assemble(query, 1, [(0, demo), (1, demo)])
    assert len(enc.input_ids) == 32 and enc.truncated == 0
    kept = tokens(tiny_tokenizer, enc.input_ids)
    plain = len(pvp.assemble(query).input_ids)  # [CLS] query it was [MASK] . [SEP]
    assert kept[1:13] == ["great"] * 12 and kept.count("dull") == 32 - plain - 2 * len(["[SEP]", "it", "was", "bad", "."])
    assert kept.count("dull") % 2 == 0  # both demonstrations shortened alike (longest first)
    short = PVP(demo_spec(), 0, tiny_tokenizer, 20)
    enc = short.assemble(short.slot_ids([long_query], [None])[0], 1, [(0, demo), (1, demo)])
    assert len(enc.input_ids) == 20 and enc.truncated > 0 and "dull" not in tokens(tiny_tokenizer, enc.input_ids)


def test_a_pattern_whose_demonstrations_cannot_fit_names_them(tiny_tokenizer):
    with pytest.raises(ValueError, match="more for one demonstration per label"):
        PVP(demo_spec(), 0, tiny_tokenizer, 16)


def test_the_query_never_demonstrates_itself_and_the_filter_keeps_the_most_similar():
    pool = DemoPool(["x", "y", "z", "w", "v"], [None] * 5, [0, 0, 0, 1, 1])
    keys = [text_key("x", None), text_key("new", None)]
    assert candidates(pool, 2, keys) == [[[1, 2], [3, 4]], [[0, 1, 2], [3, 4]]]
    similarity = np.array([[0, 0.1, 0.9, 0.2, 0.8], [0.5, 0.4, 0.3, 0.7, 0.1]])
    assert candidates(pool, 2, keys, similarity, keep=0.5) == [[[2], [4]], [[0, 1], [3]]]
    lonely = DemoPool(["x", "w"], [None, None], [0, 1])
    assert candidates(lonely, 2, [text_key("x", None)]) == [[[], [1]]]  # no other example of label 0: none drawn


# -- the kinds ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", CLOZE_FAMILY)
def test_every_cloze_kind_trains_with_demonstrations_saves_its_pool_and_scores_the_same_after_loading(
        name, sentiment_split, model_config, tmp_path):
    spec = demo_spec()
    labeled, unlabeled = sentiment_split
    kind = get_kind(name).config({"demos": {"sets": 3}})
    result = train_pvp(spec, 0, 7, labeled, unlabeled, model_config, FAST, tmp_path / "m", kind=kind)
    assert result.steps == FAST.max_steps
    pool = DemoPool.load(tmp_path / "m")
    assert pool.a == labeled.column("a").to_pylist() and len(pool.labels) == labeled.num_rows
    model, _ = load_pattern_model(spec, tmp_path / "m", model_config)
    a, b = texts(unlabeled)
    logits = model.predict(a, b, batch_size=5)
    np.testing.assert_allclose(model.predict(a[::-1], b[::-1], batch_size=3)[::-1], logits, atol=1e-5)
    np.testing.assert_allclose(model.predict(a[:4], b[:4], batch_size=2), logits[:4], atol=1e-5)
    score(spec, tmp_path / "m", unlabeled, tmp_path / "logits.parquet", model_config,
          ScoreConfig(batch_size=4, chunk_rows=7))
    scored = pq.read_table(tmp_path / "logits.parquet")
    np.testing.assert_allclose(np.array(scored.column("logits").to_pylist()), logits, atol=1e-5)


def test_training_draws_fresh_demonstrations_and_inference_averages_fixed_sets(sentiment_split, model_config):
    spec = demo_spec()
    labeled, _ = sentiment_split
    model = get_kind("cloze").model_class().create(spec, 0, model_config, get_kind("cloze").config({"demos": {"sets": 2}}))
    model.use_labeled(labeled, 0)
    encodings = model.encode(*texts(labeled))
    assert isinstance(encodings, DemoEncodings)
    rows = list(range(labeled.num_rows))
    draws = {tuple(e.input_ids) for _ in range(6) for e in model._rows(encodings, rows, None)[1]}
    assert len(draws) > labeled.num_rows, "training drew the same demonstrations every step"
    fixed = [model._rows(encodings, rows, s)[1] for s in (0, 0, 1)]
    assert [e.input_ids for e in fixed[0]] == [e.input_ids for e in fixed[1]] != [e.input_ids for e in fixed[2]]
    queries = labeled.column("a").to_pylist()
    for i, choices in enumerate(encodings.choices):  # the query is never among what it may draw
        assert all(queries[r] != queries[i] for rows in choices for r in rows) and any(choices)
    model.train(False)
    with torch.inference_mode():
        mean = model.inference_logits(encodings, rows[:4])
        each = [model._scores(model._rows(encodings, rows[:4], s), decode=False) for s in (0, 1)]
    torch.testing.assert_close(mean, (each[0] + each[1]) / 2)


def test_the_similarity_filter_embeds_with_the_models_own_encoder(sentiment_split, model_config):
    spec = demo_spec()
    labeled, _ = sentiment_split
    kind = get_kind("cloze").config({"demos": {"filter": 0.5}})
    model = get_kind("cloze").model_class().create(spec, 0, model_config, kind)
    model.use_labeled(labeled, 0)
    a, b = texts(labeled)
    encodings = model.encode(a, b)
    vectors = model._embed(a, b)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-5)
    per_label = [labeled.column("label").to_pylist().count(name) for name in spec.label_names]
    for i, choices in enumerate(encodings.choices):
        for li, rows in enumerate(choices):
            others = per_label[li] - (spec.label_names.index(labeled.column("label")[i].as_py()) == li)
            assert len(rows) == max(1, -(-others // 2))
            best = max((r for r in range(len(a)) if r != i and model.demo_pool.labels[r] == li),
                       key=lambda r: vectors[i] @ vectors[r])
            assert best in rows


def test_a_model_without_its_pool_or_without_T_says_so(sentiment_split, model_config, tmp_path):
    spec = demo_spec()
    labeled, _ = sentiment_split
    model = get_kind("cloze").model_class().create(spec, 0, model_config, get_kind("cloze").config())
    with pytest.raises(ValueError, match=r"has \{demos\} but the model was given no labelled examples"):
        model.encode(*texts(labeled))
    train_pvp(spec, 0, 0, labeled, None, model_config, FAST, tmp_path / "m")
    (tmp_path / "m" / DEMO_POOL).unlink()
    with pytest.raises(ArtifactError, match=f"has no {DEMO_POOL}: its pattern has {{demos}}"):
        load_pattern_model(spec, tmp_path / "m", model_config)


def test_the_t5_kind_refuses_demonstrations(t5_model_config):
    with pytest.raises(ValueError, match=r"has \{demos\}, which kind 't5' does not write"):
        get_kind("t5").model_class().create(demo_spec(), 0, t5_model_config, get_kind("t5").config())


def test_a_pool_table_round_trips(tmp_path):
    pool = DemoPool(["x", "y"], [None, "b"], [1, 0])
    pool.save(tmp_path)
    assert DemoPool.load(tmp_path) == pool
    assert pa.types.is_int32(pq.read_table(tmp_path / DEMO_POOL).schema.field("label").type)


# -- a run --------------------------------------------------------------------------------------------------------
def demo_topic_spec(auto: bool) -> dict:
    """The tiny topic spec with ``{demos}`` after each pattern (pattern 1 also with ``words: auto``)."""
    from _petcore_support import TOPIC_SPEC

    patterns = [{"template": t + " {demos}"} for t in TOPIC_SPEC["patterns"]]
    if auto:
        patterns[1]["words"] = "auto"
    return {**TOPIC_SPEC, "patterns": patterns}


def test_auto_words_with_demonstrations_run_through_ipet_and_distillation(topic_data, tiny_mlm_dir, tmp_path):
    from pathlib import Path

    from pet_core import pipeline
    from pet_core.artifacts import read_json
    from pet_core.plan import searched_spec

    from _run_support import tiny_run_config

    patterns = [0, {"pattern": 1, "kind": "cloze", "demos": {"sets": 2, "filter": 0.5}}]
    config = tiny_run_config(topic_data, Path(tiny_mlm_dir), tmp_path / "store", task=demo_topic_spec(auto=True),
                             patterns=patterns, ipet={"generations": 1}, distill={"max_steps": 2})
    assert config.demo_patterns() == [0, 1] and config.word_search_patterns() == [1]
    result = pipeline.run(config)
    trained = [r for r in result.records if r.stage == "train"]
    assert len(trained) == 4  # two patterns, generations 0 and 1
    words = read_json(next(r for r in result.records if r.stage == "words").out("words").path)
    spec = searched_spec(config.task_spec(), words)
    for record in trained:
        folder = Path(record.out("model").path)
        saved = read_json(folder / "train_record.json")
        assert len(DemoPool.load(folder).a) == saved["n_labeled"]  # the pool is T of that generation
        assert saved["kind"] == ({"kind": "cloze"} if saved["pattern"] == 0
                                 else {"kind": "cloze", "demos": {"sets": 2, "filter": 0.5}})
        if saved["generation"] == 1:
            assert saved["n_labeled"] > 6  # iPET's pseudo-labelled examples join T and so the pool
        model, _ = load_pattern_model(spec, folder, config.model)
        assert model.demo_pool is not None and model.pvp.verbalizer.words == spec.verbalizer(saved["pattern"])
    assert result.evaluation is not None and result.evaluation.info
    again = pipeline.run(config)
    assert all(r.cached for r in again.records)


@pytest.mark.parametrize(("data", "fragment", "kind"), [
    ({"n_labeled": 0}, "have {demos}, drawn from T, which is empty (n_labeled=0)", "errors"),
    ({"n_labeled": 1, "min_per_label": 0}, "have {demos}, but T has no example of", "warnings"),
])
def test_validate_says_when_demonstrations_cannot_be_drawn(data, fragment, kind, topic_data, tiny_mlm_dir, tmp_path):
    from pathlib import Path

    from pet_core.validate import validate

    from _run_support import tiny_run_config

    config = tiny_run_config(topic_data, Path(tiny_mlm_dir), tmp_path / "store", task=demo_topic_spec(auto=False),
                             data=data)
    report = validate(config)
    assert any(fragment in line for line in getattr(report, kind)), (report.errors, report.warnings)
    plain = tiny_run_config(topic_data, Path(tiny_mlm_dir), tmp_path / "store", data=data)
    assert not any("{demos}" in line for line in validate(plain).errors + validate(plain).warnings)
