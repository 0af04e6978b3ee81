"""pet_core.validate: every problem of a run is found before training and named (field, file, row, fix)."""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
import pytest
from transformers import AutoTokenizer
import yaml

from pet_core.validate import ValidationError, ValidationReport, validate

from _petcore_support import TOPIC_SPEC
from _run_support import spec_with, tiny_run_config


@pytest.fixture(scope="module")
def make(topic_data, tiny_mlm_dir, tmp_path_factory):
    """make(**sections) -> RunConfig on the topic data and the tiny BERT."""
    store = tmp_path_factory.mktemp("validate-store") / "store"
    return lambda **sections: tiny_run_config(topic_data, Path(tiny_mlm_dir), store, **sections)


def one(report: ValidationReport, pattern: str) -> str:
    """The single error matching ``pattern`` (regex)."""
    found = [e for e in report.errors if re.search(pattern, e)]
    assert len(found) == 1, f"expected one error matching {pattern!r}, got {report.errors}"
    return found[0]


# -- the good case ----------------------------------------------------------------------------------------------
def test_good_config_passes(make, tiny_mlm_dir):
    report = validate(make())
    assert report.ok and report.errors == [] and report.warnings == [], report
    assert report.facts["labeled"] == 6 and report.facts["unlabeled"] == 15
    assert report.facts["backbone"] == {"name": str(tiny_mlm_dir), "model_type": "bert"}
    assert report.raise_for_errors() is report
    assert sum(report.facts["T labels"].values()) == 6 and set(report.facts["T labels"]) <= {"World", "Sports",
                                                                                          "Business"}
    tokenizer = AutoTokenizer.from_pretrained(tiny_mlm_dir)
    assert report.facts["word tokens"] == {
        w: " ".join(tokenizer.convert_ids_to_tokens(tokenizer(" " + w, add_special_tokens=False)["input_ids"]))
        for w in ("World", "Sports", "Business")}


def test_raise_for_errors_carries_the_report(make, tmp_path):
    report = validate(make(model={"backbone": str(tmp_path / "missing")}))
    with pytest.raises(ValidationError) as err:
        report.raise_for_errors()
    assert err.value.report is report and str(tmp_path / "missing") in str(err.value)
    assert isinstance(err.value, ValueError)


# -- task ---------------------------------------------------------------------------------------------------------
def test_missing_task_file(make, tmp_path):
    report = validate(make(task=str(tmp_path / "nope.yaml")))
    assert "nope.yaml" in one(report, r"^task: ") and "does not exist" in report.errors[0]


def test_invalid_task_spec_file(make, tmp_path):
    path = tmp_path / "task.yaml"
    path.write_text(yaml.safe_dump(spec_with(TOPIC_SPEC, patterns=["{a} no mask here"])), encoding="utf-8")
    error = one(validate(make(task=str(path))), r"^task: ")
    assert "needs exactly one {mask}" in error and "patterns.0" in error


def test_pattern_id_out_of_range(make):
    error = one(validate(make(patterns=[0, 5])), r"^task: ")
    assert "patterns [5] do not exist" in error


# -- data ----------------------------------------------------------------------------------------------------------
def test_missing_pool_file(make, tmp_path):
    error = one(validate(make(data={"pool": {"path": str(tmp_path / "gone.csv")}})), r"^data\.pool: ")
    assert str(tmp_path / "gone.csv") in error and "does not exist" in error


def test_test_set_that_is_the_pool(make, topic_data):
    """The same file as pool and test (spelled differently) would put T and D into the test set."""
    relative_twin = topic_data / "." / "pool.csv"
    error = one(validate(make(data={"test": {"path": str(relative_twin)}})), r"^data\.test is the pool")
    assert str(relative_twin) in error and "data.holdout" in error
    assert validate(make()).ok  # the separate test file of the good case passes


def test_bad_row_in_the_test_file(make, topic_data, tmp_path):
    frame = pd.read_csv(topic_data / "test.csv", dtype=str)
    frame.loc[2, "topic"] = "weather"
    frame.to_csv(tmp_path / "test.csv", index=False)
    error = one(validate(make(data={"test": {"path": str(tmp_path / "test.csv")}})), r"^data\.test: ")
    assert str(tmp_path / "test.csv") in error and "row 2" in error and "'weather'" in error


