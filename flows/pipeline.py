"""The whole run as one flow-run tree: validate → prepare → [adapt] → [words] → PET → [iPET] → merge → distill →
evaluate.

Every stage is a task over the pet_core store, so rerunning a config (or one sharing stages with it)
takes finished stages from the store and shows them as ``Cached``. Subflows are plain calls.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger
from prefect.runtime import flow_run

from flows.ipet import ipet_flow
from flows.leases import lease, reap
from flows.pet import pet_flow, task_runner
from pet_core.metrics import comparison
from pet_core.artifacts import read_json
from pet_core.plan import comparison_evaluations, comparison_splits, with_backbone, with_words
from pet_core.run_config import RunConfig
from tasks.common import RefDict, StageResult
from tasks.adapt import adapt
from tasks.distill import distill
from tasks.evaluate import ensemble_accuracy, evaluate
from tasks.merge import merge
from tasks.prepare import prepare
from tasks.report import report_data, write_run
from tasks.results import GenerationResult
from tasks.score import score
from tasks.supervised import supervised
from tasks.validate import load_config, validate
from tasks.words import label_words


@flow(name="petflow")
def pipeline(config_path: str, overrides: dict[str, Any] | None = None, checked: bool = False) -> dict[str, Any]:
    """Run the config at ``config_path`` (``overrides``: dotted keys, e.g. {"train.max_steps": 10}).

    ``checked``: the caller has just run the same checks (``petflow run`` does, before Prefect starts), so
    the validate task is skipped; deployments and other callers leave it False.

    Returns {run_dir, metrics}; the run directory holds manifest.json, metrics.json and report.md.
    """
    started = time.time()
    config = load_config(config_path, overrides)
    runs_dir = Path(config.runs_dir).expanduser().resolve()
    try:
        crashed = reap(runs_dir)
    except Exception as err:  # noqa: BLE001 - housekeeping must not stop a run
        get_run_logger().warning(f"could not check {runs_dir} for runs that died: {err}")
    else:
        for name in crashed:
            get_run_logger().warning(f"flow run {name!r} had died without a word (killed?): marked it Crashed")
    with lease(runs_dir, flow_run.get_id()):
        return run_pipeline(config, checked, started)


def run_pipeline(config: RunConfig, checked: bool, started: float) -> dict[str, Any]:
    """The body of ``pipeline`` (while this flow run holds its lease)."""
    digest = config.digest()
    if not checked:
        validate.submit(config).result()
    spec = config.task_spec()
    config = config.model_copy(update={"task": spec, "store": str(Path(config.store).expanduser().resolve())})
    store = config.store
    prepared = prepare.submit(store, spec, config.data).result()
    report_data.submit(config.name, prepared).result()
    data = prepared["outputs"]
    stages = [prepared]
    if config.adapt is not None:
        adapted = adapt.submit(store, config.model, config.adapt, data["unlabeled"]).result()
        stages.append(adapted)
        config = with_backbone(config, adapted["outputs"]["backbone"]["path"])
    if config.word_search_patterns():
        found = label_words.submit(config.name, store, spec, config.model, config.word_settings(), data["labeled"],
                                   config.word_search_patterns()).result()
        stages.append(found)
        config = with_words(config, read_json(found["outputs"]["words"]["path"]))
        spec = config.task_spec()
    generations = [pet_flow.with_options(task_runner=task_runner())(config, data)]
    if config.ipet is not None:
        generations += ipet_flow.with_options(task_runner=task_runner())(config, data, generations[0],
                                                                         prepared["info"]["labeled"]["rows"])
    for generation in generations:
        stages += generation.stages
    last = generations[-1].models
    merged = merge.submit(store, spec, config.ensemble, [m.unlabeled_logits for m in last],
                          [m.pre_train_accuracy for m in last], generations[-1].generation).result()
    distilled = distill.submit(store, spec, config.model, config.distill, data["unlabeled"],
                               merged["outputs"]["soft_labels"], data["labeled"], config.data.seed).result()
    stages += [merged, distilled]
    evaluation = None
    if "test" in data:
        evaluation = evaluate.submit(store, spec, config.model, distilled["outputs"]["classifier"], data["test"],
                                     config.distill.eval_batch_size).result()
        stages.append(evaluation)
    compared, compare_stages = compare(config, data, generations[-1], distilled, evaluation)
    stages += compare_stages
    return write_run.submit(config, digest, stages, prepared, generations, merged, distilled, evaluation,
                            started, compared).result()


def compare(config: RunConfig, data: dict[str, RefDict], last: GenerationResult, distilled: StageResult,
            evaluation: StageResult | None) -> tuple[dict[str, Any], list[StageResult]]:
    """Supervised baseline, ensemble and final classifier on T (and test): ``pet_core.metrics.comparison``.

    One task at a time: this flow's runner is a thread pool, and loading Hugging Face models from several
    threads at once is not thread-safe (see flows.pet.task_runner).
    """
    spec, store, models = config.task_spec(), config.store, last.models
    splits = comparison_splits(bool(data_rows(data["labeled"])), last.test is not None)
    accuracy: dict[str, dict[str, float | None]] = {}
    results: list[StageResult] = []
    if "T" in splits:
        results = [score.submit(store, spec, config.model, config.score, m.model, data["labeled"], m.model_id,
                                "T").result() for m in models]
        ensemble_t = ensemble_accuracy.submit(spec, config.ensemble, [r["outputs"]["logits"] for r in results],
                                              [m.pre_train_accuracy for m in models], data["labeled"],
                                              last.generation).result()
        accuracy["T"] = {"ensemble": ensemble_t["ensemble"]["accuracy"]}
    if "test" in splits:
        accuracy["test"] = {"ensemble": last.test["ensemble"]["accuracy"]}
        if evaluation is not None:
            accuracy["test"]["final"] = evaluation["info"]["accuracy"]
    jobs = comparison_evaluations(config, splits)
    classifiers = {"final": distilled}
    if any(system == "baseline" for system, _ in jobs):
        classifiers["baseline"] = supervised.submit(store, spec, config.model, config.distill, data["labeled"],
                                                    config.data.seed).result()
        results.append(classifiers["baseline"])
    for system, split in jobs:
        result = evaluate.submit(store, spec, config.model, classifiers[system]["outputs"]["classifier"],
                                 data["labeled" if split == "T" else "test"], config.distill.eval_batch_size,
                                 f"evaluate {system} on {split}").result()
        results.append(result)
        accuracy[split][system] = result["info"]["accuracy"]
    return comparison(accuracy), results


def data_rows(ref: RefDict) -> int:
    """Rows of a Parquet table from its metadata (no data read)."""
    import pyarrow.parquet as pq

    return pq.ParquetFile(ref["path"]).metadata.num_rows

if __name__ == "__main__":
    import sys

    import yaml

    pipeline(sys.argv[1], {k: yaml.safe_load(v) for k, v in (a.split("=", 1) for a in sys.argv[2:])} or None)
