"""The words stage (issue 16): LM-BFF's label search on T inside a run, cached, keyed into the models that use it."""

from __future__ import annotations

from pathlib import Path

import pytest

from pet_core import pipeline
from pet_core.artifacts import read_json
from pet_core.keys import spec_hash
from pet_core.label_search import SearchResult
from pet_core.plan import searched_spec
from pet_core.run_config import RunConfig
from pet_core.validate import validate

from _run_support import tiny_run_config, tiny_run_dict, write_yaml

WORDS = {"k_likely": 20, "k_per_label": 3, "n_pairs": 3, "folds": 2}


def records_of(result, stage: str):
    return [r for r in result.records if r.stage == stage]


def test_a_run_with_words_trains_on_the_words_found_on_t(topic_data, tiny_mlm_dir, tmp_path):
    config = tiny_run_config(topic_data, Path(tiny_mlm_dir), tmp_path / "store", words=WORDS)
    result = pipeline.run(config)
    [found] = records_of(result, "words")
    words = read_json(found.out("words").verify().path)
    assert sorted(words) == ["0", "1"]  # every pattern of the run
    spec = config.task_spec()
    searched = searched_spec(spec, words)
    for pattern in (0, 1):
        best = SearchResult.from_dict(words[str(pattern)]).best()
        assert searched.verbalizer(pattern) == best
        assert found.info["patterns"][str(pattern)]["words"] == {k: v[0] for k, v in best.items()}
        assert sorted(best) == sorted(spec.label_names)
    assert searched != spec, "the tiny model's best words are not the spec's hand-picked ones"
    # the models were trained and scored with the searched verbalizers: their keys hash that spec
    assert {r.config["spec"] for r in records_of(result, "train")} == {spec_hash(searched)}
    plain = pipeline.run(tiny_run_config(topic_data, Path(tiny_mlm_dir), tmp_path / "store"))
    assert {r.config["spec"] for r in records_of(plain, "train")} == {spec_hash(spec)}
    again = pipeline.run(config)
    assert all(r.cached for r in again.records), [r.stage for r in again.records if not r.cached]


def test_words_patterns_limit_the_search(topic_data, tiny_mlm_dir, tmp_path):
    config = tiny_run_config(topic_data, Path(tiny_mlm_dir), tmp_path / "store", words={**WORDS, "patterns": [1]},
                             distill={"max_steps": 1})
    assert config.word_search_patterns() == [1]
    result = pipeline.run(config)
    words = read_json(records_of(result, "words")[0].out("words").path)
    assert sorted(words) == ["1"]
    assert searched_spec(config.task_spec(), words).verbalizer(0) == config.task_spec().verbalizer(0)


@pytest.mark.parametrize(("words", "data", "fragment"), [
    ({"patterns": [5]}, {}, "words.patterns: [5] are not patterns of this run (0, 1)"),
    ({}, {"n_labeled": 2}, "words: the label search needs an example of every label in T"),
])
def test_validate_catches_what_the_words_stage_would_hit(words, data, fragment, topic_data, tiny_mlm_dir, tmp_path):
    config = tiny_run_config(topic_data, Path(tiny_mlm_dir), tmp_path / "store", words=words, data=data)
    report = validate(config)
    assert any(fragment in e for e in report.errors), report.errors


def test_patterns_with_soft_slots_are_not_searched(topic_data, tiny_mlm_dir, tmp_path):
    raw = tiny_run_dict(topic_data, Path(tiny_mlm_dir), tmp_path / "store", words={})
    spec = RunConfig.model_validate(raw).task_spec().model_dump(mode="json")
    spec["patterns"][1]["template"] = "{soft:2} " + spec["patterns"][1]["template"]
    config = RunConfig.model_validate({**raw, "task": spec, "patterns": [0, {"pattern": 1, "kind": "ptuning"}]})
    assert config.word_search_patterns() == [0]  # by default only cloze templates are searched
    listed = RunConfig.model_validate({**raw, "task": spec, "patterns": [0, {"pattern": 1, "kind": "ptuning"}],
                                       "words": {"patterns": [1]}})
    assert any("words.patterns: pattern 1 has {soft} slots" in e for e in validate(listed).errors)


