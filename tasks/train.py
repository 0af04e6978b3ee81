"""Task: train one PVP model (pattern × seed × generation)."""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE

from pet_core import stages
from pet_core.config import ModelConfig, TrainConfig
from pet_core.kinds import KindConfig
from pet_core.spec import TaskSpec
from tasks.common import PrefectProgress, RefDict, finish, open_store, to_ref

INFO = ("model_id", "n_labeled", "pre_train_accuracy", "post_train_accuracy", "steps", "final_loss")


@task(name="train", tags=["gpu"], cache_policy=NO_CACHE, task_run_name="train-g{generation}-p{pattern}-s{seed}")
def train(store: str, spec: TaskSpec, model: ModelConfig, config: TrainConfig, pattern: int, seed: int,
          generation: int, labeled: RefDict, unlabeled: RefDict | None, kind: KindConfig | None = None):
    """Outputs ``model``; info: the model id and its accuracy on its training set before/after training."""
    artifacts = open_store(store)
    record = stages.train(artifacts, spec, model, config, pattern, seed, generation, to_ref(labeled),
                          to_ref(unlabeled), callbacks=[PrefectProgress()], kind=kind)
    return finish(artifacts, record, f"train {record.info['model_id']}", pattern=pattern, seed=seed,
                  generation=generation, torch_seed=record.info.get("seed"), **{k: record.info.get(k) for k in INFO})
