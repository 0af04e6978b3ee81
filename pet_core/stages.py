"""Pipeline stages over the artifact store: references in, one pet_core call, references out.

Each function hashes its config and the contents of its inputs into a key; a valid record under
that key is returned as is (``record.cached``), otherwise the stage runs and commits atomically.
The orchestrator (Prefect tasks, a notebook, a benchmark) only wires these together.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pet_core.artifacts import EXAMPLES_SCHEMA, logits_of, read_table, write_json, write_table
from pet_core.callbacks import Callback
from pet_core.config import (
    AdaptConfig, DistillConfig, EnsembleConfig, IpetConfig, ModelConfig, Reduction, ScoreConfig, TrainConfig,
    WordsConfig,
)
from pet_core.data import load_examples
from pet_core.sampling import describe, draw, hold_out
from pet_core.ensemble import ensemble_metrics
from pet_core.ensemble import merge as merge_logits_files
from pet_core.kinds.registry import DEFAULT_KIND, KindConfig, get_kind
from pet_core.spec import TaskSpec
from pet_core.keys import model_key, model_seed, source_hash, spec_hash, trained_kind
from pet_core.store import ArtifactStore, Ref, StageRecord


def prepare(store: ArtifactStore, spec: TaskSpec, data: Any) -> StageRecord:
    """Load and validate the data, draw T and D from the pool; write labeled/unlabeled/test Parquet."""
    inputs = {"spec": spec_hash(spec), "pool": source_hash(data.pool), "test": source_hash(data.test),
              "unlabeled": source_hash(data.unlabeled)}

    def build(tmp: Path) -> tuple[dict[str, str], dict[str, Any]]:
        import pyarrow as pa

        pool = load_examples(data.pool, spec)
        held_out, pool = hold_out(pool, data)
        labeled, unlabeled = draw(pool, data)
        if data.unlabeled is not None:
            extra = load_examples(data.unlabeled, spec, labeled=False)
            extra = extra.set_column(0, EXAMPLES_SCHEMA.field("example_id"), pa.array(
                [f"u-{e}" for e in extra.column("example_id").to_pylist()], pa.string()))
            unlabeled = pa.concat_tables([unlabeled, extra])
        outputs = {"labeled": "labeled.parquet", "unlabeled": "unlabeled.parquet"}
        write_table(labeled, tmp / outputs["labeled"])
        write_table(unlabeled, tmp / outputs["unlabeled"])
        info = {"labeled": describe(labeled), "unlabeled": describe(unlabeled)}
        if data.test is not None or held_out is not None:
            test = load_examples(data.test, spec) if data.test is not None else held_out
            if data.n_test is not None:
                test = test.slice(0, data.n_test)
            outputs["test"] = "test.parquet"
            write_table(test, tmp / outputs["test"])
            info["test"] = describe(test)
        return outputs, info

    key_config = data.to_dict()
    if not key_config.get("min_per_label"):
        key_config.pop("min_per_label", None)  # draws without it keep the keys they had before it existed
    for role in ("pool", "test", "unlabeled"):  # sources enter the key by content (inputs), not by path
        if key_config.get(role):
            key_config[role].pop("path")
    return store.run("prepare", key_config, inputs, build)


def adapt(store: ArtifactStore, model: ModelConfig, config: AdaptConfig, unlabeled: Ref,
          callbacks: Sequence[Callback] = ()) -> StageRecord:
    """Continue MLM training of the backbone on D; output the adapted backbone directory."""
    def build(tmp: Path) -> tuple[dict[str, str], dict[str, Any]]:
        from pet_core.adapt import adapt_backbone

        info = adapt_backbone(model, config, read_table(unlabeled.verify().path), tmp / "backbone",
                              callbacks=list(callbacks))
        return {"backbone": "backbone"}, info

    return store.run("adapt", {"model": model_key(model), "adapt": config.to_dict()},
                     {"unlabeled": unlabeled.sha256}, build)


def seed_words(spec: TaskSpec, pattern: int) -> dict[str, list[str]] | None:
    """A ``words: auto`` pattern's own verbalizer: its seed words (None: the search settings decide)."""
    own = spec.patterns[pattern]
    return dict(own.verbalizer) if own.words == "auto" and own.verbalizer is not None else None


def label_words(store: ArtifactStore, spec: TaskSpec, model: ModelConfig, config: WordsConfig, labeled: Ref,
                patterns: Sequence[int]) -> StageRecord:
    """LM-BFF's label-word search on T for each of ``patterns`` (``pet_core.label_search``): ``words.json``
    holds every pattern's candidates and ranked pairings; ``info`` the chosen words and their accuracies."""
    def build(tmp: Path) -> tuple[dict[str, str], dict[str, Any]]:
        from pet_core.label_search import search
        from pet_core.modeling import MaskedLM

        t = read_table(labeled.verify().path)
        mlm = MaskedLM.load(model)
        try:
            found = {str(p): search(mlm, spec, p, t, config, seed_words=seed_words(spec, p)) for p in patterns}
        finally:
            mlm.release()
        write_json({p: result.to_dict() for p, result in found.items()}, tmp / "words.json")
        info = {p: {"words": r.pairings[0].words, "cv_accuracy": r.pairings[0].cv_accuracy,
                    "train_accuracy": r.pairings[0].train_accuracy, "folds": r.folds} for p, r in found.items()}
        return {"words": "words.json"}, {"patterns": info}

    key_config = {"model": model_key(model), "words": config.model_dump(mode="json", exclude={"patterns"}),
                  "patterns": list(patterns)}
    return store.run("words", key_config, {"spec": spec_hash(spec), "labeled": labeled.sha256}, build)


