"""Report tasks: UI artifacts (tables, markdown, links) and the run directory (manifest, metrics, report).

The run directory ``<runs_dir>/<name>-<digest>/`` is a readable index over the store: ``manifest.json``
(every stage's record ref and cached flag), ``metrics.json`` (no timings: equal for equal work),
``report.md`` and ``links/`` (symlinks to the main artifacts). Writes are atomic.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from prefect import task
from prefect.artifacts import MarkdownArtifact, TableArtifact
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run

from pet_core.artifacts import atomic_path, write_json
from pet_core.metrics import comparison_markdown, confusion_markdown
from pet_core.run_config import RunConfig
from pet_core.store import code_version
from tasks.common import StageResult, logger, publish, slug
from tasks.results import GenerationResult


def _fmt(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.3f}"
    if isinstance(value, dict):
        return ", ".join(f"{k}: {v}" for k, v in value.items()) or "–"
    if isinstance(value, list):
        return ", ".join(str(v) for v in value) or "–"
    return str(value)


def _table_md(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "_(none)_"
    head = list(rows[0])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(_fmt(row.get(k)) for k in head) + " |" for row in rows]
    return "\n".join(lines)


def files_markdown(run: str, files: dict[str, dict[str, str]]) -> str:
    """Where a run's files are, as paths to copy: a browser does not follow ``file://`` links from the UI's
    http page, and serving the store from the (unauthenticated) API server would expose it."""
    lines = [f"# Files of `{run}`", "", "| file | path | sha256 |", "|---|---|---|"]
    lines += [f"| {name} | `{ref['path']}` | `{ref['sha256'][:12]}` |" for name, ref in files.items()]
    first = next((ref["path"] for ref in files.values() if ref["path"].endswith(".parquet")), None)
    if first:
        lines += ["", "Read a table with pandas:", "", "```python", "import pandas as pd",
                  f"pd.read_parquet({first!r})", "```"]
    return "\n".join(lines) + "\n"


@task(name="report-data", cache_policy=NO_CACHE)
def report_data(run: str, prepared: StageResult) -> None:
    """Table of T, D and test sizes and label distributions; links to their Parquet files."""
    rows = [{"split": split, "rows": info["rows"], **{f"label {k}": v for k, v in info["labels"].items()}}
            for split, info in prepared["info"].items()]
    publish(TableArtifact, key=f"{slug(run)}-data", table=rows, description=f"{run}: T (labeled), D, test")
    files = {f"{name}.parquet": ref for name, ref in prepared["outputs"].items()}
    publish(MarkdownArtifact, key=f"{slug(run)}-data-files", markdown=files_markdown(run, files),
            description=f"{run}: where T, D and test are (paths to copy)")


def generation_rows(generation: GenerationResult) -> list[dict[str, Any]]:
    """One row per model (accuracy on its training set before/after training, on test) plus the ensemble."""
    test = generation.test or {}
    rows = [{"model": m.model_id, "kind": m.kind, "pattern": m.pattern, "seed": m.seed, "train rows": m.n_labeled,
             "acc train before": m.pre_train_accuracy, "acc train after": m.post_train_accuracy,
             "acc test": (test.get("models") or {}).get(m.model_id), "cached": m.cached}
            for m in generation.models]
    if test:
        rows.append({"model": "ensemble", "kind": None, "pattern": None, "seed": None, "train rows": None,
                     "acc train before": None, "acc train after": None,
                     "acc test": test["ensemble"]["accuracy"], "cached": None})
    return rows


def set_rows(sets: StageResult) -> list[dict[str, Any]]:
    """One row per new iPET training set: size, labellers, requested/added per label, shortfall."""
    return [{"set": f"train_{i}", "rows": s["rows"], "labellers": ", ".join(s["labellers"]),
             "requested": _fmt(s["requested"]), "added": _fmt(s["added"]), "shortfall": _fmt(s["shortfall"])}
            for i, s in enumerate(sets["info"]["sets"])]


def word_rows(found: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per searched pattern (the words stage's ``info["patterns"]``): its word per label and the
    pairing's cross-validated accuracy and accuracy on T."""
    return [{"pattern": int(p), **{f"word {label}": word for label, word in entry["words"].items()},
             "cv accuracy": entry["cv_accuracy"], "accuracy on T": entry["train_accuracy"], "folds": entry["folds"]}
            for p, entry in sorted(found.items(), key=lambda item: int(item[0]))]


@task(name="report-generation", cache_policy=NO_CACHE, task_run_name="report-g{result.generation}")
def report_generation(run: str, result: GenerationResult) -> None:
    """Per-model table of one generation (and, for iPET, its training sets' sizes and labels)."""
    generation = result.generation
    publish(TableArtifact, key=f"{slug(run)}-g{generation}-models", table=generation_rows(result),
            description=f"{run}: generation {generation} models (accuracy on train set and test)")
    if result.sets is not None:
        publish(TableArtifact, key=f"{slug(run)}-g{generation}-sets", table=set_rows(result.sets),
                description=f"{run}: iPET generation {generation} training sets")


