"""Section 3: training steps/s of pet_core's PVP step vs full-head baselines, and the optimizer step alone."""

from __future__ import annotations

import argparse
import shutil
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import torch

from benchmarks.speed_parts.common import Record, ag_news, log, model_config, record, texts, timed

if TYPE_CHECKING:
    from pet_core.spec import TaskSpec


class StepTimer:
    """A pet_core callback: a timestamp at the start and after every optimizer step."""

    def __init__(self) -> None:
        self.stamps: list[float] = []

    def on_stage_begin(self, stage: str, total: int) -> None:
        self.stamps = [time.perf_counter()]

    def on_progress(self, stage: str, done: int, total: int, **metrics: Any) -> None:
        self.stamps.append(time.perf_counter())

    def on_stage_end(self, stage: str, metrics: dict[str, Any]) -> None:
        pass


def train_tables(args: argparse.Namespace, n_unlabeled: int = 400) -> tuple[TaskSpec, pa.Table, pa.Table]:
    from pet_core.sampling import sample_split

    spec, pool = ag_news(args)
    labeled, unlabeled = sample_split(pool, 10, n_unlabeled, 1)
    return spec, labeled, unlabeled


def baseline_trainer(args: argparse.Namespace, spec: TaskSpec, labeled: pa.Table, unlabeled: pa.Table,
                     pad_to: int | None = None) -> Callable[[], float]:
    """The reference-style step: full MLM forward (head at every position) for T and for D with ``labels``."""
    from transformers import AutoModelForMaskedLM, AutoTokenizer

    from pet_core.modeling import Batch, collate, label_scores
    from pet_core.optim import build_optimizer, cycle_batches, mask_tokens, seed_everything
    from pet_core.pvp import PVP
    from pet_core.training import label_indices

    generator = seed_everything(1)
    tokenizer = AutoTokenizer.from_pretrained(args.backbone)
    model = AutoModelForMaskedLM.from_pretrained(args.backbone, dtype=torch.float32)
    model.train()
    pvp = PVP(spec, args.pattern, tokenizer, args.max_seq_length)
    flat, owner = pvp.verbalizer.single_token_ids()
    lab_enc, unl_enc = pvp.encode_texts(*texts(labeled)), pvp.encode_texts(*texts(unlabeled))
    gold = torch.tensor(label_indices(labeled, spec))
    lab_batches = cycle_batches(len(lab_enc), 4, generator)
    unl_batches = cycle_batches(len(unl_enc), 4, generator)
    optimizer, scheduler = build_optimizer(model, 1e-5, 0.01, 1e-8, 10_000, 0)
    dtype = model_config(args).precision
    from pet_core.modeling import resolve_precision

    autocast_dtype = resolve_precision(dtype, torch.device("cpu"))
    pad = tokenizer.pad_token_id or 0

    def padded(batch: Batch) -> Batch:
        if pad_to is None:
            return batch
        extra = pad_to - batch.input_ids.size(1)
        ids = torch.nn.functional.pad(batch.input_ids, (0, extra), value=pad)
        att = torch.nn.functional.pad(batch.attention_mask, (0, extra), value=0)
        return Batch(batch.indices, ids, att, batch.mask_positions)

    def step() -> float:
        idx = next(lab_batches)
        lab = padded(collate(lab_enc, idx, pad))
        unl = padded(collate(unl_enc, next(unl_batches), pad))
        ids, labels = mask_tokens(unl.input_ids, unl.attention_mask, tokenizer, 0.15, generator)
        with torch.autocast("cpu", dtype=autocast_dtype, enabled=autocast_dtype is not None):
            logits = model(input_ids=lab.input_ids, attention_mask=lab.attention_mask).logits
            at_mask = logits[torch.arange(len(idx)), lab.mask_positions[:, 0]].float()
            ce = torch.nn.functional.cross_entropy(label_scores(at_mask, flat, owner, len(spec.labels)), gold[idx])
            aux = model(input_ids=ids, attention_mask=unl.attention_mask, labels=labels).loss
            loss = (1 - 1e-4) * ce + 1e-4 * aux
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        return loss.item()

    return step