def train(store: ArtifactStore, spec: TaskSpec, model: ModelConfig, config: TrainConfig, pattern: int,
          seed: int, generation: int, labeled: Ref, unlabeled: Ref | None,
          callbacks: Sequence[Callback] = (), kind: KindConfig | None = None) -> StageRecord:
    """Train one pattern model of ``kind`` (default PET's cloze kind); output its directory, info = its
    TrainResult (pre-train accuracy etc.)."""
    kind = kind or get_kind(DEFAULT_KIND).config()

    def build(tmp: Path) -> tuple[dict[str, str], dict[str, Any]]:
        from pet_core.plan import model_id
        from pet_core.training import train_pvp

        result = train_pvp(spec, pattern, model_seed(seed, pattern, generation), read_table(labeled.verify().path),
                           read_table(unlabeled.verify().path) if unlabeled else None, model, config,
                           tmp / "model", generation=generation, callbacks=list(callbacks),
                           model_name=model_id(pattern, seed, generation), kind=kind)
        info = result.to_dict()
        info.pop("model_dir")  # the temp build path; the committed path is the ``model`` output
        info["kind"] = kind.kind
        return {"model": "model"}, info

    key_config = {"model": model_key(model), "kind": kind.to_dict(), "train": config.to_dict(), "pattern": pattern,
                  "seed": seed, "generation": generation, "spec": spec_hash(spec)}
    inputs = {"labeled": labeled.sha256, "unlabeled": unlabeled.sha256 if unlabeled else None}
    return store.run("train", key_config, inputs, build)


def score(store: ArtifactStore, spec: TaskSpec, model: ModelConfig, config: ScoreConfig, pvp_model: Ref,
          examples: Ref, callbacks: Sequence[Callback] = ()) -> StageRecord:
    """Label logits of a trained PVP model on an example table."""
    def build(tmp: Path) -> tuple[dict[str, str], dict[str, Any]]:
        from pet_core.scoring import score as score_table

        summary = score_table(spec, pvp_model.verify().path, examples.verify().path, tmp / "logits.parquet",
                              model, config, callbacks=list(callbacks))
        return {"logits": "logits.parquet"}, summary

    key_config = {"model": {k: v for k, v in model_key(model).items() if k != "backbone"},
                  "kind": trained_kind(pvp_model), "score": {"chunk_rows": config.chunk_rows}, "spec": spec_hash(spec)}
    return store.run("score", key_config, {"model": pvp_model.sha256, "examples": examples.sha256}, build)


def merge(store: ArtifactStore, spec: TaskSpec, config: EnsembleConfig, logits: Sequence[Ref],
          accuracies: Sequence[float | None]) -> StageRecord:
    """Soft labels of the ensemble (weighted mean of logits, softmax at T)."""

    def build(tmp: Path) -> tuple[dict[str, str], dict[str, Any]]:
        table = merge_logits_files([r.verify().path for r in logits], accuracies, spec.label_names, config)
        write_table(table, tmp / "soft_labels.parquet")
        counts = dict(zip(*np.unique(table.column("label").to_pylist(), return_counts=True), strict=True))
        return {"soft_labels": "soft_labels.parquet"}, {"rows": table.num_rows,
                                                        "predicted": {k: int(v) for k, v in counts.items()}}

    return store.run("merge", {"ensemble": config.to_dict(), "accuracies": list(accuracies),
                               "labels": spec.label_names},
                     {"logits": [r.sha256 for r in logits]}, build)  # type: ignore[dict-item]


def next_generation(store: ArtifactStore, spec: TaskSpec, config: IpetConfig, labeled: Ref, unlabeled: Ref,
                    logits: Sequence[Ref], accuracies: Sequence[float | None], generation: int,
                    seed: int, reduction: Reduction = Reduction.wmean) -> StageRecord:
    """iPET: one new training set per model of the previous generation (outputs ``train_<i>``); the labellers
    are merged with the run's ensemble ``reduction``."""
    def build(tmp: Path) -> tuple[dict[str, str], dict[str, Any]]:
        from pet_core.ipet import next_generation as build_sets

        sets = build_sets(read_table(labeled.verify().path), read_table(unlabeled.verify().path),
                          [r.verify().path for r in logits], accuracies, generation, config,
                          spec.label_names, seed, reduction)
        outputs = {}
        for i, generation_set in enumerate(sets):
            outputs[f"train_{i}"] = f"train_{i}.parquet"
            write_table(generation_set.table, tmp / outputs[f"train_{i}"])
        return outputs, {"generation": generation, "sets": [s.report() for s in sets]}

    key_config = {"ipet": config.to_dict(), "reduction": reduction.value, "accuracies": list(accuracies),
                  "generation": generation, "seed": seed, "labels": spec.label_names}
    inputs = {"labeled": labeled.sha256, "unlabeled": unlabeled.sha256, "logits": [r.sha256 for r in logits]}
    return store.run("ipet", key_config, inputs, build)  # type: ignore[arg-type]


