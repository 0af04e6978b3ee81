"""pet_core.pipeline.run: a whole PET / iPET run over the store on the tiny BERT, and what a rerun recomputes.

One store is shared by the module; the fixtures below act on it in a fixed order (first run, identical
rerun, distill change, deleted model, iPET), each exactly once, so the tests can check stage by stage
what was taken from the cache.
"""

from __future__ import annotations

import math
import shutil
import time
from pathlib import Path

import pytest

from pet_core import pipeline, plan
from pet_core.artifacts import read_table
from pet_core.store import ArtifactStore

from _run_support import tiny_run_config, write_topic_data
from reliability._pipeline_support import call_names, comparable_summary, leftovers, spy_stages, store_entries

PET_STAGES = {
    "prepare", "train g0-p0-s1", "train g0-p1-s1", "score g0-p0-s1 on unlabeled", "score g0-p0-s1 on test",
    "score g0-p1-s1 on unlabeled", "score g0-p1-s1 on test", "merge", "distill", "evaluate distill on test",
}
# the final classifier against its teacher on T: the last generation's models and the classifier scored on T
COMPARE_G0 = {"score g0-p0-s1 on labeled", "score g0-p1-s1 on labeled", "evaluate distill on labeled"}
FINAL = {"merge", "distill", "evaluate distill on test", "evaluate distill on labeled"}


def run_spied(config):
    started = time.perf_counter()
    with spy_stages() as calls:
        result = pipeline.run(config)
    wall = time.perf_counter() - started
    names = call_names(calls, {k: v.sha256 for k, v in result.prepared.outputs.items()})
    return result, names, calls, wall


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    root = tmp_path_factory.mktemp("pipeline")
    return {"data": write_topic_data(root / "data"), "store": root / "store"}


@pytest.fixture(scope="module")
def config(work, tiny_mlm_dir):
    return tiny_run_config(work["data"], tiny_mlm_dir, work["store"])


@pytest.fixture(scope="module")
def first(config):
    result, names, calls, wall = run_spied(config)
    return {"result": result, "names": names, "calls": calls, "wall": wall,
            "summary": result.summary(config.task_spec(), config)}


@pytest.fixture(scope="module")
def second(first, config):
    result, names, calls, wall = run_spied(config)
    return {"result": result, "names": names, "calls": calls, "wall": wall,
            "summary": result.summary(config.task_spec(), config)}


@pytest.fixture(scope="module")
def distill_changed(second, config):
    changed = config.with_updates({"distill.max_steps": 2})
    result, names, _, _ = run_spied(changed)
    return {"result": result, "names": names, "summary": result.summary(changed.task_spec(), changed)}


@pytest.fixture(scope="module")
def model_deleted(distill_changed, first, config):
    victim = next(r for r in first["result"].generations[0].trained if r.info["model_id"] == "g0-p0-s1")
    before = {c.key: c for c in first["calls"]}
    shutil.rmtree(victim.out("model").path)
    result, names, calls, _ = run_spied(config)
    return {"result": result, "names": names, "calls": calls, "before": before, "victim": victim,
            "summary": result.summary(config.task_spec(), config)}


@pytest.fixture(scope="module")
def ipet(model_deleted, config):
    with_ipet = config.with_updates({"ipet.generations": 1})
    result, names, _, _ = run_spied(with_ipet)
    return {"result": result, "names": names, "config": with_ipet,
            "summary": result.summary(with_ipet.task_spec(), with_ipet)}


# -- the first run ---------------------------------------------------------------------------------------------
def test_first_run_writes_every_stage(first, work):
    assert set(first["names"]) == PET_STAGES | COMPARE_G0
    assert not any(first["names"].values()), "a fresh store has no cache hits"
    entries = store_entries(work["store"])
    assert {k: len(v) for k, v in entries.items()} == {
        "prepare": 1, "train": 2, "score": 6, "merge": 1, "distill": 1, "evaluate": 2}
    assert leftovers(work["store"]) == [], "no temp files or directories remain"
    store = ArtifactStore(work["store"])
    for call in first["calls"]:
        assert store.lookup(call.stage, call.key) is not None, f"{call.stage} {call.key[:8]} is not valid"