def bench_optimizer(args: argparse.Namespace, reps: int = 10) -> list[Record]:
    """clip_grad_norm_ + AdamW step of pet_core.optim.build_optimizer (per-parameter loop on CPU) vs fused=True."""
    from transformers import AutoModelForMaskedLM

    from pet_core.optim import build_optimizer

    model = AutoModelForMaskedLM.from_pretrained(args.backbone, dtype=torch.float32)
    params = [p for p in model.parameters() if p.requires_grad]
    for param in params:
        param.grad = torch.randn_like(param) * 1e-3
    plain, _ = build_optimizer(model, 1e-5, 0.01, 1e-8, 100, 0)
    fused = torch.optim.AdamW([{k: v for k, v in g.items() if k in ("params", "weight_decay", "lr")}
                               for g in plain.param_groups], lr=1e-5, eps=1e-8, fused=True)
    times: dict[str, list[float]] = {"plain": [], "fused": []}
    for rep in range(reps + 1):
        for name, opt in (("plain", plain), ("fused", fused)) if rep % 2 == 0 else (("fused", fused), ("plain", plain)):
            start = time.perf_counter()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            if rep:  # rep 0 creates the optimizer state
                times[name].append(time.perf_counter() - start)
    plain_s, fused_s = statistics.median(times["plain"]), statistics.median(times["fused"])
    n = sum(p.numel() for p in params)
    return [
        record("optimizer step: clip + AdamW of pet_core.optim.build_optimizer", plain_s * 1000, "ms",
               f"{n / 1e6:.1f}M fp32 parameters, median of {reps} interleaved; torch's default AdamW on CPU "
               "(per-parameter loop)"),
        record("optimizer step: clip + AdamW(fused=True)", fused_s * 1000, "ms",
               f"same groups; {plain_s / fused_s:.2f}x the speed of the loop (the loop's many small ops suffer "
               "most on a loaded machine)"),
    ]


def petcore_trainer(args: argparse.Namespace, spec: TaskSpec, labeled: pa.Table,
                    unlabeled: pa.Table) -> Callable[[], float]:
    """One optimizer step of pet_core.training._fit (grad_accumulation 1), built from the same pet_core functions,
    so that it can be interleaved step by step with the baseline; train_pvp itself is timed as a cross-check."""
    from torch import nn

    from pet_core.modeling import MaskedLM, collate
    from pet_core.optim import (
        build_optimizer,
        check_finite,
        cycle_batches,
        grad_scaler,
        mask_tokens,
        mlm_loss,
        seed_everything,
    )
    from pet_core.pvp import PVP
    from pet_core.kinds.cloze.model import ClozeModel
    from pet_core.training import label_indices

    generator = seed_everything(1)
    mlm = MaskedLM.load(model_config(args))
    pvp_model = ClozeModel(mlm, PVP(spec, args.pattern, mlm.tokenizer, args.max_seq_length))
    mlm.model.train()
    encodings = pvp_model.encode(*texts(labeled))
    unl_encoded = pvp_model.pvp.encode_texts(*texts(unlabeled), n_masks=1)
    gold = torch.tensor(label_indices(labeled, spec))
    lab_batches = cycle_batches(labeled.num_rows, 4, generator)
    unl_batches = cycle_batches(len(unl_encoded), 4, generator)
    optimizer, scheduler = build_optimizer(mlm.model, 1e-5, 0.01, 1e-8, 10_000, 0)
    try:
        scaler = grad_scaler(mlm.device, mlm.autocast_dtype)
    except TypeError:  # the older signature grad_scaler(mlm)
        scaler = grad_scaler(mlm)
    pad = mlm.tokenizer.pad_token_id or 0
    alpha = 1e-4

    def step() -> float:
        idx = next(lab_batches)
        with mlm.autocast():
            logits = pvp_model.label_logits(encodings, idx).float()
            ce = nn.functional.cross_entropy(logits, gold[idx])
            unl = collate(unl_encoded, next(unl_batches), pad)
            ids, labels = mask_tokens(unl.input_ids, unl.attention_mask, mlm.tokenizer, 0.15, generator)
            unl.input_ids = ids
            aux = mlm_loss(mlm, unl.to(mlm.device), labels.to(mlm.device))
            loss = (1 - alpha) * ce + alpha * aux
        check_finite(loss, "bench")
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)
        nn.utils.clip_grad_norm_(mlm.model.parameters(), 1.0)
        scaler.step(optimizer)
        scaler.update()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        return loss.item()

    return step


