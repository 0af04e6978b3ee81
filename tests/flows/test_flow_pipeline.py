"""The pipeline end to end on the tiny model: PET, cached reruns, partial reruns, iPET with adaptation."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

from _flow_support import read_run, run_artifacts, stage_flags, task_run_states

from flows.pipeline import pipeline

PET_STAGES = {"prepare", "train g0-p0-s1", "train g0-p1-s1", "score g0-p0-s1 on D", "score g0-p0-s1 on test",
              "score g0-p1-s1 on D", "score g0-p1-s1 on test", "merge g0", "distill", "evaluate",
              # the final classifier next to its teacher on T (baseline off in the tiny configs)
              "score g0-p0-s1 on T", "score g0-p1-s1 on T", "evaluate final on T"}


def test_pet_pipeline_writes_run_dir_metrics_and_artifacts(pet_run):
    _, result, _ = pet_run
    manifest, metrics = read_run(result)
    assert set(stage_flags(manifest)) == PET_STAGES
    assert not any(stage_flags(manifest).values())  # a fresh store: everything built
    for stage in manifest["stages"]:
        assert Path(stage["record"]["path"]).is_file()
    run_dir = Path(result["run_dir"])
    assert run_dir.name == f"tiny-pet-{metrics['digest']}"
    assert (run_dir / "report.md").read_text().startswith("# petflow run `tiny-pet`")
    assert (run_dir / "links" / "classifier" / "config.json").is_file()
    assert metrics["data"]["labeled"]["rows"] == 6 and metrics["data"]["unlabeled"]["rows"] == 15
    assert set(metrics["generations"][0]["models"]) == {"g0-p0-s1", "g0-p1-s1"}
    assert metrics["test"]["n"] == 9 and 0.0 <= metrics["test"]["accuracy"] <= 1.0
    assert len(metrics["test"]["confusion"]) == 3

    artifacts = run_artifacts(manifest["flow_run_id"])
    keys = {a.key for a in artifacts if a.key}
    assert {"tiny-pet-data", "tiny-pet-g0-models", "tiny-pet-summary", "tiny-pet-stages",
            "tiny-pet-files", "tiny-pet-data-files"} <= keys
    # everything sits on the run a user opens, also what tasks inside the PET subflow created
    assert {str(a.flow_run_id) for a in artifacts} == {manifest["flow_run_id"]}
    summary = next(a for a in artifacts if a.key == "tiny-pet-summary")
    assert "Confusion matrix" in summary.data and "accuracy" in summary.data
    assert "| T |" in summary.data and "| test |" in summary.data  # final classifier next to the ensemble
    assert [r["split"] for r in metrics["comparison"]["rows"]] == ["T", "test"]
    assert metrics["comparison"]["rows"][1]["final"] == metrics["test"]["accuracy"]
    assert sum(1 for a in artifacts if a.type == "progress") >= 4  # training and scoring progress
    files = next(a for a in artifacts if a.key == "tiny-pet-files").data
    soft_labels = next(s for s in manifest["stages"] if s["stage"] == "merge")["outputs"]["soft_labels"]
    assert f"`{soft_labels['path']}`" in files and "file://" not in files  # a path to copy, not a dead link
    assert f"`{run_dir}`" in files and "pd.read_parquet(" in files


def test_rerun_takes_every_stage_from_the_store(pet_run):
    config, first, first_s = pet_run
    started = time.perf_counter()
    second = pipeline(str(config))
    second_s = time.perf_counter() - started
    manifest, metrics = read_run(second)
    assert all(stage_flags(manifest).values()), stage_flags(manifest)
    assert metrics == read_run(first)[1]
    states = task_run_states(manifest["flow_run_id"], expect=len(PET_STAGES) + 6)  # + validate, 3 reports, 2 accuracies
    assert states["train-g0-p0-s1"] == "Cached"
    assert sum(1 for state in states.values() if state == "Cached") == len(PET_STAGES), states
    print(f"\ntiny PET pipeline: first run {first_s:.1f} s, cached rerun {second_s:.1f} s")
    assert second_s < first_s, (second_s, first_s)


def test_deleted_model_reruns_only_it_and_its_dependents(pet_run):
    config, first, _ = pet_run
    before = read_run(first)[0]
    record = Path(next(s for s in before["stages"] if s["name"] == "train g0-p0-s1")["record"]["path"])
    shutil.rmtree(record.parent / "model")
    manifest, _ = read_run(pipeline(str(config)))
    rerun = {name for name, cached in stage_flags(manifest).items() if not cached}
    dependents = {"train g0-p0-s1", "score g0-p0-s1 on D", "score g0-p0-s1 on test", "merge g0", "distill",
                  "evaluate", "score g0-p0-s1 on T", "evaluate final on T"}
    assert "train g0-p0-s1" in rerun
    assert rerun <= dependents, rerun - dependents
    keys = {s["name"]: s["key"] for s in manifest["stages"]}
    assert keys["train g0-p0-s1"] == {s["name"]: s["key"] for s in before["stages"]}["train g0-p0-s1"]


def test_ipet_with_adapted_backbone_holdout_test_and_a_mixed_ensemble(tmp_path, make_config, topic_data):
    data = {"pool": str(topic_data / "pool.csv"), "holdout": 6, "n_labeled": 6, "seed": 1}  # test held out of the pool
    config = make_config(tmp_path, "tiny-ipet", data=data, ipet={"generations": 1},
                         adapt={"max_steps": 2, "batch_size": 4, "max_seq_length": 32},
                         patterns=[0, {"pattern": 1, "kind": "prompt_tuning", "n_tokens": 2}],
                         words={"k_likely": 20, "k_per_label": 3, "folds": 2})
    result = pipeline(str(config))
    manifest, metrics = read_run(result)
    flags = stage_flags(manifest)
    assert {"adapt", "words", "next generation g1", "train g1-p0-s1", "train g1-p1-s1", "merge g1"} <= set(flags)
    # label words searched on T with the adapted backbone; both generations train with them
    words = next(s for s in manifest["stages"] if s["stage"] == "words")
    assert sorted(metrics["words"]) == ["0", "1"] and set(metrics["words"]["0"]["words"]) == {"World", "Sports", "Business"}
    task = manifest["config"]["task"]
    assert task["patterns"][0]["verbalizer"] == {k: [v] for k, v in metrics["words"]["0"]["words"].items()}
    assert words["record"]["path"].endswith("record.json")
    assert "## Label words (LM-BFF search on T)" in (Path(result["run_dir"]) / "report.md").read_text()
    assert [g["generation"] for g in metrics["generations"]] == [0, 1]
    assert metrics["data"]["test"]["rows"] == 6 and metrics["data"]["unlabeled"]["rows"] == 9
    assert metrics["test"]["n"] == 6
    sets = metrics["generations"][1]["sets"]
    assert len(sets) == 2 and all(s["rows"] > 6 for s in sets)  # T plus examples labelled by the other model
    adapted = next(s for s in manifest["stages"] if s["stage"] == "adapt")["outputs"]["backbone"]["path"]
    assert manifest["config"]["model"]["backbone"] == adapted
    artifacts = {a.key: a for a in run_artifacts(manifest["flow_run_id"]) if a.key}
    assert {"tiny-ipet-g1-models", "tiny-ipet-g1-sets", "tiny-ipet-words"} <= set(artifacts)
    # the mixed ensemble: a prompt-tuning adapter on the adapted backbone beside a cloze model, in both generations
    assert [{m: g["models"][m]["kind"] for m in g["models"]} for g in metrics["generations"]] == [
        {f"g{i}-p0-s1": "cloze", f"g{i}-p1-s1": "prompt_tuning"} for i in (0, 1)]
    assert "prompt_tuning" in artifacts["tiny-ipet-g1-models"].data
    adapter = next(s for s in manifest["stages"] if s["name"] == "train g1-p1-s1")["outputs"]["model"]["path"]
    assert json.loads((Path(adapter) / "prompt_adapter.json").read_text())["base"]["backbone"] == adapted
    assert not (Path(adapter) / "model.safetensors").exists()


def test_t5_patterns_run_the_whole_flow_with_ipet_into_a_t5_classifier(tmp_path, topic_data, tiny_t5_dir):
    """Issue 16: the t5 kind through the Prefect pipeline: PET, one iPET generation, merge, distillation into the
    T5 backbone's sequence classifier, evaluation, the run folder and the UI tables."""
    from transformers import AutoConfig

    from _run_support import tiny_run_dict, write_yaml

    patterns = [{"pattern": 0, "kind": "t5"}, {"pattern": 1, "kind": "t5", "score": "mean"}]
    config = write_yaml(tiny_run_dict(topic_data, tiny_t5_dir, tmp_path / "store", name="tiny-t5", patterns=patterns,
                                      ipet={"generations": 1}, distill={"max_steps": 5}), tmp_path / "tiny-t5.yaml")
    result = pipeline(str(config))
    manifest, metrics = read_run(result)
    assert {"train g1-p0-s1", "train g1-p1-s1", "merge g1", "distill", "evaluate"} <= set(stage_flags(manifest))
    assert [{m: g["models"][m]["kind"] for m in g["models"]} for g in metrics["generations"]] == [
        {f"g{i}-p0-s1": "t5", f"g{i}-p1-s1": "t5"} for i in (0, 1)]
    assert metrics["test"]["n"] == 9 and 0.0 <= metrics["test"]["accuracy"] <= 1.0
    classifier = Path(result["run_dir"]) / "links" / "classifier"
    assert AutoConfig.from_pretrained(classifier).architectures == ["T5ForSequenceClassification"]
    artifacts = {a.key for a in run_artifacts(manifest["flow_run_id"]) if a.key}
    assert {"tiny-t5-g0-models", "tiny-t5-g1-models", "tiny-t5-summary"} <= artifacts
