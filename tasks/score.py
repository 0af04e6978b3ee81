"""Task: label logits of one trained PVP model on an example table (D or test)."""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE

from pet_core import stages
from pet_core.config import ModelConfig, ScoreConfig
from pet_core.spec import TaskSpec
from tasks.common import PrefectProgress, RefDict, finish, open_store, to_ref


@task(name="score", tags=["gpu"], cache_policy=NO_CACHE, task_run_name="score-{model_id}-{split}")
def score(store: str, spec: TaskSpec, model: ModelConfig, config: ScoreConfig, pvp_model: RefDict,
          examples: RefDict, model_id: str, split: str):
    """Outputs ``logits`` (Parquet); ``model_id``/``split`` only name the run."""
    artifacts = open_store(store)
    record = stages.score(artifacts, spec, model, config, to_ref(pvp_model), to_ref(examples),
                          callbacks=[PrefectProgress()])
    return finish(artifacts, record, f"score {model_id} on {split}", model_id=model_id, split=split,
                  rows=record.info.get("rows"))
