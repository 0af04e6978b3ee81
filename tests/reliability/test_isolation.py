"""Concurrent runs: three processes run ``pipeline.run`` at the same time on one store.

Two of them run the same config ("twin"), the third a different one (seed 2 instead of 1: it shares
``prepare`` with the twins and nothing else). Then:

* the different config finishes with its own, correct results (an in-process rerun is all cache hits
  and reproduces its summary), and shares exactly the equal stage;
* the same config twice at once leaves exactly one valid entry per stage and equal results.

The processes come from a forkserver that has torch/transformers/pet_core preloaded (importing them
costs more than the tiny runs themselves); each is a separate process with its own interpreter state.
"""

from __future__ import annotations

import multiprocessing
import os
from pathlib import Path

import pytest

from pet_core import pipeline
from pet_core.store import ArtifactStore

from reliability._children import pipeline_child
from _run_support import tiny_run_dict, write_yaml
from reliability._pipeline_support import comparable_summary, leftovers, read_result, store_entries

PRELOAD = ["reliability._children", "torch", "transformers", "transformers.models.bert.modeling_bert",
           "pet_core.pipeline", "pet_core.training", "pet_core.scoring", "pet_core.distill", "pet_core.ipet"]


def run_at_once(work: Path, configs: list[dict]) -> list[dict]:
    """One process per config, all started before any is awaited; their results in config order."""
    os.environ.setdefault("OMP_NUM_THREADS", "1")  # inherited by the forkserver
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(PRELOAD)
    paths = [write_yaml(c, work / f"run{i}.yaml") for i, c in enumerate(configs)]
    outs = [work / f"result{i}.json" for i in range(len(configs))]
    procs = [ctx.Process(target=pipeline_child, args=(str(p), str(o))) for p, o in zip(paths, outs, strict=True)]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(300)
    for proc in procs:
        if proc.exitcode is None:
            proc.kill()
            proc.join()
    assert [p.exitcode for p in procs] == [0] * len(procs), "a concurrent pipeline run failed (see stderr)"
    return [read_result(o) for o in outs]


def rerun_in_process(config_dict: dict) -> dict:
    from pet_core.run_config import RunConfig

    config = RunConfig.model_validate(config_dict)
    result = pipeline.run(config)
    assert all(r.cached for r in result.records), [(r.stage, r.cached) for r in result.records]
    return result.summary(config.task_spec(), config)


@pytest.fixture(scope="module")
def concurrent(tmp_path_factory, topic_data, tiny_mlm_dir):
    work = tmp_path_factory.mktemp("isolation")
    store = work / "store"
    twin = tiny_run_dict(topic_data, Path(tiny_mlm_dir), store, name="twin", seeds=[1])
    other = tiny_run_dict(topic_data, Path(tiny_mlm_dir), store, name="other", seeds=[2])
    twin_a, twin_b, different = run_at_once(work, [twin, twin, other])
    return {"store": store, "twin": twin, "other": other, "twin_a": twin_a, "twin_b": twin_b,
            "different": different}


def test_every_run_finished_with_its_own_models(concurrent):
    for name, seed in (("twin_a", 1), ("twin_b", 1), ("different", 2)):
        summary = concurrent[name]["summary"]
        assert summary["final"]["n"] == 9, name
        (gen,) = summary["generations"]
        assert sorted(gen["models"]) == [f"g0-p0-s{seed}", f"g0-p1-s{seed}"], name


def test_one_valid_entry_per_stage_and_no_leftovers(concurrent):
    """Twins: 1 prepare, 2 train, 6 score (D, test, T), 1 merge/distill, 2 evaluate (test, T); the other config
    adds its own, minus prepare."""
    store = concurrent["store"]
    assert {k: len(v) for k, v in store_entries(store).items()} == {
        "prepare": 1, "train": 4, "score": 12, "merge": 2, "distill": 2, "evaluate": 4}
    assert leftovers(store) == [], "temp directories of the losing writers must be cleaned up"
    opened = ArtifactStore(store)
    for stage, keys in store_entries(store).items():
        for key in keys:
            assert opened.lookup(stage, key) is not None, f"{stage}/{key[:12]} is not a valid entry"


def test_same_config_twice_at_once_equal_results(concurrent):
    a, b = concurrent["twin_a"], concurrent["twin_b"]
    assert [(r["stage"], r["key"]) for r in a["records"]] == [(r["stage"], r["key"]) for r in b["records"]]
    assert comparable_summary(a["summary"]) == comparable_summary(b["summary"])


def test_different_config_shares_only_the_equal_stage(concurrent):
    twin = {(r["stage"], r["key"]) for r in concurrent["twin_a"]["records"]}
    other = {(r["stage"], r["key"]) for r in concurrent["different"]["records"]}
    assert {stage for stage, _ in twin & other} == {"prepare"}
    models = [set(concurrent[n]["summary"]["generations"][0]["models"]) for n in ("twin_a", "different")]
    assert not models[0] & models[1]


def test_results_are_what_the_store_holds(concurrent):
    """Rerunning each config here is all cache hits and reproduces the concurrent runs' summaries."""
    assert comparable_summary(rerun_in_process(concurrent["twin"])) == comparable_summary(
        concurrent["twin_a"]["summary"])
    assert comparable_summary(rerun_in_process(concurrent["other"])) == comparable_summary(
        concurrent["different"]["summary"])
