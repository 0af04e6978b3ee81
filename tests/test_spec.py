"""pet_core.spec: task specs from YAML and their validation."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
from pydantic import ValidationError

from pet_core.spec import TaskSpec

from _petcore_support import SENTIMENT_SPEC, TOPIC_SPEC

TASKS_DIR = Path(__file__).resolve().parents[1] / "data" / "tasks"
TASK_FILES = sorted(TASKS_DIR.glob("*.yaml"))


def spec_with(**changes) -> dict:
    data = copy.deepcopy(SENTIMENT_SPEC)
    data.update(changes)
    return data


def test_task_files_exist():
    assert TASK_FILES, f"no task specs in {TASKS_DIR}"


@pytest.mark.parametrize("path", TASK_FILES, ids=lambda p: p.stem)
def test_every_task_yaml_loads(path):
    spec = TaskSpec.from_yaml(path)
    assert spec.name == path.stem
    assert len(spec.labels) >= 2
    for pid in range(len(spec.patterns)):
        words = spec.verbalizer(pid)
        assert sorted(words) == sorted(spec.label_names)
        assert all(words[name] for name in spec.label_names)
    # every raw value maps to a declared label
    assert set(spec.raw_to_label().values()) == set(spec.label_names)


def test_sst2_yaml_content():
    spec = TaskSpec.from_yaml(TASKS_DIR / "sst2.yaml")
    assert spec.label_names == ["negative", "positive"]
    assert spec.raw_to_label() == {"0": "negative", "1": "positive"}
    assert spec.verbalizer(0) == {"negative": ["bad"], "positive": ["great"]}
    assert spec.fields.a == ["sentence"] and spec.fields.b == []


def test_from_yaml_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        TaskSpec.from_yaml(tmp_path / "nope.yaml")


def test_from_yaml_roundtrip(tmp_path):
    import yaml

    path = tmp_path / "t.yaml"
    path.write_text(yaml.safe_dump(TOPIC_SPEC), encoding="utf-8")
    spec = TaskSpec.from_yaml(path)
    assert spec.label_names == ["World", "Sports", "Business"]
    assert spec.fields.a == ["title"] and spec.fields.b == ["description"] and spec.fields.id == "id"
    assert spec.patterns[0].template == "[ Category: {mask} ] {a} {b}"


def test_raw_values_are_strings_and_default_to_name():
    spec = TaskSpec.model_validate(spec_with(labels=[
        {"name": "neg", "raw": 0, "words": ["bad"]},
        {"name": "pos", "words": ["good"]},
    ]))
    assert spec.labels[0].raw == ["0"]
    assert spec.raw_to_label() == {"0": "neg", "pos": "pos"}


def test_pattern_own_verbalizer_overrides_labels():
    spec = TaskSpec.model_validate(spec_with(patterns=[
        "{a} It was {mask}.",
        {"template": "{a} All in all, it was {mask}.",
         "verbalizer": {"negative": ["terrible"], "positive": ["great"]}},
    ]))
    assert spec.verbalizer(0) == {"negative": ["bad", "terrible"], "positive": ["good", "great"]}
    assert spec.verbalizer(1) == {"negative": ["terrible"], "positive": ["great"]}


@pytest.mark.parametrize(
    ("template", "fragment"),
    [
        ("{a} It was good.", "exactly one {mask}, found 0"),
        ("{a} {mask} or {mask}.", "exactly one {mask}, found 2"),
        ("{a} {c} It was {mask}.", "unknown placeholder(s) ['c']"),
        ("It was {mask}.", "uses no text"),
        ("{a} {Mask}", "unknown placeholder(s) ['Mask']"),
    ],
)
def test_template_validation_errors_name_the_problem(template, fragment):
    with pytest.raises(ValidationError) as info:
        TaskSpec.model_validate(spec_with(patterns=[template]))
    message = str(info.value)
    assert fragment in message
    assert template in message


def test_b_slot_without_b_field():
    with pytest.raises(ValidationError, match=r"pattern 1 uses \{b\} but fields.b is empty"):
        TaskSpec.model_validate(spec_with(patterns=["{a} It was {mask}.", "{a}? {mask}, {b}"]))


def test_duplicate_verbalizer_word_across_labels():
    with pytest.raises(ValidationError) as info:
        TaskSpec.model_validate(spec_with(labels=[
            {"name": "negative", "raw": [0], "words": ["bad", "Good"]},
            {"name": "positive", "raw": [1], "words": ["good"]},
        ]))
    message = str(info.value)
    assert "verbalizer word" in message and "'good'" in message
    assert "'negative'" in message and "'positive'" in message


def test_duplicate_word_in_pattern_verbalizer():
    with pytest.raises(ValidationError, match="pattern 0: verbalizer word 'bad'"):
        TaskSpec.model_validate(spec_with(patterns=[
            {"template": "{a} It was {mask}.", "verbalizer": {"negative": ["bad"], "positive": ["bad"]}},
        ]))


def test_same_word_twice_in_one_label_is_allowed():
    spec = TaskSpec.model_validate(spec_with(labels=[
        {"name": "negative", "raw": [0], "words": ["bad", "Bad"]},
        {"name": "positive", "raw": [1], "words": ["good"]},
    ]))
    assert spec.verbalizer(0)["negative"] == ["bad", "Bad"]


def test_pattern_verbalizer_with_wrong_labels():
    with pytest.raises(ValidationError, match="differ from task labels"):
        TaskSpec.model_validate(spec_with(patterns=[
            {"template": "{a} It was {mask}.", "verbalizer": {"negative": ["bad"], "neutral": ["ok"]}},
        ]))


def test_pattern_verbalizer_with_empty_word_list():
    with pytest.raises(ValidationError, match="label 'positive' has no verbalizer words"):
        TaskSpec.model_validate(spec_with(patterns=[
            {"template": "{a} It was {mask}.", "verbalizer": {"negative": ["bad"], "positive": []}},
        ]))


def test_duplicate_label_names():
    with pytest.raises(ValidationError, match=r"duplicate label names \['pos'\]"):
        TaskSpec.model_validate(spec_with(labels=[
            {"name": "pos", "raw": [0], "words": ["bad"]},
            {"name": "pos", "raw": [1], "words": ["good"]},
        ]))


def test_raw_value_mapped_twice():
    with pytest.raises(ValidationError, match="raw value '1' maps to both 'negative' and 'positive'"):
        TaskSpec.model_validate(spec_with(labels=[
            {"name": "negative", "raw": [0, 1], "words": ["bad"]},
            {"name": "positive", "raw": [1], "words": ["good"]},
        ]))


@pytest.mark.parametrize(
    "change",
    [
        {"labels": [{"name": "only", "words": ["good"]}]},  # fewer than 2 labels
        {"patterns": []},
        {"unknown_key": 1},
        {"labels": [{"name": "a", "words": []}, {"name": "b", "words": ["good"]}]},
    ],
)
def test_structural_errors(change):
    with pytest.raises(ValidationError):
        TaskSpec.model_validate(spec_with(**change))


def test_fields_accept_string_or_list():
    spec = TaskSpec.model_validate(spec_with(fields={"a": ["title", "body"], "b": None}))
    assert spec.fields.a == ["title", "body"] and spec.fields.b == []
    assert spec.fields.label == "label" and spec.fields.separator == " "
