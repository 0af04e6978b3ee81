"""A plain-Python run of a whole RunConfig over the stages, for notebooks and benchmarks.

The Prefect flows wire the same stages with parallel task submission, UI artifacts and retries;
this runner does them in order in one process. Both share the store, so work done by one is
cached for the other.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from pet_core import stages
from pet_core.callbacks import Callback
from pet_core.metrics import comparison
from pet_core.plan import (
    comparison_evaluations, comparison_splits, generation_count, generation_jobs, model_grid, with_backbone,
    with_words,
)
from pet_core.run_config import RunConfig
from pet_core.spec import TaskSpec
from pet_core.store import ArtifactStore, Ref, StageRecord


@dataclass
class Generation:
    """The models of one generation: train records and logits on D (and on test, if any)."""

    index: int
    trained: list[StageRecord] = field(default_factory=list)
    unlabeled_logits: list[Ref] = field(default_factory=list)
    test_logits: list[Ref] = field(default_factory=list)

    @property
    def accuracies(self) -> list[float | None]:
        """Each model's accuracy on its training set before training: its ensemble weight."""
        return [t.info["pre_train_accuracy"] for t in self.trained]


@dataclass
class PipelineResult:
    """Everything a run produced, as store records and references."""

    prepared: StageRecord
    generations: list[Generation]
    soft_labels: StageRecord
    classifier: StageRecord
    evaluation: StageRecord | None
    records: list[StageRecord]
    wall_s: float
    comparison: dict[str, Any] = field(default_factory=dict)

    def summary(self, spec: TaskSpec, config: RunConfig) -> dict[str, Any]:
        """Per-generation model/ensemble test accuracy and the final classifier's metrics."""
        out: dict[str, Any] = {"final": None, "generations": [], "cached_stages": sum(r.cached for r in self.records),
                               "stages": len(self.records), "wall_s": self.wall_s}
        test = self.prepared.outputs.get("test")
        for gen in self.generations:
            entry: dict[str, Any] = {"generation": gen.index, "pre_train_accuracy": gen.accuracies}
            if test is not None:
                entry.update(stages.logits_metrics(spec, gen.test_logits, gen.accuracies, test, config.ensemble))
            out["generations"].append(entry)
        if self.evaluation is not None:
            out["final"] = stages.read_json_output(self.evaluation, "metrics")
        out["comparison"] = self.comparison
        return out


def run_generation(store: ArtifactStore, spec: TaskSpec, config: RunConfig, index: int, train_sets: list[Ref],
                   prepared: StageRecord, callbacks: list[Callback]) -> Generation:
    """Train, then score on D (and test), every model of one generation."""
    gen = Generation(index)
    unlabeled, test = prepared.out("unlabeled"), prepared.outputs.get("test")
    for job, train_set in zip(generation_jobs(config, index), train_sets, strict=True):
        trained = stages.train(store, spec, config.model, config.train, job.pattern, job.seed, index, train_set,
                               unlabeled, callbacks, kind=job.kind)
        gen.trained.append(trained)
        gen.unlabeled_logits.append(stages.score(store, spec, config.model, config.score, trained.out("model"),
                                                 unlabeled, callbacks).out("logits"))
        if test is not None:
            gen.test_logits.append(stages.score(store, spec, config.model, config.score, trained.out("model"),
                                                test, callbacks).out("logits"))
    return gen


def front(store: ArtifactStore, config: RunConfig,
          callbacks: list[Callback]) -> tuple[RunConfig, StageRecord, list[StageRecord]]:
    """prepare → [adapt] → [words]: the config the models train with (adapted backbone, searched label words),
    the prepare record and every record made."""
    spec = config.task_spec()
    prepared = stages.prepare(store, spec, config.data)
    records = [prepared]
    if config.adapt is not None:
        adapted = stages.adapt(store, config.model, config.adapt, prepared.out("unlabeled"), callbacks)
        records.append(adapted)
        config = with_backbone(config, adapted.out("backbone").path)
    if config.word_search_patterns():
        found = stages.label_words(store, spec, config.model, config.word_settings(), prepared.out("labeled"),
                                   config.word_search_patterns())
        records.append(found)
        config = with_words(config, stages.read_json_output(found, "words"))
    return config, prepared, records


