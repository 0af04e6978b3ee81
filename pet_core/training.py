"""PET training of one PVP model (one pattern, one seed): CE on T plus the auxiliary MLM loss on D."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import torch
from torch import nn

from pet_core.artifacts import atomic_dir, write_json
from pet_core.callbacks import Callback, CallbackList
from pet_core.config import ModelConfig, TrainConfig
from pet_core.modeling import MaskedLM, collate
from pet_core.optim import (
    build_optimizer, check_finite, cycle_batches, grad_scaler, mask_tokens, mlm_loss, seed_everything,
)
from pet_core.pvp import PVP
from pet_core.pvp_model import PVPModel
from pet_core.spec import TaskSpec

TRAIN_RECORD = "train_record.json"


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


def model_id(pattern: int, seed: int, generation: int = 0) -> str:
    """The id naming a model in every artifact."""
    return f"g{generation}-p{pattern}-s{seed}"


def label_indices(table: pa.Table, spec: TaskSpec) -> np.ndarray:
    """Gold label indices in the spec's order."""
    index = {name: i for i, name in enumerate(spec.label_names)}
    return np.array([index[label] for label in table.column("label").to_pylist()], dtype=np.int64)


def texts(table: pa.Table) -> tuple[list[str], list[str | None]]:
    """The ``a`` and ``b`` columns as lists."""
    return table.column("a").to_pylist(), table.column("b").to_pylist()


def accuracy_on(pvp_model: PVPModel, table: pa.Table, spec: TaskSpec, batch_size: int) -> float | None:
    """Accuracy of a PVP model on a labelled table (None when empty)."""
    if table.num_rows == 0:
        return None
    was_training = pvp_model.mlm.model.training
    pvp_model.mlm.model.eval()
    logits = pvp_model.predict(*texts(table), batch_size=batch_size)
    pvp_model.mlm.model.train(was_training)
    return float((logits.argmax(1) == label_indices(table, spec)).mean())


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
) -> TrainResult:
    """Fine-tune one PVP model and save it (safetensors) with its train record, atomically.

    ``seed`` seeds this model alone (init, batch order, masking). ``sample_weights`` (optional, one
    per labelled row) weight the CE loss. ``model_name`` overrides the default model id.
    """
    started = time.perf_counter()
    events = CallbackList(callbacks or [])
    mid = model_name or model_id(pattern, seed, generation)
    stage = f"train {mid}"
    generator = seed_everything(seed)
    mlm = MaskedLM.load(model_config)
    pvp_model = PVPModel(mlm, PVP(spec, pattern, mlm.tokenizer, model_config.max_seq_length))
    cfg = train_config
    pre_acc = accuracy_on(pvp_model, labeled, spec, cfg.score_batch_size)
    steps_done, last_loss = 0, None
    if labeled.num_rows > 0:
        last_loss = _fit(pvp_model, spec, labeled, unlabeled, cfg, generator, sample_weights, events, stage)
        steps_done = cfg.max_steps
    post_acc = accuracy_on(pvp_model, labeled, spec, cfg.score_batch_size)
    result = TrainResult(
        model_dir=str(out_dir), model_id=mid, pattern=pattern, seed=seed, generation=generation,
        n_labeled=labeled.num_rows, pre_train_accuracy=pre_acc, post_train_accuracy=post_acc,
        steps=steps_done, final_loss=last_loss, wall_s=round(time.perf_counter() - started, 3),
    )
    with atomic_dir(out_dir) as tmp:
        mlm.save(tmp)
        deterministic = {k: v for k, v in result.to_dict().items() if k not in ("model_dir", "wall_s")}
        write_json({**deterministic, "train_config": cfg.to_dict(),
                    "model_config": model_config.to_dict(), "template": spec.patterns[pattern].template},
                   tmp / TRAIN_RECORD)
    mlm.release()
    events.on_stage_end(stage, {"pre_train_accuracy": pre_acc, "post_train_accuracy": post_acc})
    return result


def _fit(
    pvp_model: PVPModel, spec: TaskSpec, labeled: pa.Table, unlabeled: pa.Table | None, cfg: TrainConfig,
    generator: torch.Generator, sample_weights: np.ndarray | None, events: Callback, stage: str,
) -> float:
    mlm = pvp_model.mlm
    model = mlm.model
    model.train()
    gold = torch.tensor(label_indices(labeled, spec), device=mlm.device)
    weights = None if sample_weights is None else torch.tensor(sample_weights, dtype=torch.float32,
                                                               device=mlm.device)
    encodings = pvp_model.encode(*texts(labeled))
    use_mlm = cfg.use_mlm and unlabeled is not None and unlabeled.num_rows > 0
    if use_mlm:
        unl_encoded = pvp_model.pvp.encode_texts(*texts(unlabeled), n_masks=1)
        unl_batches = cycle_batches(len(unl_encoded), cfg.batch_size * cfg.unlabeled_ratio, generator)
    lab_batches = cycle_batches(labeled.num_rows, cfg.batch_size, generator)
    optimizer, scheduler = build_optimizer(model, cfg.learning_rate, cfg.weight_decay, cfg.adam_epsilon,
                                           cfg.max_steps, cfg.warmup_steps)
    scaler = grad_scaler(mlm.device, mlm.autocast_dtype)
    pad = mlm.tokenizer.pad_token_id or 0
    events.on_stage_begin(stage, cfg.max_steps)
    running = 0.0
    for step in range(cfg.max_steps):
        running = 0.0
        for _ in range(cfg.grad_accumulation):
            idx = next(lab_batches)
            with mlm.autocast():
                logits = pvp_model.batch_logits(encodings, idx).float()
                ce = nn.functional.cross_entropy(logits, gold[idx], reduction="none")
                ce = (ce * weights[idx]).sum() / weights[idx].sum() if weights is not None else ce.mean()
                loss = ce
                if use_mlm:
                    unl = collate(unl_encoded, next(unl_batches), pad)
                    ids, labels = mask_tokens(unl.input_ids, unl.attention_mask, mlm.tokenizer,
                                              cfg.mlm_probability, generator)
                    unl.input_ids = ids
                    aux = mlm_loss(mlm, unl.to(mlm.device), labels.to(mlm.device))
                    loss = (1 - cfg.mlm_alpha) * ce + cfg.mlm_alpha * aux
            check_finite(loss, f"{stage} step {step}")
            scaler.scale(loss / cfg.grad_accumulation).backward()
            running += loss.item() / cfg.grad_accumulation
        scaler.unscale_(optimizer)
        nn.utils.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
        scaler.step(optimizer)
        scaler.update()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        events.on_progress(stage, step + 1, cfg.max_steps, loss=running)
    model.eval()
    return running
