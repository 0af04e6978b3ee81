"""Task: distil the ensemble's soft labels on D into one sequence classifier."""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE

from pet_core import stages
from pet_core.config import DistillConfig, ModelConfig
from pet_core.spec import TaskSpec
from tasks.common import PrefectProgress, RefDict, finish, open_store, to_ref


@task(name="distill", tags=["gpu"], cache_policy=NO_CACHE)
def distill(store: str, spec: TaskSpec, model: ModelConfig, config: DistillConfig, unlabeled: RefDict,
            soft_labels: RefDict, labeled: RefDict | None = None, seed: int = 0):
    """Outputs ``classifier`` (a save_pretrained directory)."""
    artifacts = open_store(store)
    record = stages.distill(artifacts, spec, model, config, to_ref(unlabeled), to_ref(soft_labels),
                            to_ref(labeled), seed, callbacks=[PrefectProgress()])
    return finish(artifacts, record, "distill", steps=record.info.get("steps"),
                  final_loss=record.info.get("final_loss"), n_train=record.info.get("n_train"))