def bench_training(args: argparse.Namespace, ctx: dict[str, Any], work: Path) -> list[Record]:
    from pet_core.config import TrainConfig
    from pet_core.modeling import resolve_precision
    from pet_core.training import train_pvp

    spec, labeled, unlabeled = train_tables(args)
    steppers = {"pet": petcore_trainer(args, spec, labeled, unlabeled),
                "base": baseline_trainer(args, spec, labeled, unlabeled)}
    if args.ref_train_steps > 0:
        steppers["ref"] = baseline_trainer(args, spec, labeled, unlabeled, pad_to=args.max_seq_length)
    for fn in steppers.values():
        fn()  # warm-up
    n = args.train_rounds * args.train_steps
    n_ref = args.train_rounds * args.ref_train_steps
    times: dict[str, list[float]] = {k: [] for k in steppers}
    for i in range(n):
        order = ["pet", "base"] if i % 2 == 0 else ["base", "pet"]
        if i < n_ref:
            order.append("ref")
        for key in order:
            times[key].append(timed(steppers[key])[0])
        if (i + 1) % args.train_steps == 0:
            log(f"training step {i + 1}/{n}: pet_core {times['pet'][-1]:.2f}s, baseline {times['base'][-1]:.2f}s"
                + (f", pad-{args.max_seq_length} {times['ref'][-1]:.2f}s" if i < n_ref else ""))
    del steppers
    # the real function, as a cross-check of the replica: time between its progress callbacks
    timer = StepTimer()
    cfg = TrainConfig(max_steps=args.train_steps + 1, batch_size=4, unlabeled_ratio=1, grad_accumulation=1,
                      learning_rate=1e-5)
    train_pvp(spec, args.pattern, 1, labeled, unlabeled, model_config(args), cfg, work / "train", callbacks=[timer])
    shutil.rmtree(work / "train", ignore_errors=True)
    real = float(np.median(np.diff(timer.stamps)[1:]))
    pet, base = statistics.median(times["pet"]), statistics.median(times["base"])
    ratio = statistics.median(b / p for b, p in zip(times["base"], times["pet"], strict=True))
    ctx["train_step_s"] = pet
    dtype = resolve_precision(model_config(args).precision, torch.device("cpu"))
    dtype = str(dtype).replace("torch.", "") if dtype else "fp32"
    common = (f"AG's News |T|=10, pattern {args.pattern}, labelled batch 4 + unlabelled batch 4 (aux MLM loss), "
              f"dynamic padding, {dtype} autocast, AdamW + clip; median of {n} steps interleaved step by step")
    records = [
        record("training: pet_core step", 1 / pet, "steps/s",
               common + "; _fit's step from the same pet_core calls: MLM head only at the mask / the 15 % masked "
               f"positions. train_pvp itself (not interleaved): {1 / real:.3f} steps/s"),
        record("training: baseline full-head step", 1 / base, "steps/s",
               "same batches and masks; AutoModelForMaskedLM forward (head at every position), `labels` for the "
               "MLM loss"),
        record("training speed ratio pet_core / baseline", ratio, "x", "per-step-pair time ratio, median"),
    ]
    if times.get("ref"):
        ref = statistics.median(times["ref"])
        ref_ratio = statistics.median(r / p for r, p in zip(times["ref"], times["pet"], strict=False))
        records += [
            record(f"training: reference-style step (pad to {args.max_seq_length}, full head)", 1 / ref, "steps/s",
                   f"the baseline with every batch padded to max_seq_length; {n_ref} steps"),
            record("training speed ratio pet_core / reference-style", ref_ratio, "x",
                   "per-step ratio against the interleaved pet_core step, median"),
        ]
    return records + bench_optimizer(args)