def build_metrics(config: RunConfig, digest: str, prepared: StageResult, generations: list[GenerationResult],
                  merged: StageResult, distilled: StageResult, evaluation: StageResult | None,
                  compared: dict[str, Any] | None = None, words: StageResult | None = None) -> dict[str, Any]:
    """Everything measured, without timings (two runs of the same work give equal files)."""
    return {
        "name": config.name, "digest": digest,
        "data": prepared["info"],
        **({"words": words["info"]["patterns"]} if words else {}),
        "generations": [{"generation": g.generation,
                         "models": {m.model_id: m.model_dump(include={"pattern", "seed", "n_labeled", "kind",
                                                                      "pre_train_accuracy", "post_train_accuracy"})
                                    | {"test_accuracy": ((g.test or {}).get("models") or {}).get(m.model_id)}
                                    for m in g.models},
                         "ensemble_test": ({k: g.test["ensemble"][k] for k in ("accuracy", "macro_f1")}
                                           if g.test else None),
                         "sets": g.sets["info"]["sets"] if g.sets else None} for g in generations],
        "soft_labels": {k: merged["info"].get(k) for k in ("rows", "predicted")},
        "distill": {k: distilled["info"].get(k) for k in ("steps", "n_train", "final_loss", "agreement")},
        "test": evaluation["info"] if evaluation else None,
        "comparison": compared,
    }


def summary_markdown(metrics: dict[str, Any], stages: list[StageResult]) -> str:
    """The run's summary: final test metrics, confusion matrix, per-generation ensembles, cache use."""
    lines = [f"# petflow run `{metrics['name']}` ({metrics['digest']})", ""]
    test = metrics["test"]
    if test:
        headline = (f"**Final classifier on test:** accuracy **{test['accuracy']:.4f}**, macro-F1 "
                    f"**{test['macro_f1']:.4f}** (n = {test['n']})")
        lines += [headline, "", "Confusion matrix (rows gold, columns predicted):", "", confusion_markdown(test), ""]
    else:
        lines += ["No test set configured: the classifier was trained but not evaluated.", ""]
    if metrics.get("comparison"):
        lines += ["## What PET bought (accuracy)", "", comparison_markdown(metrics["comparison"])]
    data = metrics["data"]
    lines += [f"|T| = {data['labeled']['rows']}, |D| = {data['unlabeled']['rows']}"
              + (f", |test| = {data['test']['rows']}" if "test" in data else ""), ""]
    for g in metrics["generations"]:
        ens = g["ensemble_test"]
        lines.append(f"- generation {g['generation']}: {len(g['models'])} models"
                     + (f", ensemble accuracy on test {ens['accuracy']:.4f}" if ens else ""))
    cached = sum(1 for s in stages if s["cached"])
    lines += ["", f"Stages: {len(stages)}, of which {cached} cached (taken from the store)."]
    return "\n".join(lines) + "\n"


def _symlink(target: str, link: Path) -> None:
    tmp = link.with_name(f".{link.name}.tmp")
    tmp.unlink(missing_ok=True)
    os.symlink(target, tmp)
    os.replace(tmp, link)


@task(name="write-run", cache_policy=NO_CACHE)
def write_run(config: RunConfig, digest: str, stages: list[StageResult], prepared: StageResult,
              generations: list[GenerationResult], merged: StageResult, distilled: StageResult,
              evaluation: StageResult | None, started: float, compared: dict[str, Any] | None = None) -> dict[str, Any]:
    """Write the run directory and the summary artifacts; returns {run_dir, metrics}."""
    run_dir = Path(config.runs_dir).expanduser().resolve() / f"{config.name}-{digest}"
    words = next((s for s in stages if s["stage"] == "words"), None)
    metrics = build_metrics(config, digest, prepared, generations, merged, distilled, evaluation, compared, words)
    for warning in (compared or {}).get("warnings", []):
        logger().warning(warning)
    manifest = {
        "name": config.name, "digest": digest, "code_version": code_version(), "flow_run_id": flow_run.get_id(),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
        "wall_s": round(time.time() - started, 2), "store": str(Path(config.store).resolve()),
        "config": config.to_dict(),
        "stages": [{k: s[k] for k in ("stage", "name", "key", "cached", "record", "outputs", "wall_s")} for s in stages],
    }
    links = {"labeled.parquet": prepared["outputs"]["labeled"], "unlabeled.parquet": prepared["outputs"]["unlabeled"],
             "soft_labels.parquet": merged["outputs"]["soft_labels"], "classifier": distilled["outputs"]["classifier"]}
    if evaluation:
        links["predictions.parquet"] = evaluation["outputs"]["predictions"]
    (run_dir / "links").mkdir(parents=True, exist_ok=True)
    for name, ref in links.items():
        _symlink(ref["path"], run_dir / "links" / name)
    summary = summary_markdown(metrics, stages)
    stage_rows = [{"stage": s["stage"], "name": s["name"], "key": s["key"][:12], "cached": s["cached"],
                   "built in (s)": s["wall_s"]} for s in stages]
    write_json(manifest, run_dir / "manifest.json")
    write_json(metrics, run_dir / "metrics.json")
    generation_tables = [f"## Generation {g.generation}\n\n{_table_md(generation_rows(g))}\n" for g in generations]
    word_table = [f"## Label words (LM-BFF search on T)\n\n{_table_md(word_rows(metrics['words']))}\n"] if words else []
    report = "\n".join([summary, *word_table, *generation_tables, "## Stages\n", _table_md(stage_rows), ""])
    with atomic_path(run_dir / "report.md") as tmp:
        tmp.write_text(report, encoding="utf-8")
    publish(MarkdownArtifact, key=f"{slug(config.name)}-summary", markdown=summary, description="final metrics")
    publish(TableArtifact, key=f"{slug(config.name)}-stages", table=stage_rows, description="stages and cache hits")
    files = {"run directory": {"path": str(run_dir), "sha256": digest}, **links}
    publish(MarkdownArtifact, key=f"{slug(config.name)}-files", markdown=files_markdown(config.name, files),
            description=f"{config.name}: run directory, soft labels, classifier, predictions (paths to copy)")
    return {"run_dir": str(run_dir), "metrics": metrics}
