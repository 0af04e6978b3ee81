"""The run as data: which models each generation trains, how many generations there are, and on which
backbone. ``pet_core.pipeline.run`` and the Prefect flows both walk this plan, so these decisions are
written once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pet_core.kinds.registry import KindConfig
from pet_core.run_config import RunConfig
from pet_core.spec import TaskSpec


def model_id(pattern: int, seed: int, generation: int = 0) -> str:
    """The id naming a model in every artifact."""
    return f"g{generation}-p{pattern}-s{seed}"


@dataclass(frozen=True)
class ModelJob:
    """One pattern model of a generation: its pattern, seed and kind."""

    pattern: int
    seed: int
    generation: int
    kind: KindConfig

    @property
    def model_id(self) -> str:
        """``g<generation>-p<pattern>-s<seed>``."""
        return model_id(self.pattern, self.seed, self.generation)


def model_grid(config: RunConfig) -> list[tuple[int, int]]:
    """(pattern, seed) of every model of a generation, in a fixed order (the order of every logits list)."""
    return [(p, s) for p in config.pattern_ids() for s in config.seeds]


def generation_jobs(config: RunConfig, generation: int) -> list[ModelJob]:
    """The models of one generation; model i of generation j > 0 trains on the set ``train_<i>`` built from
    generation j - 1."""
    return [ModelJob(p, s, generation, config.kind_for(p)) for p, s in model_grid(config)]


def generation_count(config: RunConfig, n_labeled: int) -> int:
    """iPET generations after generation 0, for |T| = ``n_labeled`` as drawn (0 without ``ipet:``)."""
    return config.ipet.num_generations(n_labeled) if config.ipet is not None else 0


def comparison_splits(has_labeled: bool, has_test: bool) -> list[str]:
    """The splits the final classifier is compared on: T (none in zero-shot runs) and test, if any."""
    return (["T"] if has_labeled else []) + (["test"] if has_test else [])


def comparison_evaluations(config: RunConfig, splits: list[str]) -> list[tuple[str, str]]:
    """(system, split) evaluations the comparison adds to the pipeline's own: the final classifier on T (the
    pipeline evaluates it on test), and the supervised baseline (trained only when there is a T) on every split."""
    jobs = [("final", "T")] if "T" in splits else []
    if config.baseline and "T" in splits:
        jobs += [("baseline", split) for split in splits]
    return jobs


def with_backbone(config: RunConfig, backbone: str) -> RunConfig:
    """The config whose later stages use ``backbone`` (the adapted one after the adapt stage)."""
    return config.model_copy(update={"model": config.model.model_copy(update={"backbone": backbone})})


def searched_spec(spec: TaskSpec, words: dict[str, Any]) -> TaskSpec:
    """``spec`` with each searched pattern's own verbalizer set to its best pairing (``words``: the words stage's
    ``words.json``, pattern id -> ``label_search.SearchResult`` dict, best pairing first); validated again."""
    data = spec.model_dump(mode="json")
    for pattern, result in words.items():
        best = result["pairings"][0]["words"]
        data["patterns"][int(pattern)]["verbalizer"] = {label: [word] for label, word in best.items()}
        data["patterns"][int(pattern)]["words"] = None  # found: no longer to search
    return TaskSpec.model_validate(data)


def with_words(config: RunConfig, words: dict[str, Any]) -> RunConfig:
    """The config whose task spec uses the searched label words (the keys of every model stage hash the spec,
    so models trained with them are told apart from the hand-picked ones)."""
    return config.model_copy(update={"task": searched_spec(config.task_spec(), words)})
