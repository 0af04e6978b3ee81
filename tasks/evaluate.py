"""Tasks: metrics of the final classifier on test, and of the PVP models and their ensemble on test."""

from __future__ import annotations

from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from pet_core import stages
from pet_core.artifacts import read_json
from pet_core.config import EnsembleConfig, ModelConfig
from pet_core.spec import TaskSpec
from tasks.common import RefDict, finish, open_store, to_ref


@task(name="evaluate", tags=["gpu"], cache_policy=NO_CACHE, task_run_name="{name}")
def evaluate(store: str, spec: TaskSpec, model: ModelConfig, classifier: RefDict, test: RefDict,
             batch_size: int = 64, name: str = "evaluate"):
    """Outputs ``metrics`` (JSON) and ``predictions`` (Parquet); info: the full metrics dict."""
    artifacts = open_store(store)
    record = stages.evaluate(artifacts, spec, model, to_ref(classifier), to_ref(test), batch_size)
    return finish(artifacts, record, name, **read_json(record.outputs["metrics"].path))


@task(name="ensemble-accuracy", cache_policy=NO_CACHE, task_run_name="ensemble-accuracy-g{generation}")
def ensemble_accuracy(spec: TaskSpec, config: EnsembleConfig, logits: list[RefDict], accuracies: list[float | None],
                  test: RefDict, generation: int) -> dict[str, Any]:
    """Accuracy of each model and of their ensemble on test (cheap; no store entry)."""
    return stages.logits_metrics(spec, [to_ref(r) for r in logits], accuracies, to_ref(test), config)
