"""Task: iPET's new training sets, one per model of the previous generation."""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE

from pet_core import stages
from pet_core.config import IpetConfig, Reduction
from pet_core.spec import TaskSpec
from tasks.common import RefDict, finish, open_store, to_ref


@task(name="next-generation", cache_policy=NO_CACHE, task_run_name="next-generation-g{generation}")
def next_generation(store: str, spec: TaskSpec, config: IpetConfig, labeled: RefDict, unlabeled: RefDict,
                    logits: list[RefDict], accuracies: list[float | None], generation: int, seed: int,
                    reduction: Reduction = Reduction.wmean):
    """Outputs ``train_<i>`` for model i of generation-1; info ``sets``: sizes, labellers, shortfall."""
    artifacts = open_store(store)
    record = stages.next_generation(artifacts, spec, config, to_ref(labeled), to_ref(unlabeled),
                                    [to_ref(r) for r in logits], accuracies, generation, seed, reduction)
    return finish(artifacts, record, f"next generation g{generation}", **record.info)