def test_cli_words_prints_candidates_and_the_choice_and_fills_the_store(topic_data, tiny_mlm_dir, tmp_path):
    from typer.testing import CliRunner

    from flows.cli import app

    path = write_yaml(tiny_run_dict(topic_data, Path(tiny_mlm_dir), tmp_path / "store", words=WORDS), tmp_path / "run.yaml")
    result = CliRunner().invoke(app, ["words", str(path), "--top", "3"])
    assert result.exit_code == 0, result.output
    words = read_json(next((tmp_path / "store" / "words").glob("*/words.json")))
    best = SearchResult.from_dict(words["0"]).pairings[0]
    assert "pattern 0" in result.stdout and "cv accuracy" in result.stdout
    for label, word in best.words.items():
        assert label in result.stdout and word in result.stdout
    run = pipeline.run(RunConfig.from_yaml(path))
    assert records_of(run, "words")[0].cached, "the run takes the search petflow words did"


def auto_spec(pattern: int, seeds: dict | None = None) -> dict:
    """The tiny topic spec with ``words: auto`` on one pattern (optionally with seed words)."""
    from _petcore_support import TOPIC_SPEC

    spec = {**TOPIC_SPEC, "patterns": [{"template": t} for t in TOPIC_SPEC["patterns"]]}
    spec["patterns"][pattern] = {**spec["patterns"][pattern], "words": "auto",
                                 **({"verbalizer": seeds} if seeds else {})}
    return spec


def test_words_auto_in_the_spec_searches_that_pattern_with_its_seed_words(topic_data, tiny_mlm_dir, tmp_path):
    seeds = {"World": ["great"], "Sports": ["good"], "Business": ["bad"]}  # one token each in the tiny vocabulary
    config = tiny_run_config(topic_data, Path(tiny_mlm_dir), tmp_path / "store", task=auto_spec(1, seeds),
                             distill={"max_steps": 1})
    assert config.words is None and config.word_search_patterns() == [1]
    assert config.task_spec().auto_words() == [1]
    result = pipeline.run(config)
    [found] = records_of(result, "words")
    words = read_json(found.out("words").path)
    assert sorted(words) == ["1"]
    candidates = SearchResult.from_dict(words["1"]).candidates
    assert {label: [w for w, _ in c[:1]] for label, c in candidates.items()} == seeds  # seeds lead
    searched = searched_spec(config.task_spec(), words)
    assert searched.auto_words() == [] and searched.patterns[1].verbalizer == SearchResult.from_dict(words["1"]).best()
    assert {r.config["spec"] for r in records_of(result, "train")} == {spec_hash(searched)}


def test_an_unsearched_auto_pattern_is_never_trained(topic_spec, topic_examples, tiny_mlm_dir, tmp_path):
    from pet_core.spec import TaskSpec
    from pet_core.training import train_pvp

    from _run_support import tiny_model_config

    spec = TaskSpec.model_validate(auto_spec(0))
    with pytest.raises(ValueError, match="pattern 0 has words: auto and its label words were not searched yet"):
        train_pvp(spec, 0, 1, topic_examples, None, tiny_model_config(tiny_mlm_dir), None, tmp_path / "m")


def test_words_auto_is_refused_where_it_cannot_work(topic_data, tiny_mlm_dir, tmp_path):
    from pet_core.spec import TaskSpec

    soft = auto_spec(1)
    soft["patterns"][1]["template"] = "{soft} " + soft["patterns"][1]["template"]
    with pytest.raises(ValueError, match="words: auto needs a plain cloze template"):
        TaskSpec.model_validate(soft)
    zero_shot = tiny_run_config(topic_data, Path(tiny_mlm_dir), tmp_path / "store", task=auto_spec(0),
                                data={"n_labeled": 0})
    assert any("search their label words on T, which is empty (n_labeled=0)" in e for e in validate(zero_shot).errors)
