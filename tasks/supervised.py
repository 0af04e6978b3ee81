"""Task: the supervised baseline (same classifier, T's hard labels only), reported beside PET (``baseline``)."""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE

from pet_core import stages
from pet_core.config import DistillConfig, ModelConfig
from pet_core.spec import TaskSpec
from tasks.common import PrefectProgress, RefDict, finish, open_store, to_ref


@task(name="supervised", tags=["gpu"], cache_policy=NO_CACHE)
def supervised(store: str, spec: TaskSpec, model: ModelConfig, config: DistillConfig, labeled: RefDict,
               seed: int = 0):
    """Outputs ``classifier`` trained on T alone."""
    artifacts = open_store(store)
    record = stages.supervised(artifacts, spec, model, config, to_ref(labeled), seed, callbacks=[PrefectProgress()])
    return finish(artifacts, record, "supervised", steps=record.info.get("steps"),
                  final_loss=record.info.get("final_loss"), n_train=record.info.get("n_train"))
