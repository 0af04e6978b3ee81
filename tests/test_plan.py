"""pet_core.plan: the model grid, the generation count and the backbone swap, decided once for both runners."""

from __future__ import annotations

from pet_core.kinds.cloze.config import ClozeConfig
from pet_core.plan import (
    ModelJob, comparison_evaluations, comparison_splits, generation_count, generation_jobs, model_grid, with_backbone,
)
from pet_core.run_config import RunConfig
from tests._petcore_support import SENTIMENT_SPEC

BASE = {"task": SENTIMENT_SPEC, "data": {"pool": {"path": "/data/pool.csv"}}, "model": {"backbone": "org/mlm"}}


def test_jobs_follow_patterns_then_seeds_and_carry_each_patterns_kind():
    config = RunConfig.model_validate({**BASE, "patterns": [{"pattern": 1, "kind": "cloze"}, 0], "seeds": [7, 3]})
    assert model_grid(config) == [(1, 7), (1, 3), (0, 7), (0, 3)]
    jobs = generation_jobs(config, 2)
    assert [(j.pattern, j.seed, j.generation) for j in jobs] == [(1, 7, 2), (1, 3, 2), (0, 7, 2), (0, 3, 2)]
    assert all(j.kind == ClozeConfig() for j in jobs)
    assert jobs[0].model_id == "g2-p1-s7" == ModelJob(1, 7, 2, ClozeConfig()).model_id


def test_generation_count_uses_t_as_drawn_and_is_zero_without_ipet():
    assert generation_count(RunConfig.model_validate(BASE), 10) == 0
    config = RunConfig.model_validate({**BASE, "ipet": {}})
    assert generation_count(config, 10) == 3  # ceil(log_5(1000 / 10))
    assert generation_count(config, 40) == 2  # per_label draws: the count follows |T|, not data.n_labeled
    assert generation_count(RunConfig.model_validate({**BASE, "ipet": {"generations": 1}}), 10) == 1


def test_with_backbone_changes_only_the_backbone():
    config = RunConfig.model_validate(BASE)
    swapped = with_backbone(config, "/store/adapt/abc/backbone")
    assert swapped.model.backbone == "/store/adapt/abc/backbone"
    assert swapped.model.model_copy(update={"backbone": "org/mlm"}) == config.model and swapped.train == config.train


def test_the_comparison_evaluates_final_on_t_and_the_baseline_on_every_split_it_has():
    with_baseline, without = RunConfig.model_validate(BASE), RunConfig.model_validate({**BASE, "baseline": False})
    assert comparison_splits(True, True) == ["T", "test"] and comparison_splits(False, True) == ["test"]
    assert comparison_evaluations(with_baseline, ["T", "test"]) == [("final", "T"), ("baseline", "T"),
                                                                    ("baseline", "test")]
    assert comparison_evaluations(without, ["T", "test"]) == [("final", "T")]
    assert comparison_evaluations(with_baseline, ["test"]) == [], "zero-shot runs have no T to train a baseline on"
