"""Task: continued masked-LM training of the backbone on D (learns a missing MLM head)."""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE

from pet_core import stages
from pet_core.config import AdaptConfig, ModelConfig
from tasks.common import PrefectProgress, RefDict, finish, open_store, to_ref


@task(name="adapt", tags=["gpu"], cache_policy=NO_CACHE)
def adapt(store: str, model: ModelConfig, config: AdaptConfig, unlabeled: RefDict):
    """Outputs ``backbone`` (a save_pretrained directory to use as ``model.backbone`` downstream)."""
    artifacts = open_store(store)
    record = stages.adapt(artifacts, model, config, to_ref(unlabeled), callbacks=[PrefectProgress()])
    return finish(artifacts, record, "adapt", steps=record.info.get("steps"),
                  final_loss=record.info.get("final_loss"), texts=record.info.get("texts"))
