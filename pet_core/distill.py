"""The final classifier: a plain sequence classifier distilled from soft labels (KL·T²), and its use.

The same trainer fits hard labels (one-hot targets, plain cross-entropy): the supervised baseline.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import torch
from torch import nn
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from pet_core.artifacts import atomic_dir, write_json
from pet_core.backbone import BackboneError, resolve_backbone
from pet_core.callbacks import Callback, CallbackList
from pet_core.config import DistillConfig, ModelConfig
from pet_core.metrics import classification_metrics
from pet_core.modeling import resolve_device, resolve_precision
from pet_core.optim import build_optimizer, check_finite, cycle_batches, grad_scaler, seed_everything
from pet_core.training import label_indices

DISTILL_RECORD = "distill_record.json"


def _pair(table: pa.Table) -> tuple[list[str], list[str] | None]:
    a = table.column("a").to_pylist()
    b = table.column("b").to_pylist()
    return a, (None if all(x is None for x in b) else [x or "" for x in b])


def _tokenize(tokenizer, a: list[str], b: list[str] | None, max_length: int) -> dict[str, torch.Tensor]:
    return tokenizer(a, b, truncation="longest_first" if b is not None else True, max_length=max_length,
                     padding=True, return_tensors="pt")


class SequenceClassifier:
    """An AutoModelForSequenceClassification with tokenizer, device and autocast."""

    def __init__(self, source: str, model_config: ModelConfig, num_labels: int | None = None):
        name = resolve_backbone(source)
        extra = {"num_labels": num_labels} if num_labels is not None else {}
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(name, trust_remote_code=model_config.trust_remote_code)
            self.model = AutoModelForSequenceClassification.from_pretrained(
                name, trust_remote_code=model_config.trust_remote_code, dtype=torch.float32, **extra)
        except (OSError, ValueError) as err:
            raise BackboneError(f"cannot load a sequence classifier from {name!r}: {err}") from err
        self.config = model_config
        self.device = resolve_device(model_config.device)
        self.autocast_dtype = resolve_precision(model_config.precision, self.device)
        self.model.to(self.device)

    def _autocast(self):
        if self.autocast_dtype is None:
            return torch.autocast(self.device.type, enabled=False)
        return torch.autocast(self.device.type, dtype=self.autocast_dtype)

    def logits(self, a: list[str], b: list[str] | None) -> torch.Tensor:
        """Logits (B, |L|) for a batch of texts."""
        enc = {k: v.to(self.device) for k, v in _tokenize(self.tokenizer, a, b, self.config.max_seq_length).items()}
        with self._autocast():
            return self.model(**enc).logits.float()

    @torch.inference_mode()
    def predict(self, table: pa.Table, batch_size: int) -> np.ndarray:
        """(n, |L|) float32 logits in input order, length-sorted batches."""
        self.model.eval()
        a, b = _pair(table)
        order = sorted(range(len(a)), key=lambda i: -len(a[i]) - len(b[i] if b else ""))
        out = np.zeros((len(a), self.model.config.num_labels), dtype=np.float32)
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            out[idx] = self.logits([a[i] for i in idx], [b[i] for i in idx] if b else None).cpu().numpy()
        return out


def distill(
    train: pa.Table,
    targets: np.ndarray,
    label_names: list[str],
    model_config: ModelConfig,
    config: DistillConfig,
    out_dir: str | Path,
    seed: int = 0,
    soft: bool = True,
    callbacks: list[Callback] | None = None,
) -> dict[str, Any]:
    """Train the final classifier on ``train`` with ``targets`` (soft label rows, or label indices).

    ``soft=True``: KL(targets ‖ softmax(s/T))·T². ``soft=False``: cross-entropy on label indices.
    """
    started = time.perf_counter()
    events = CallbackList(callbacks or [])
    if train.num_rows == 0:
        raise ValueError("distillation needs at least one training example (D is empty)")
    generator = seed_everything(seed)
    clf = SequenceClassifier(model_config.backbone, model_config, num_labels=len(label_names))
    clf.model.config.id2label = dict(enumerate(label_names))
    clf.model.config.label2id = {n: i for i, n in enumerate(label_names)}
    model = clf.model
    model.train()
    target_t = torch.tensor(targets, dtype=torch.float32 if soft else torch.long)
    a, b = _pair(train)
    optimizer, scheduler = build_optimizer(model, config.learning_rate, config.weight_decay, config.adam_epsilon,
                                           config.max_steps, config.warmup_steps)
    batches = cycle_batches(train.num_rows, config.batch_size, generator)
    stage = "distill" if soft else "supervised"
    events.on_stage_begin(stage, config.max_steps)
    temperature = config.temperature
    scaler = grad_scaler(clf.device, clf.autocast_dtype)
    loss_value = 0.0
    for step in range(config.max_steps):
        loss_value = 0.0
        for _ in range(config.grad_accumulation):
            idx = next(batches)
            logits = clf.logits([a[i] for i in idx], [b[i] for i in idx] if b else None)
            y = target_t[idx].to(clf.device)
            if soft:
                log_p = torch.log_softmax(logits / temperature, dim=-1)
                loss = nn.functional.kl_div(log_p, y, reduction="batchmean") * temperature**2
            else:
                loss = nn.functional.cross_entropy(logits, y)
            check_finite(loss, f"{stage} step {step}")
            scaler.scale(loss / config.grad_accumulation).backward()
            loss_value += loss.item() / config.grad_accumulation
        scaler.unscale_(optimizer)
        nn.utils.clip_grad_norm_(model.parameters(), config.max_grad_norm)
        scaler.step(optimizer)
        scaler.update()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        events.on_progress(stage, step + 1, config.max_steps, loss=loss_value)
    model.eval()
    record = {"stage": stage, "steps": config.max_steps, "final_loss": loss_value, "n_train": train.num_rows,
              "seed": seed, "labels": label_names, "config": config.to_dict(),
              "wall_s": round(time.perf_counter() - started, 3)}
    with atomic_dir(out_dir) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        clf.tokenizer.save_pretrained(tmp)
        write_json(record, tmp / DISTILL_RECORD)
    events.on_stage_end(stage, {"final_loss": loss_value})
    return record


def distillation_targets(soft_labels: pa.Table, unlabeled: pa.Table) -> np.ndarray:
    """Soft label rows aligned to the unlabelled table's example order."""
    ids = soft_labels.column("example_id").to_pylist()
    order = {e: i for i, e in enumerate(ids)}
    wanted = unlabeled.column("example_id").to_pylist()
    missing = [e for e in wanted if e not in order]
    if missing:
        raise ValueError(f"soft labels miss {len(missing)} unlabelled examples (e.g. {missing[:3]})")
    col = soft_labels.column("soft_labels").combine_chunks()
    matrix = col.flatten().to_numpy().reshape(len(col), col.type.list_size)
    return matrix[[order[e] for e in wanted]]


def evaluate(model_dir: str | Path, test: pa.Table, model_config: ModelConfig,
             batch_size: int = 64) -> tuple[dict[str, Any], pa.Table]:
    """Metrics and a predictions table (example_id, logits, label) of a saved classifier on labelled data."""
    clf = SequenceClassifier(str(model_dir), model_config)
    names = [clf.model.config.id2label[i] for i in range(clf.model.config.num_labels)]
    logits = clf.predict(test, batch_size)
    pred = logits.argmax(1)
    predictions = pa.table({
        "example_id": test.column("example_id"),
        "logits": pa.FixedSizeListArray.from_arrays(pa.array(logits.reshape(-1), pa.float32()), len(names)),
        "label": pa.array([names[i] for i in pred], pa.string()),
    })
    metrics = {}
    if test.num_rows and test.column("label").null_count == 0:
        index = {n: i for i, n in enumerate(names)}
        gold = np.array([index[x] for x in test.column("label").to_pylist()])
        metrics = classification_metrics(gold, pred, names)
    return metrics, predictions


__all__ = ["SequenceClassifier", "distill", "distillation_targets", "evaluate", "label_indices"]
