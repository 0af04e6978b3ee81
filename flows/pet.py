"""The PET flow: one generation of PVP models (pattern × seed), trained in parallel, each scored on D and test."""

from __future__ import annotations

import os
from typing import Any

from prefect import flow
from prefect.context import FlowRunContext
from prefect.futures import as_completed
from prefect.task_runners import ProcessPoolTaskRunner, TaskRunner, ThreadPoolTaskRunner

from pet_core.plan import ModelJob, generation_jobs
from pet_core.run_config import RunConfig
from tasks.common import RefDict, StageResult
from tasks.evaluate import ensemble_accuracy
from tasks.report import report_generation
from tasks.results import GenerationResult, TrainedModel
from tasks.score import score
from tasks.train import train

WORKERS_ENV = "PETFLOW_WORKERS"


def task_runner() -> TaskRunner:
    """The runner of model stages: ``$PETFLOW_WORKERS`` at a time, 1 by default.

    On CPU one worker is right: torch already uses every core. With GPUs, raise it (e.g. to the number of
    GPUs) and cap GPU use with a tag concurrency limit: ``prefect concurrency-limit create gpu <n>``.
    More than one worker means a pool of processes, not threads: loading Hugging Face models from several
    threads at once is not thread-safe (seen: spurious "missing MLM head" errors) and concurrent threads
    would share torch's global RNG. Each worker process pays the torch/transformers import once.
    """
    workers = max(1, int(os.environ.get(WORKERS_ENV, "1")))
    if workers == 1:
        return ThreadPoolTaskRunner(max_workers=1)
    context = FlowRunContext.get()
    if not os.environ.get("PREFECT_API_URL") and context is not None and context.client is not None:
        # Ephemeral mode: worker processes must report to this process's temporary server, not start their own.
        os.environ["PREFECT_API_URL"] = str(context.client.api_url)
    return ProcessPoolTaskRunner(max_workers=workers)


def train_and_score(config: RunConfig, data: dict[str, RefDict], jobs: list[ModelJob],
                    train_sets: list[RefDict]) -> tuple[list[TrainedModel], list[StageResult]]:
    """Train one model per job of the plan on its training set; score each on D and test.

    Returns the models in job order (the order of every logits list downstream) and all stage results.
    """
    spec, model, store = config.task_spec(), config.model, config.store
    trainings = {train.submit(store, spec, model, config.train, job.pattern, job.seed, job.generation, labeled,
                              data["unlabeled"], kind=job.kind): i
                 for i, (job, labeled) in enumerate(zip(jobs, train_sets, strict=True))}
    scorings: dict[int, dict[str, Any]] = {}
    trained: dict[int, StageResult] = {}
    for future in as_completed(list(trainings)):
        i, result = trainings[future], future.result()
        trained[i] = result
        mid = result["info"]["model_id"]
        scorings[i] = {split: score.submit(store, spec, model, config.score, result["outputs"]["model"],
                                           data[table], mid, split)
                       for split, table in (("D", "unlabeled"), ("test", "test")) if table in data}
    models, results = [], []
    for i in range(len(jobs)):
        scored = {split: f.result() for split, f in scorings[i].items()}
        info, job = trained[i]["info"], jobs[i]
        models.append(TrainedModel(
            model_id=info["model_id"], kind=job.kind.kind, pattern=job.pattern, seed=job.seed,
            generation=job.generation, n_labeled=info["n_labeled"], pre_train_accuracy=info["pre_train_accuracy"],
            post_train_accuracy=info["post_train_accuracy"], model=trained[i]["outputs"]["model"],
            cached=trained[i]["cached"], unlabeled_logits=scored["D"]["outputs"]["logits"],
            test_logits=scored["test"]["outputs"]["logits"] if "test" in scored else None))
        results += [trained[i], *scored.values()]
    return models, results


def finish_generation(config: RunConfig, data: dict[str, RefDict], generation: int, models: list[TrainedModel],
                      results: list[StageResult], sets: StageResult | None = None) -> GenerationResult:
    """Test accuracy of the generation's models and ensemble (if there is a test set) and its UI table."""
    test = None
    if "test" in data:
        test = ensemble_accuracy.submit(config.task_spec(), config.ensemble, [m.test_logits for m in models],
                                        [m.pre_train_accuracy for m in models], data["test"], generation).result()
    result = GenerationResult(generation=generation, models=models, test=test, sets=sets, stages=results)
    report_generation.submit(config.name, result).result()
    return result


@flow(name="pet", task_runner=ThreadPoolTaskRunner(max_workers=1))
def pet_flow(config: RunConfig, data: dict[str, RefDict]) -> GenerationResult:
    """Generation 0: every pattern × seed model trained on T, scored on D (and test).

    ``data`` holds the refs of ``labeled``, ``unlabeled`` and optionally ``test`` from the prepare stage.
    Returns the generation's result; its ``models`` in (pattern, seed) order.
    """
    jobs = generation_jobs(config, 0)
    models, results = train_and_score(config, data, jobs, [data["labeled"]] * len(jobs))
    return finish_generation(config, data, 0, models, results)