def search_words(config: RunConfig) -> dict[str, Any]:
    """The words stage of ``config`` (after prepare and adapt), as ``petflow words`` shows it: ``words.json``."""
    if not config.word_search_patterns():
        raise ValueError("nothing to search: the run config has no words: section and no pattern has words: auto")
    _, _, records = front(ArtifactStore(config.store), config, [])
    return stages.read_json_output(records[-1], "words")


def run(config: RunConfig, callbacks: list[Callback] | None = None) -> PipelineResult:
    """Prepare → [adapt] → [words] → PET → [iPET generations] → merge → distill → evaluate."""
    started = time.perf_counter()
    callbacks = callbacks or []
    store = ArtifactStore(config.store)
    config, prepared, records = front(store, config, callbacks)
    spec = config.task_spec()
    labeled = prepared.out("labeled")
    grid = model_grid(config)
    generations = [run_generation(store, spec, config, 0, [labeled] * len(grid), prepared, callbacks)]
    for index in range(1, generation_count(config, prepared.info["labeled"]["rows"]) + 1):
        previous = generations[-1]
        sets = stages.next_generation(store, spec, config.ipet, labeled, prepared.out("unlabeled"),
                                      previous.unlabeled_logits, previous.accuracies, index, config.data.seed,
                                      config.ensemble.reduction)
        records.append(sets)
        train_sets = [sets.out(f"train_{i}") for i in range(len(grid))]
        generations.append(run_generation(store, spec, config, index, train_sets, prepared, callbacks))
    last = generations[-1]
    soft = stages.merge(store, spec, config.ensemble, last.unlabeled_logits, last.accuracies)
    classifier = stages.distill(store, spec, config.model, config.distill, prepared.out("unlabeled"),
                                soft.out("soft_labels"), labeled, seed=config.data.seed, callbacks=callbacks)
    evaluation = None
    if "test" in prepared.outputs:
        evaluation = stages.evaluate(store, spec, config.model, classifier.out("classifier"), prepared.out("test"),
                                     config.distill.eval_batch_size)
    for gen in generations:
        records.extend(gen.trained)
    records.extend([soft, classifier] + ([evaluation] if evaluation else []))
    result, compared = compare(store, spec, config, prepared, last, classifier, evaluation, callbacks)
    records.extend(compared)
    return PipelineResult(prepared, generations, soft, classifier, evaluation, records,
                          round(time.perf_counter() - started, 3), result)


def compare(store: ArtifactStore, spec: TaskSpec, config: RunConfig, prepared: StageRecord, last: Generation,
            classifier: StageRecord, evaluation: StageRecord | None,
            callbacks: list[Callback]) -> tuple[dict[str, Any], list[StageRecord]]:
    """Supervised baseline, ensemble and final classifier on T (and test): ``metrics.comparison``."""
    splits = comparison_splits(bool(prepared.info["labeled"]["rows"]), "test" in prepared.outputs)
    tables = {"T": prepared.outputs.get("labeled"), "test": prepared.outputs.get("test")}
    records: list[StageRecord] = []
    accuracy: dict[str, dict[str, float | None]] = {}
    for split in splits:
        logits = last.test_logits if split == "test" else [
            stages.score(store, spec, config.model, config.score, t.out("model"), tables[split],
                         callbacks).out("logits") for t in last.trained]
        accuracy[split] = {"ensemble": stages.logits_metrics(spec, logits, last.accuracies, tables[split],
                                                             config.ensemble)["ensemble"]["accuracy"]}
    if evaluation is not None:
        accuracy["test"]["final"] = evaluation.info["accuracy"]  # already evaluated by the pipeline
    jobs = comparison_evaluations(config, splits)
    classifiers = {"final": classifier}
    if any(system == "baseline" for system, _ in jobs):
        classifiers["baseline"] = stages.supervised(store, spec, config.model, config.distill, tables["T"],
                                                    config.data.seed, callbacks)
        records.append(classifiers["baseline"])
    for system, split in jobs:
        evaluated = stages.evaluate(store, spec, config.model, classifiers[system].out("classifier"), tables[split],
                                    config.distill.eval_batch_size)
        records.append(evaluated)
        accuracy[split][system] = evaluated.info["accuracy"]
    return comparison(accuracy), records