def test_label_without_examples_in_the_pool(make, topic_data, tmp_path):
    frame = pd.read_csv(topic_data / "pool.csv", dtype=str)
    frame[frame.topic != "business"].to_csv(tmp_path / "pool.csv", index=False)
    error = one(validate(make(data={"pool": {"path": str(tmp_path / "pool.csv")}})), r"have no examples")
    assert "['Business']" in error and str(tmp_path / "pool.csv") in error


def test_more_labeled_than_the_pool(make):
    error = one(validate(make(data={"n_labeled": 100})), r"^data: ")
    assert "n_labeled=100" in error and "21 rows" in error


def test_more_unlabeled_than_remain(make):
    error = one(validate(make(data={"n_unlabeled": 50})), r"^data: ")
    assert "n_unlabeled=50" in error and "15" in error


def test_per_label_more_than_a_label_has(make):
    error = one(validate(make(data={"n_labeled": 8, "per_label": True})), r"^data: ")
    assert "n_labeled=8 per label" in error


def test_holdout_is_taken_into_account(make, tmp_path):
    from pet_core import stages
    from pet_core.data import DataError
    from pet_core.store import ArtifactStore

    config = make(data={"test": None, "holdout": 6, "n_labeled": 6, "n_unlabeled": 12})  # 21 - 6 - 6 = 9 < 12
    with pytest.raises(DataError, match="n_unlabeled=12"):
        stages.prepare(ArtifactStore(tmp_path / "store"), config.task_spec(), config.data)
    assert not validate(config).ok


# -- warnings ------------------------------------------------------------------------------------------------------
def test_empty_d_is_an_error(make):
    report = validate(make(data={"n_unlabeled": 0}))
    assert not report.ok and any("D is empty" in e for e in report.errors)
    assert report.facts["unlabeled"] == 0


def test_t_missing_a_label_is_a_warning(make):
    report = validate(make(data={"n_labeled": 2}))
    assert report.ok
    (warning,) = [w for w in report.warnings if "T has no example of" in w]
    assert "n_labeled=2" in warning and "per_label" in warning and "min_per_label: 1" in warning


def test_min_per_label_draws_every_label_within_the_total(make):
    report = validate(make(data={"n_labeled": 3, "min_per_label": 1}))
    assert report.ok and not [w for w in report.warnings if "T has no example of" in w], report.warnings
    assert report.facts["labeled"] == 3
    refused = validate(make(data={"n_labeled": 2, "min_per_label": 1}))
    assert any("min_per_label=1 over 3 labels needs 3 examples but n_labeled=2" in e for e in refused.errors)
    with pytest.raises(ValueError, match="data.min_per_label applies to a total n_labeled"):
        make(data={"n_labeled": 2, "min_per_label": 1, "per_label": True})


def test_long_texts_are_counted_not_errors(make):
    report = validate(make(model={"max_seq_length": 14}))
    assert report.ok, report.errors
    cut = [w for w in report.warnings if "exceed max_seq_length=14" in w]
    assert len(cut) == 2, report.warnings  # one per pattern
    for warning in cut:
        count, total = map(int, re.search(r"(\d+) of (\d+) sampled texts", warning).groups())
        assert 0 < count <= total == 21
        assert "truncated" in warning


# -- patterns and verbalizers against the tokenizer ----------------------------------------------------------------
def test_verbalizer_word_that_is_not_one_token(make):
    spec = spec_with(TOPIC_SPEC, labels=[{"name": "World", "raw": ["world"], "words": ["wonderfulness"]},
                                         *TOPIC_SPEC["labels"][1:]])
    report = validate(make(task=spec))
    errors = [e for e in report.errors if "wonderfulness" in e]
    assert len(errors) == 2, report.errors  # both patterns
    assert errors[0].startswith("pattern 0: ") and "not one token" in errors[0]
    assert "splits into ['wonderful'," in errors[0] and "multi_token: true" in errors[0]