def distill(store: ArtifactStore, spec: TaskSpec, model: ModelConfig, config: DistillConfig, unlabeled: Ref,
            soft_labels: Ref, labeled: Ref | None = None, seed: int = 0,
            callbacks: Sequence[Callback] = ()) -> StageRecord:
    """Train the final classifier on D (optionally T ∪ D) with the ensemble's soft labels."""
    def build(tmp: Path) -> tuple[dict[str, str], dict[str, Any]]:
        import pyarrow as pa

        from pet_core.distill import distill as fit, distillation_targets

        d = read_table(unlabeled.verify().path)
        targets = distillation_targets(read_table(soft_labels.verify().path), d)
        if config.include_labeled and labeled is not None:
            t = read_table(labeled.verify().path)
            index = {n: i for i, n in enumerate(spec.label_names)}
            one_hot = np.eye(len(index), dtype=np.float32)[[index[x] for x in t.column("label").to_pylist()]]
            d, targets = pa.concat_tables([t, d.cast(t.schema)]), np.concatenate([one_hot, targets])
        info = fit(d, targets, spec.label_names, model, config, tmp / "classifier", seed=seed,
                   callbacks=list(callbacks))
        return {"classifier": "classifier"}, info

    inputs = {"unlabeled": unlabeled.sha256, "soft_labels": soft_labels.sha256,
              "labeled": labeled.sha256 if labeled and config.include_labeled else None}
    return store.run("distill", {"model": model_key(model), "distill": config.to_dict(), "seed": seed,
                                 "labels": spec.label_names}, inputs, build)


def supervised(store: ArtifactStore, spec: TaskSpec, model: ModelConfig, config: DistillConfig, labeled: Ref,
               seed: int = 0, callbacks: Sequence[Callback] = ()) -> StageRecord:
    """The baseline: the same sequence classifier trained on T's hard labels only."""
    def build(tmp: Path) -> tuple[dict[str, str], dict[str, Any]]:
        from pet_core.distill import GoldLabels
        from pet_core.distill import distill as fit
        from pet_core.training import label_indices

        t = read_table(labeled.verify().path)
        info = fit(t, label_indices(t, spec), spec.label_names, model, config, tmp / "classifier", seed=seed,
                   objective=GoldLabels(), callbacks=list(callbacks))
        return {"classifier": "classifier"}, info

    return store.run("supervised", {"model": model_key(model), "distill": config.to_dict(), "seed": seed,
                                    "labels": spec.label_names}, {"labeled": labeled.sha256}, build)


def evaluate(store: ArtifactStore, spec: TaskSpec, model: ModelConfig, classifier: Ref, test: Ref,
             batch_size: int = 64) -> StageRecord:
    """Metrics and predictions of a saved classifier on the test table."""
    def build(tmp: Path) -> tuple[dict[str, str], dict[str, Any]]:
        from pet_core.distill import evaluate as run_eval

        metrics, predictions = run_eval(classifier.verify().path, read_table(test.verify().path), model,
                                        batch_size)
        write_json(metrics, tmp / "metrics.json")
        write_table(predictions, tmp / "predictions.parquet")
        return {"metrics": "metrics.json", "predictions": "predictions.parquet"}, {
            "accuracy": metrics.get("accuracy"), "macro_f1": metrics.get("macro_f1")}

    key_config = {"model": {k: v for k, v in model_key(model).items() if k != "backbone"}, "labels": spec.label_names}
    return store.run("evaluate", key_config, {"classifier": classifier.sha256, "test": test.sha256}, build)


def logits_metrics(spec: TaskSpec, logits: Sequence[Ref], accuracies: Sequence[float | None], test: Ref,
                   config: EnsembleConfig) -> dict[str, Any]:
    """Accuracy of each model and of their ensemble on labelled data (cheap: no store entry)."""
    return ensemble_metrics(spec.label_names, [r.verify().path for r in logits], accuracies,
                            read_table(test.verify().path), config.reduction)


def read_json_output(record: StageRecord, name: str) -> Any:
    """Read (and hash-verify) a JSON output of a stage record."""
    from pet_core.artifacts import read_json

    return read_json(record.out(name).verify().path)


__all__ = ["read_json_output", "adapt", "distill", "evaluate", "label_words", "logits_metrics", "merge", "next_generation",
           "prepare", "score", "supervised", "train", "logits_of"]