def test_first_run_result_objects(first, config):
    result = first["result"]
    assert [g.index for g in result.generations] == [0]
    gen = result.generations[0]
    assert [t.info["model_id"] for t in gen.trained] == ["g0-p0-s1", "g0-p1-s1"]
    assert len(gen.unlabeled_logits) == len(gen.test_logits) == 2
    assert result.evaluation is not None and result.classifier.stage == "distill"
    d = read_table(result.prepared.out("unlabeled").path)
    assert read_table(result.soft_labels.out("soft_labels").path).num_rows == d.num_rows == 15
    assert result.prepared.info["labeled"]["rows"] == 6 and result.prepared.info["test"]["rows"] == 9
    assert plan.model_grid(config) == [(0, 1), (1, 1)]


def test_summary_has_per_model_ensemble_and_final_metrics(first):
    summary = first["summary"]
    (gen,) = summary["generations"]
    assert gen["generation"] == 0 and len(gen["pre_train_accuracy"]) == 2
    assert sorted(gen["models"]) == ["g0-p0-s1", "g0-p1-s1"]
    assert all(0.0 <= acc <= 1.0 for acc in gen["models"].values())
    assert gen["ensemble"]["n"] == 9 and 0.0 <= gen["ensemble"]["accuracy"] <= 1.0
    final = summary["final"]
    assert final["n"] == 9 and final["labels"] == ["World", "Sports", "Business"]
    assert 0.0 <= final["accuracy"] <= 1.0 and 0.0 <= final["macro_f1"] <= 1.0
    assert sum(map(sum, final["confusion"])) == 9
    assert summary["cached_stages"] == 0 and summary["stages"] == len(first["result"].records)
    assert math.isfinite(summary["wall_s"])


# -- an identical rerun --------------------------------------------------------------------------------------
def test_second_run_is_all_cache_hits_and_identical(first, second, work):
    assert set(second["names"]) == PET_STAGES | COMPARE_G0
    assert all(second["names"].values()), {k: v for k, v in second["names"].items() if not v}
    assert [r.to_dict() for r in second["result"].records] == [r.to_dict() for r in first["result"].records]
    assert comparable_summary(second["summary"]) == comparable_summary(first["summary"])
    assert second["summary"]["cached_stages"] == second["summary"]["stages"]
    assert {k: len(v) for k, v in store_entries(work["store"]).items()}["train"] == 2


def test_second_run_is_fast(first, second):
    assert second["wall"] < max(1.5, first["wall"] / 3), (first["wall"], second["wall"])


# -- a changed distill section ---------------------------------------------------------------------------------
def test_changing_distill_steps_reruns_only_distill_and_evaluate(distill_changed, first):
    names = distill_changed["names"]
    assert set(names) == PET_STAGES | COMPARE_G0
    rerun = sorted(k for k, cached in names.items() if not cached)
    assert rerun == ["distill", "evaluate distill on labeled", "evaluate distill on test"]
    assert distill_changed["result"].classifier.info["steps"] == 2
    assert distill_changed["summary"]["generations"] == first["summary"]["generations"]


# -- a deleted model -----------------------------------------------------------------------------------------------
def test_deleting_one_model_reruns_it_and_only_what_depends_on_it(model_deleted):
    names, before = model_deleted["names"], model_deleted["before"]
    now = {c.stage if c.stage != "train" else f"train p{c.config['pattern']}": c for c in model_deleted["calls"]}
    assert names["train g0-p0-s1"] is False, "the deleted model is trained again"
    for untouched in ("prepare", "train g0-p1-s1", "score g0-p1-s1 on unlabeled", "score g0-p1-s1 on test"):
        assert names[untouched] is True, f"{untouched} should come from the cache"
    # a dependent reruns exactly when an input it hashes changed; with a byte-identical retrained model the
    # whole chain would be cache hits, otherwise score p0 -> merge -> distill -> evaluate rerun
    model_changed = now["train p0"].outputs["model"] != model_deleted["victim"].out("model").sha256
    assert names["score g0-p0-s1 on unlabeled"] is (not model_changed)
    assert names["score g0-p0-s1 on test"] is (not model_changed)
    for stage in ("merge", "distill"):
        assert names[stage] is (now[stage].key in before), stage
    assert Path(model_deleted["result"].generations[0].trained[0].out("model").path).is_dir()