def test_pattern_too_long_for_max_seq_length(make):
    spec = spec_with(TOPIC_SPEC, multi_token=True,
                     patterns=["{a} {b} all in all , it was just {mask} , in summary ."],
                     labels=[{"name": "World", "raw": ["world"], "words": ["wonderfulness"]},
                             *TOPIC_SPEC["labels"][1:]])
    error = one(validate(make(task=spec, model={"max_seq_length": 12})), r"^pattern 0 \(")
    assert "without any text" in error and "max_seq_length is 12" in error


# -- backbone ------------------------------------------------------------------------------------------------------
def test_backbone_that_does_not_exist(make, tmp_path):
    error = one(validate(make(model={"backbone": str(tmp_path / "no-model")})), r"^model\.backbone")
    assert str(tmp_path / "no-model") in error and "does not exist" in error


def test_backbone_folder_that_is_not_a_model(make, tmp_path):
    (tmp_path / "empty-model").mkdir()
    error = one(validate(make(model={"backbone": str(tmp_path / "empty-model")})), r"^model\.backbone")
    assert str(tmp_path / "empty-model") in error and "cannot load" in error


def test_backbone_without_mlm_head_needs_adapt(make, headless_backbone):
    error = one(validate(make(model={"backbone": str(headless_backbone)})), r"no MLM head")
    assert str(headless_backbone) in error and "adapt" in error
    assert validate(make(model={"backbone": str(headless_backbone)}, adapt={"max_steps": 5})).ok


def test_check_backbone_false_skips_the_backbone(make, tmp_path):
    report = validate(make(model={"backbone": str(tmp_path / "no-model")}), check_backbone=False)
    assert report.ok and "backbone" not in report.facts


def test_several_problems_are_all_reported(make, tmp_path):
    report = validate(make(data={"n_labeled": 100}, model={"backbone": str(tmp_path / "no-model")}))
    assert len(report.errors) == 2 and not report.ok


def test_ipet_with_a_single_model_is_an_error(make):
    report = validate(make(patterns=[0], seeds=[1], ipet={"generations": 1}))
    assert any("ipet" in e.lower() and "2 models" in e for e in report.errors), report.errors


# -- what a run would hit after the data (issue 18) ----------------------------------------------------------------
def test_empty_pattern_list_is_an_error(make):
    error = one(validate(make(patterns=[]), check_backbone=False), r"^patterns: ")
    assert "selects no pattern" in error and "the task has 2" in error


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="this machine has CUDA")
def test_cuda_device_without_cuda_is_an_error(make):
    error = one(validate(make(model={"device": "cuda:0"}), check_backbone=False), r"^model\.device: ")
    assert "CUDA is not available" in error and "auto" in error


def test_unknown_device_is_an_error(make):
    assert "model.device" in one(validate(make(model={"device": "gpu"}), check_backbone=False), r"^model\.device")


@pytest.mark.parametrize("key", ["store", "runs_dir"])
def test_store_or_runs_dir_that_is_a_file(make, tmp_path, key):
    (tmp_path / "file").write_text("x", encoding="utf-8")
    config = make().model_copy(update={key: str(tmp_path / "file")})
    error = one(validate(config, check_backbone=False), rf"^{key}: ")
    assert f"{tmp_path / 'file'} is a file, not a folder" in error


def test_backbone_that_is_a_file(make, tmp_path):
    (tmp_path / "weights.bin").write_bytes(b"x")
    error = one(validate(make(model={"backbone": str(tmp_path / "weights.bin")})), r"^model\.backbone")
    assert "is a file, not a model folder" in error and "does not exist" not in error


def test_backbone_folder_without_weights(make, tmp_path, tiny_mlm_dir):
    import shutil

    folder = tmp_path / "no-weights"
    shutil.copytree(tiny_mlm_dir, folder, ignore=shutil.ignore_patterns("*.safetensors"))
    error = one(validate(make(model={"backbone": str(folder)})), r"^model\.backbone")
    assert "lacks the weights, model.safetensors or pytorch_model.bin" in error and "config.json" in error


def test_damaged_safetensors_file(make, tmp_path, tiny_mlm_dir):
    import shutil

    folder = tmp_path / "damaged"
    shutil.copytree(tiny_mlm_dir, folder)
    (folder / "model.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{}")
    error = one(validate(make(model={"backbone": str(folder)}, adapt={"max_steps": 2})), r"^model\.backbone")
    assert str(folder / "model.safetensors") in error and "re-download or re-copy it" in error
