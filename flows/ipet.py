"""The iPET flow: generations 1..k, each model retrained on T plus examples labelled by the others."""

from __future__ import annotations

from prefect import flow
from prefect.task_runners import ThreadPoolTaskRunner

from flows.pet import finish_generation, train_and_score
from pet_core.plan import generation_count, generation_jobs
from pet_core.run_config import RunConfig
from tasks.common import RefDict
from tasks.next_generation import next_generation
from tasks.results import GenerationResult


@flow(name="ipet", task_runner=ThreadPoolTaskRunner(max_workers=1))
def ipet_flow(config: RunConfig, data: dict[str, RefDict], previous: GenerationResult,
              n_labeled: int) -> list[GenerationResult]:
    """Run generations 1..k after ``previous`` (generation 0 from ``pet_flow``); returns each generation's result.

    ``n_labeled``: |T| as drawn (the prepare stage's count; ``per_label`` multiplies ``data.n_labeled``).
    Model i of generation j keeps the pattern and seed of model i of generation j-1 and trains on the
    set ``train_<i>`` built from the other models' logits on D.
    """
    if config.ipet is None:
        raise ValueError("ipet_flow needs an `ipet:` section in the run config")
    generations = []
    for generation in range(1, generation_count(config, n_labeled) + 1):
        models = previous.models
        sets = next_generation.submit(config.store, config.task_spec(), config.ipet, data["labeled"],
                                      data["unlabeled"], [m.unlabeled_logits for m in models],
                                      [m.pre_train_accuracy for m in models], generation,
                                      config.data.seed, config.ensemble.reduction).result()
        jobs = generation_jobs(config, generation)
        trained, results = train_and_score(config, data, jobs,
                                           [sets["outputs"][f"train_{i}"] for i in range(len(jobs))])
        previous = finish_generation(config, data, generation, trained, [sets, *results], sets)
        generations.append(previous)
    return generations