def test_deleting_one_model_gives_the_same_metrics(model_deleted, first):
    """CPU, fp32, explicit seeds: retraining reproduces the same model predictions and final metrics."""
    assert comparable_summary(model_deleted["summary"]) == comparable_summary(first["summary"])


# -- iPET ----------------------------------------------------------------------------------------------------------
def test_ipet_reuses_generation_zero_and_adds_one_generation(ipet):
    names = ipet["names"]
    for name in PET_STAGES - FINAL:
        assert names[name] is True, f"{name} is shared with the PET run"
    for name in ("ipet g1", "train g1-p0-s1", "train g1-p1-s1", "score g1-p0-s1 on unlabeled",
                 "score g1-p1-s1 on test", "score g1-p1-s1 on labeled", *FINAL):
        assert names[name] is False, name
    result = ipet["result"]
    assert [g.index for g in result.generations] == [0, 1]
    sets = next(r for r in result.records if r.stage == "ipet")
    t_rows = result.prepared.info["labeled"]["rows"]
    for i, trained in enumerate(result.generations[1].trained):
        assert trained.info["n_labeled"] == sets.info["sets"][i]["rows"] > t_rows
        assert trained.info["generation"] == 1


def test_ipet_summary_has_both_generations(ipet):
    summary = ipet["summary"]
    assert [g["generation"] for g in summary["generations"]] == [0, 1]
    assert sorted(summary["generations"][1]["models"]) == ["g1-p0-s1", "g1-p1-s1"]
    assert summary["generations"][1]["ensemble"]["n"] == 9
    assert summary["final"]["n"] == 9


def test_ipet_rerun_is_all_cached(ipet):
    result, names, _, _ = run_spied(ipet["config"])
    assert all(names.values())
    assert comparable_summary(result.summary(ipet["config"].task_spec(), ipet["config"])) == \
        comparable_summary(ipet["summary"])


def test_ipet_generations_default_from_labeled_size(config):
    """generations unset -> ceil(log_5(1000 / |T|)) generations after PET (|T| = 6 -> 4)."""
    from pet_core.config import IpetConfig

    assert IpetConfig().num_generations(6) == 4
    assert IpetConfig().num_generations(0) == 5 and IpetConfig(generations=1).num_generations(6) == 1


# -- what PET bought: baseline, ensemble and final classifier side by side ---------------------------------------
def test_final_classifier_on_t_is_reported_next_to_the_ensemble(first):
    result, summary = first["result"], first["summary"]
    rows = {r["split"]: r for r in summary["comparison"]["rows"]}
    assert set(rows) == {"T", "test"} and rows["T"]["baseline"] is None  # baseline off in this config
    assert rows["test"]["ensemble"] == summary["generations"][-1]["ensemble"]["accuracy"]
    assert rows["test"]["final"] == summary["final"]["accuracy"]
    on_t = next(r for r in result.records if r.stage == "evaluate"
                and r.key != result.evaluation.key)
    assert rows["T"]["final"] == on_t.info["accuracy"]
    gap = [s for s, r in rows.items() if r["final"] < r["ensemble"] - 0.02]
    assert len(summary["comparison"]["warnings"]) == len(gap)
    assert all(f"on {s}:" in w for s, w in zip(gap, summary["comparison"]["warnings"], strict=True))


def test_baseline_trains_only_the_supervised_classifier_on_top(first, config):
    result, names, _, _ = run_spied(config.with_updates({"baseline": True}))
    new = sorted(k for k, cached in names.items() if not cached)
    assert new == ["evaluate supervised on labeled", "evaluate supervised on test", "supervised"]
    rows = {r["split"]: r for r in result.comparison["rows"]}
    baseline = next(r for r in result.records if r.stage == "supervised")
    assert baseline.info["n_train"] == result.prepared.info["labeled"]["rows"]
    assert 0 <= rows["test"]["baseline"] <= 1 and 0 <= rows["T"]["baseline"] <= 1
    assert {k: rows[k]["final"] for k in rows} == {r["split"]: r["final"] for r in first["result"].comparison["rows"]}
