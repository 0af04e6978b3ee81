"""Training one pattern model (one pattern, one seed, any kind): CE on T plus the kind's auxiliary loss on D
(PET's MLM loss for the cloze kind)."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import torch

from pet_core.artifacts import atomic_dir, write_json
from pet_core.callbacks import Callback, CallbackList
from pet_core.config import ModelConfig, TrainConfig
from pet_core.kinds import DEFAULT_KIND, KindConfig, get_kind
from pet_core.kinds.base import TRAIN_RECORD, PatternModel, label_indices, texts
from pet_core.loop import OptimLoop
from pet_core.objectives import weighted_cross_entropy
from pet_core.optim import cycle_batches, seed_everything
from pet_core.plan import model_id
from pet_core.spec import TaskSpec


@dataclass
class TrainResult:
    """What training one PVP model produced; ``pre_train_accuracy`` is its ensemble weight."""

    model_dir: str
    model_id: str
    pattern: int
    seed: int
    generation: int
    n_labeled: int
    pre_train_accuracy: float | None
    post_train_accuracy: float | None
    steps: int
    final_loss: float | None
    wall_s: float

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict."""
        return asdict(self)


def accuracy_on(model: PatternModel, table: pa.Table, spec: TaskSpec, batch_size: int) -> float | None:
    """Accuracy of a pattern model on a labelled table (None when empty)."""
    return model.accuracy(table, spec, batch_size)


def train_pvp(
    spec: TaskSpec,
    pattern: int,
    seed: int,
    labeled: pa.Table,
    unlabeled: pa.Table | None,
    model_config: ModelConfig,
    train_config: TrainConfig,
    out_dir: str | Path,
    generation: int = 0,
    sample_weights: np.ndarray | None = None,
    callbacks: list[Callback] | None = None,
    model_name: str | None = None,
    kind: KindConfig | None = None,
) -> TrainResult:
    """Train one pattern model of ``kind`` (default: PET's cloze kind) and save it with its train record,
    atomically.

    ``seed`` seeds this model alone (init, batch order, masking). ``sample_weights`` (optional, one
    per labelled row) weight the CE loss. ``model_name`` overrides the default model id.
    """
    if spec.patterns[pattern].words == "auto":
        raise ValueError(f"pattern {pattern} has words: auto and its label words were not searched yet: run it "
                         "through the pipeline (its words stage) or pet_core.plan.searched_spec first")
    started = time.perf_counter()
    events = CallbackList(callbacks or [])
    mid = model_name or model_id(pattern, seed, generation)
    stage = f"train {mid}"
    generator = seed_everything(seed)
    kind = kind or get_kind(DEFAULT_KIND).config()
    model = get_kind(kind.kind).model_class().create(spec, pattern, model_config, kind)
    model.use_labeled(labeled, seed)
    cfg = train_config
    pre_acc = model.accuracy(labeled, spec, cfg.score_batch_size)
    steps_done, last_loss = 0, None
    if labeled.num_rows > 0:
        last_loss = _fit(model, spec, labeled, unlabeled, cfg, generator, sample_weights, events, stage)
        steps_done = cfg.max_steps
    post_acc = model.accuracy(labeled, spec, cfg.score_batch_size)
    result = TrainResult(
        model_dir=str(out_dir), model_id=mid, pattern=pattern, seed=seed, generation=generation,
        n_labeled=labeled.num_rows, pre_train_accuracy=pre_acc, post_train_accuracy=post_acc,
        steps=steps_done, final_loss=last_loss, wall_s=round(time.perf_counter() - started, 3),
    )
    with atomic_dir(out_dir) as tmp:
        model.save(tmp)
        deterministic = {k: v for k, v in result.to_dict().items() if k not in ("model_dir", "wall_s")}
        write_json({**deterministic, "kind": kind.to_dict(), "train_config": cfg.to_dict(),
                    "model_config": model_config.to_dict(), "template": spec.patterns[pattern].template},
                   tmp / TRAIN_RECORD)
    model.release()
    events.on_stage_end(stage, {"pre_train_accuracy": pre_acc, "post_train_accuracy": post_acc})
    return result


def _fit(
    model: PatternModel, spec: TaskSpec, labeled: pa.Table, unlabeled: pa.Table | None, cfg: TrainConfig,
    generator: torch.Generator, sample_weights: np.ndarray | None, events: Callback, stage: str,
) -> float:
    model.train()
    gold = torch.tensor(label_indices(labeled, spec), device=model.device)
    weights = None if sample_weights is None else torch.tensor(sample_weights, dtype=torch.float32,
                                                               device=model.device)
    encodings = model.encode(*texts(labeled))
    unl_encoded = None
    if cfg.use_mlm and unlabeled is not None and unlabeled.num_rows > 0:
        unl_encoded = model.encode_unlabeled(*texts(unlabeled))
    if unl_encoded is not None:
        unl_batches = cycle_batches(unlabeled.num_rows, cfg.batch_size * cfg.unlabeled_ratio, generator)
    lab_batches = cycle_batches(labeled.num_rows, cfg.batch_size, generator)
    loop = OptimLoop(model.module, cfg, cfg.max_steps, model.autocast_dtype,
                     groups=model.param_groups(cfg.learning_rate))

    def objective(step: int) -> torch.Tensor:
        idx = next(lab_batches)
        with model.autocast():
            logits = model.label_logits(encodings, idx).float()
            ce = weighted_cross_entropy(logits, gold[idx], None if weights is None else weights[idx])
            if unl_encoded is None:
                return ce
            aux = model.aux_loss(unl_encoded, next(unl_batches), generator, cfg)
            return (1 - cfg.mlm_alpha) * ce + cfg.mlm_alpha * aux

    running = loop.run(objective, stage, events)
    loop.close()
    model.train(False)
    return running
