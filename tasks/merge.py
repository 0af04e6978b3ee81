"""Task: the ensemble's soft labels on D (weighted mean of logits, softmax at T)."""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE

from pet_core import stages
from pet_core.config import EnsembleConfig
from pet_core.spec import TaskSpec
from tasks.common import RefDict, finish, open_store, to_ref


@task(name="merge", cache_policy=NO_CACHE, task_run_name="merge-g{generation}")
def merge(store: str, spec: TaskSpec, config: EnsembleConfig, logits: list[RefDict],
          accuracies: list[float | None], generation: int):
    """Outputs ``soft_labels``; info: rows and the predicted label counts."""
    artifacts = open_store(store)
    record = stages.merge(artifacts, spec, config, [to_ref(r) for r in logits], accuracies)
    return finish(artifacts, record, f"merge g{generation}", generation=generation, **record.info)
