"""Speed benchmark: is pet_core fast by construction? Ratios measured within one run, plus a FLOPs estimate.

Measures (A and B repetitions interleaved, medians reported, so a shared machine biases both alike):

1. scoring throughput of ``PVPModel.predict`` vs a bare ``AutoModelForMaskedLM`` forward (bf16/auto and fp32);
2. padding efficiency of length-sorted vs file-order batches vs padding to max_seq_length;
3. PVP training steps/s of ``train_pvp`` vs a plain full-vocabulary-head loop on the same model and batches;
4. wall time of a small ``pet_core.pipeline.run`` and of its cached rerun (and of the Prefect flow, if present);
5. peak RSS of streaming ``pet_core.scoring.score`` over 10k vs 1M Parquet rows (tiny model, fresh subprocesses);
6. FLOPs per stage of the benchmark setting, on paper, with the time at a given accelerator peak.

Writes ``benchmarks/results/speed.json`` and prints markdown tables.

    python benchmarks/speed.py            # full run: ~12 min on 2 idle CPU cores, 20+ min under load
    python benchmarks/speed.py --quick    # a few minutes: fewer examples, reps and rows
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # as the CLI does; also keeps forks quiet
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
SHARED = ROOT.parent / "shared"

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

Record = dict[str, Any]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="Fast variant: fewer examples, reps, steps, rows.")
    parser.add_argument("--backbone", default=str(SHARED / "models/minilm-l6-mlm"))
    parser.add_argument("--data", default=str(SHARED / "data/ag_news/train.csv"), help="AG's News train CSV.")
    parser.add_argument("--test-data", default=str(SHARED / "data/ag_news/test.csv"))
    parser.add_argument("--task", default=str(ROOT / "data/tasks/ag_news.yaml"))
    parser.add_argument("--sections", nargs="+", default=["score", "padding", "train", "pipeline", "rss", "flops"],
                        choices=["score", "padding", "train", "pipeline", "rss", "flops"])
    parser.add_argument("--n-examples", type=int, default=None, help="Examples scored (default 1000; quick 256).")
    parser.add_argument("--fp32-examples", type=int, default=None,
                        help="Examples of the fp32 scoring comparison (default 500; quick 128).")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--max-seq-length", type=int, default=256, help="The reference implementation's length.")
    parser.add_argument("--pattern", type=int, default=0)
    parser.add_argument("--reps", type=int, default=None, help="Interleaved repetitions (default 3; quick 1).")
    parser.add_argument("--train-steps", type=int, default=None, help="Timed steps per round (default 5; quick 3).")
    parser.add_argument("--train-rounds", type=int, default=None, help="Interleaved rounds (default 3; quick 1).")
    parser.add_argument("--ref-train-steps", type=int, default=None,
                        help="Steps per round of the reference-style loop padded to max_seq_length (0 = skip).")
    parser.add_argument("--no-prefect", action="store_true", help="Skip the Prefect flow timing.")
    parser.add_argument("--prefect-store", choices=["shared", "fresh"], default="shared",
                        help="shared: the Prefect runs use the store pipeline.run filled (its first run finds every "
                        "stage done, as the design promises); fresh: an empty store (a full first run: slow on CPU).")
    parser.add_argument("--rows", type=int, nargs=2, default=None, metavar=("SMALL", "LARGE"),
                        help="Rows of the two RSS scoring runs (default 10000 1000000; quick 10000 100000).")
    parser.add_argument("--peak-tflops", type=float, default=312.0, help="Accelerator peak (A100 bf16: 312).")
    parser.add_argument("--mfu", type=float, default=0.4, help="Assumed model FLOPs utilisation.")
    parser.add_argument("--threads", type=int, default=0,
                        help="torch intra-op threads of this process (0 = torch's default: one per core).")
    parser.add_argument("--rss-budget-min", type=float, default=12.0,
                        help="If the large RSS run would take longer than this, score 300k rows instead.")
    parser.add_argument("--rss-threads", type=int, default=1,
                        help="torch intra-op threads of the RSS scoring children (0 = torch's default).")
    parser.add_argument("--workdir", default=None, help="Scratch folder (default: a temp dir, removed).")
    parser.add_argument("--out", default=str(ROOT / "benchmarks/results/speed.json"))
    parser.add_argument("--rss-child", nargs=3, metavar=("MODEL_DIR", "PARQUET", "OUT"), help=argparse.SUPPRESS)
    parser.add_argument("--read-child", nargs=2, metavar=("PARQUET", "MODE"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    quick = args.quick
    defaults = {"n_examples": 256 if quick else 1000, "fp32_examples": 128 if quick else 500,
                "reps": 1 if quick else 3, "train_steps": 3 if quick else 5,
                "train_rounds": 1 if quick else 3, "ref_train_steps": 2,
                "rows": [10_000, 100_000] if quick else [10_000, 1_000_000]}
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    return args


def record(name: str, value: float | None, unit: str, detail: str = "", target: str | None = None) -> Record:
    return {"name": name, "value": None if value is None else round(float(value), 4), "unit": unit,
            "detail": detail, "target": target}


def timed(fn, *a, **k) -> tuple[float, Any]:
    start = time.perf_counter()
    out = fn(*a, **k)
    return time.perf_counter() - start, out


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# -- shared inputs ------------------------------------------------------------------------------------------
def ag_news(args: argparse.Namespace, n: int | None = None):
    from pet_core.data import DataSource, load_examples
    from pet_core.spec import TaskSpec

    spec = TaskSpec.from_yaml(args.task)
    table = load_examples(DataSource(path=args.data), spec)
    return spec, (table if n is None else table.slice(0, n))


def model_config(args: argparse.Namespace, precision: str = "auto"):
    from pet_core.config import ModelConfig

    return ModelConfig(backbone=args.backbone, max_seq_length=args.max_seq_length, device="cpu",
                       precision=precision)


def texts(table: pa.Table) -> tuple[list[str], list[str | None]]:
    return table.column("a").to_pylist(), table.column("b").to_pylist()


# -- 1. scoring throughput ----------------------------------------------------------------------------------
def bare_forward(mlm, encoded, batch_size: int, flat_ids: list[int], owner: list[int], n_labels: int) -> np.ndarray:
    """The baseline: file order, dynamic padding per batch, full model(**batch) (head at every position)."""
    from pet_core.modeling import collate, label_scores

    pad = mlm.tokenizer.pad_token_id or 0
    out = np.zeros((len(encoded), n_labels), dtype=np.float32)
    with torch.inference_mode():
        for start in range(0, len(encoded), batch_size):
            idx = list(range(start, min(start + batch_size, len(encoded))))
            batch = collate(encoded, idx, pad)
            with mlm.autocast():
                logits = mlm.model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
                at_mask = logits[torch.arange(len(idx)), batch.mask_positions[:, 0]].float()
                out[idx] = label_scores(at_mask, flat_ids, owner, n_labels).numpy()
    return out


def bench_scoring(args: argparse.Namespace, ctx: dict[str, Any]) -> list[Record]:
    from pet_core.modeling import MaskedLM
    from pet_core.pvp import PVP
    from pet_core.pvp_model import PVPModel

    spec, full = ag_news(args, max(args.n_examples, args.fp32_examples))
    bs = args.batch_size
    records: list[Record] = []
    for precision, n, reps in (("auto", args.n_examples, args.reps), ("fp32", args.fp32_examples, args.reps)):
        a, b = texts(full.slice(0, n))
        mlm = MaskedLM.load(model_config(args, precision))
        mlm.model.eval()
        dtype = str(mlm.autocast_dtype).replace("torch.", "") if mlm.autocast_dtype else "fp32"
        pvp_model = PVPModel(mlm, PVP(spec, args.pattern, mlm.tokenizer, args.max_seq_length))
        flat, owner = pvp_model.pvp.verbalizer.single_token_ids()
        encode_s, encoded = timed(pvp_model.pvp.encode_texts, a, b)
        # warm-up both paths (allocator, oneDNN kernels)
        pvp_model.predict(a[:bs], b[:bs], batch_size=bs)
        bare_forward(mlm, encoded[:bs], bs, flat, owner, pvp_model.n_labels)
        base_t, pet_t = [], []
        for rep in range(reps):
            order = ("base", "pet") if rep % 2 == 0 else ("pet", "base")
            for which in order:
                if which == "base":
                    t, base_out = timed(bare_forward, mlm, encoded, bs, flat, owner, pvp_model.n_labels)
                    base_t.append(t)
                else:
                    t, pet_out = timed(pvp_model.predict, a, b, batch_size=bs)
                    pet_t.append(t)
            log(f"scoring {dtype} rep {rep + 1}/{reps}: bare {base_t[-1]:.2f}s, pet_core {pet_t[-1]:.2f}s")
        agree = float((pet_out.argmax(1) == base_out.argmax(1)).mean())
        max_diff = float(np.abs(pet_out - base_out).max())
        base_eps, pet_eps = n / statistics.median(base_t), n / statistics.median(pet_t)
        ratio = statistics.median(b_ / p_ for b_, p_ in zip(base_t, pet_t, strict=True))
        common = (f"{n} AG's News examples, pattern {args.pattern}, batch {bs}, {dtype}, inference_mode, "
                  f"median of {reps} interleaved reps")
        suffix = "" if precision == "auto" else " (fp32)"
        records += [
            record(f"scoring: bare model(**batch) forward{suffix}", base_eps, "examples/s",
                   common + "; file order, dynamic padding per batch, MLM head at every position"),
            record(f"scoring: pet_core PVPModel.predict{suffix}", pet_eps, "examples/s",
                   common + f"; includes tokenization ({n / encode_s:.0f} examples/s alone)"),
            record(f"scoring throughput ratio pet_core / bare{suffix}", ratio, "x",
                   f"per-rep time ratio, median; argmax agrees on {agree:.1%} of examples "
                   f"(max |Δ label logit| {max_diff:.3f})", ">= 0.9"),
        ]
        if precision == "auto":
            ctx["score_eps"] = pet_eps
            ctx["score_dtype"] = dtype
            ctx["encoded"] = encoded
            ctx["n_params"] = count_params(mlm.model)
        mlm.release()
        del pvp_model, mlm
    return records


def count_params(model) -> dict[str, int]:
    base = model.base_model
    non_embedding = sum(p.numel() for name, p in base.named_parameters() if "embeddings" not in name)
    return {"non_embedding": non_embedding, "hidden": model.config.hidden_size,
            "layers": model.config.num_hidden_layers, "vocab": model.config.vocab_size}


# -- 2. padding -------------------------------------------------------------------------------------------
def bench_padding(args: argparse.Namespace, ctx: dict[str, Any]) -> list[Record]:
    from pet_core.modeling import length_sorted_batches

    encoded = ctx.get("encoded")
    if encoded is None:
        encoded = encode_only(args)
    lengths = np.array([len(e.input_ids) for e in encoded])
    bs, n = args.batch_size, len(encoded)
    real = int(lengths.sum())
    naive = sum(int(lengths[s : s + bs].max()) * len(lengths[s : s + bs]) for s in range(0, n, bs))
    sorted_pad = sum(int(lengths[idx].max()) * len(idx) for idx in length_sorted_batches(encoded, bs))
    full = n * args.max_seq_length
    truncated = sum(1 for e in encoded if e.truncated)
    ctx["mean_tokens"] = float(lengths.mean())
    detail = (f"{n} examples, batch {bs}; {real} real tokens, mean {lengths.mean():.1f}, max {lengths.max()}, "
              f"{truncated} truncated at {args.max_seq_length}")
    return [
        record("padding efficiency, length-sorted batches (pet_core)", real / sorted_pad, "real/padded tokens",
               detail + f"; {sorted_pad} padded tokens"),
        record("padding efficiency, file-order batches", real / naive, "real/padded tokens",
               f"{naive} padded tokens"),
        record(f"padding efficiency, pad to max_seq_length={args.max_seq_length} (reference)", real / full,
               "real/padded tokens", f"{full} padded tokens"),
        record("padded tokens, file order / length-sorted", naive / sorted_pad, "x", "encoder work saved by sorting"),
        record(f"padded tokens, pad-to-{args.max_seq_length} / length-sorted", full / sorted_pad, "x",
               "encoder work saved vs the reference's fixed-length padding"),
    ]


def encode_only(args: argparse.Namespace):
    from transformers import AutoTokenizer

    from pet_core.pvp import PVP

    spec, table = ag_news(args, args.n_examples)
    tokenizer = AutoTokenizer.from_pretrained(args.backbone)
    return PVP(spec, args.pattern, tokenizer, args.max_seq_length).encode_texts(*texts(table))


# -- 3. training steps/s ----------------------------------------------------------------------------------
class StepTimer:
    """A pet_core callback: a timestamp at the start and after every optimizer step."""

    def __init__(self):
        self.stamps: list[float] = []

    def on_stage_begin(self, stage, total):
        self.stamps = [time.perf_counter()]

    def on_progress(self, stage, done, total, **metrics):
        self.stamps.append(time.perf_counter())

    def on_stage_end(self, stage, metrics):
        pass


def train_tables(args: argparse.Namespace, n_unlabeled: int = 400):
    from pet_core.data import sample_split

    spec, pool = ag_news(args)
    labeled, unlabeled = sample_split(pool, 10, n_unlabeled, 1)
    return spec, labeled, unlabeled


def baseline_trainer(args: argparse.Namespace, spec, labeled, unlabeled, pad_to: int | None = None):
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


def petcore_trainer(args: argparse.Namespace, spec, labeled, unlabeled):
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
    from pet_core.pvp_model import PVPModel
    from pet_core.training import label_indices

    generator = seed_everything(1)
    mlm = MaskedLM.load(model_config(args))
    pvp_model = PVPModel(mlm, PVP(spec, args.pattern, mlm.tokenizer, args.max_seq_length))
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
            logits = pvp_model.batch_logits(encodings, idx).float()
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


# -- 4. pipeline and cached rerun ----------------------------------------------------------------------------
def small_run_config(args: argparse.Namespace, store: Path, runs: Path):
    from pet_core.config import DistillConfig, ModelConfig, TrainConfig
    from pet_core.data import DataSource
    from pet_core.run_config import DataConfig, RunConfig

    return RunConfig(
        name="speed-bench",
        task=str(Path(args.task).resolve()),
        data=DataConfig(pool=DataSource(path=str(Path(args.data).resolve())),
                        test=DataSource(path=str(Path(args.test_data).resolve())),
                        n_labeled=10, n_unlabeled=200, n_test=200, seed=1),
        model=ModelConfig(backbone=str(Path(args.backbone).resolve())),
        patterns=[0, 1], seeds=[1],
        train=TrainConfig(max_steps=10, grad_accumulation=1, unlabeled_ratio=1), distill=DistillConfig(max_steps=10),
        store=str(store), runs_dir=str(runs),
    )


def bench_pipeline(args: argparse.Namespace, work: Path) -> list[Record]:
    from pet_core.pipeline import run

    config = small_run_config(args, work / "store-plain", work / "runs")
    first_s, _ = timed(run, config)
    log(f"pipeline first run {first_s:.1f}s")
    second_s, second = timed(run, config)
    log(f"pipeline rerun {second_s:.1f}s")
    cached = sum(r.cached for r in second.records)
    setting = ("AG's News, |T|=10, |D|=200, test 200, 2 patterns × 1 seed, train.max_steps 10 (grad_accumulation 1, "
               "unlabeled_ratio 1), distill.max_steps 10, empty store")
    records = [
        record("pipeline.run, first run", first_s, "s", setting),
        record("pipeline.run, cached rerun", second_s, "s",
               f"same process, same store: {cached}/{len(second.records)} listed stages from the store "
               "(outputs re-hashed)", "<= 10"),
        record("pipeline.run, rerun / first", second_s / first_s, "x", ""),
    ]
    # the same rerun from a fresh interpreter: what `petflow run` pays without Prefect (imports included)
    import yaml

    path = work / "speed-bench-plain.yaml"
    path.write_text(yaml.safe_dump(config.to_dict(), sort_keys=False), encoding="utf-8")
    snippet = ("import sys, time; t = time.perf_counter(); sys.path.insert(0, sys.argv[2]); "
               "from pet_core.run_config import RunConfig; from pet_core.pipeline import run; "
               "r = run(RunConfig.from_yaml(sys.argv[1])); "
               "print(sum(x.cached for x in r.records), len(r.records), 'torch' in sys.modules, "
               "round(time.perf_counter() - t, 2))")
    fresh_s, proc = timed(subprocess.run, [sys.executable, "-c", snippet, str(path), str(ROOT)], cwd=ROOT,
                          capture_output=True, text=True, check=False)
    if proc.returncode == 0:
        cached_n, total_n, torch_loaded, inner = proc.stdout.strip().splitlines()[-1].split()
        records.append(record("pipeline.run, cached rerun in a fresh interpreter", fresh_s, "s",
                              f"{cached_n}/{total_n} stages cached; torch imported: {torch_loaded}; "
                              f"{inner} s after interpreter start", "<= 10"))
    else:
        tail = " | ".join(proc.stderr.strip().splitlines()[-2:])
        records.append(record("pipeline.run, cached rerun in a fresh interpreter", None, "s", f"failed: {tail}"))
    return records + bench_prefect(args, work, config)


def bench_prefect(args: argparse.Namespace, work: Path, plain_config) -> list[Record]:
    import yaml

    if args.no_prefect:
        return []
    env = {**os.environ, "PREFECT_HOME": str(work / "prefect-home"), "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
           "PREFECT_LOGGING_LEVEL": "WARNING"}
    env.pop("PREFECT_API_URL", None)  # ephemeral mode
    import_s, probe = timed(subprocess.run, [sys.executable, "-c", "import flows.cli, flows.pipeline"], cwd=ROOT,
                            env=env, capture_output=True, text=True, check=False)
    if not (ROOT / "flows/pipeline.py").exists() or probe.returncode != 0:
        why = probe.stderr.strip().splitlines()[-1] if probe.stderr.strip() else "flows/pipeline.py missing"
        return [record("Prefect flow, cached rerun", None, "s", f"skipped: flows.pipeline does not import ({why})")]
    store = Path(plain_config.store) if args.prefect_store == "shared" else work / "store-prefect"
    config = small_run_config(args, store, work / "runs-prefect")
    path = work / "speed-bench.yaml"
    path.write_text(yaml.safe_dump(config.to_dict(), sort_keys=False), encoding="utf-8")
    times, inside = [], []
    for attempt in ("first", "rerun"):
        started = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "flows.cli", "run", str(path)], cwd=ROOT, env=env,
                              capture_output=True, text=True, check=False)
        times.append(time.perf_counter() - started)
        log(f"prefect {attempt} {times[-1]:.1f}s (exit {proc.returncode})")
        if proc.returncode != 0:
            tail = " | ".join((proc.stderr or proc.stdout).strip().splitlines()[-3:])
            return [record(f"Prefect flow, {attempt} run", None, "s", f"failed (exit {proc.returncode}): {tail}")]
        manifests = sorted((work / "runs-prefect").glob("*/manifest.json"), key=lambda m: m.stat().st_mtime)
        if manifests:
            manifest = json.loads(manifests[-1].read_text(encoding="utf-8"))
            stages = manifest.get("stages", [])
            inside.append(f"{attempt}: {sum(bool(x.get('cached')) for x in stages)}/{len(stages)} stages cached, "
                          f"{manifest.get('wall_s')} s inside the flow")
    detail = ("`python -m flows.cli run CONFIG` in a fresh process, Prefect ephemeral mode, new PREFECT_HOME, "
              + ("the store pipeline.run filled (every stage already done)" if args.prefect_store == "shared"
                 else "empty store") + "; includes interpreter start, imports and the ephemeral server")
    first = "first run on the shared store" if args.prefect_store == "shared" else "first run"
    return [
        record(f"Prefect flow, {first}", times[0], "s", detail + ("; " + inside[0] if inside else "")),
        record("Prefect flow, cached rerun", times[1], "s", inside[1] if len(inside) > 1 else "", "<= 10"),
        record("Prefect: interpreter start + import flows.cli, flows.pipeline", import_s, "s",
               "part of every CLI run, cached or not (torch is not imported yet)"),
        record("Prefect flow, rerun / first", times[1] / times[0], "x", ""),
    ]


# -- 5. peak RSS of streamed scoring --------------------------------------------------------------------------
def tiny_backbone(out_dir: Path) -> Path:
    """tests/_petcore_support.build_tiny_mlm when importable, else the same recipe."""
    sys.path.insert(0, str(ROOT / "tests"))
    try:
        from _petcore_support import build_tiny_mlm

        return build_tiny_mlm(out_dir)
    except ImportError:
        pass
    finally:
        sys.path.remove(str(ROOT / "tests"))
    from tokenizers import BertWordPieceTokenizer
    from transformers import BertConfig, BertForMaskedLM, BertTokenizerFast

    words = ["world", "sports", "business", "tech", "news", "category", "the", "a", "of", "in", "and", "to"]
    corpus = [" ".join(np.random.default_rng(i).permutation(words)) for i in range(200)] + [": - ( ) [ ]"]
    wordpiece = BertWordPieceTokenizer(lowercase=True)
    wordpiece.train_from_iterator(corpus, vocab_size=700, min_frequency=1, show_progress=False,
                                  special_tokens=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"])
    tokenizer = BertTokenizerFast(tokenizer_object=wordpiece._tokenizer, do_lower_case=True, model_max_length=128)
    torch.manual_seed(0)
    model = BertForMaskedLM(BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                       intermediate_size=64, vocab_size=len(tokenizer), max_position_embeddings=128,
                                       pad_token_id=tokenizer.pad_token_id))
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
    return out_dir


def tiny_model_config(model_dir: Path):
    from pet_core.config import ModelConfig

    return ModelConfig(backbone=str(model_dir), max_seq_length=128, device="cpu")


def tiny_pvp_model(args: argparse.Namespace, work: Path) -> tuple[Path, list[str]]:
    """A tiny backbone fine-tuned for 3 steps with train_pvp: a model dir with train_record.json."""
    from transformers import AutoTokenizer

    from pet_core.artifacts import EXAMPLES_SCHEMA
    from pet_core.config import TrainConfig
    from pet_core.spec import TaskSpec
    from pet_core.training import train_pvp

    backbone = tiny_backbone(work / "tiny-backbone")
    vocab = AutoTokenizer.from_pretrained(backbone).get_vocab()
    words = sorted(w for w in vocab if w.isalpha() and len(w) > 1)
    spec = TaskSpec.from_yaml(args.task)
    rng = np.random.default_rng(0)
    n = 8
    labeled = pa.table({"example_id": [f"t{i}" for i in range(n)],
                        "a": [" ".join(rng.choice(words, 6)) for _ in range(n)],
                        "b": [" ".join(rng.choice(words, 15)) for _ in range(n)],
                        "label": [spec.label_names[i % len(spec.labels)] for i in range(n)]}, schema=EXAMPLES_SCHEMA)
    out = work / "tiny-pvp"
    train_pvp(spec, 0, 0, labeled, None, tiny_model_config(backbone), TrainConfig(max_steps=3, grad_accumulation=1),
              out)
    return out, words


def write_examples(path: Path, rows: int, words: list[str], row_group: int = 50_000) -> None:
    """Random texts from the tiny vocabulary: title 4–10 words, description 10–30 words, label null."""
    from pet_core.artifacts import EXAMPLES_SCHEMA

    rng = np.random.default_rng(rows)
    vocab = np.array(words)
    with pq.ParquetWriter(path, EXAMPLES_SCHEMA) as writer:
        for start in range(0, rows, row_group):
            n = min(row_group, rows - start)
            a_len, b_len = rng.integers(4, 11, n), rng.integers(10, 31, n)
            picks = vocab[rng.integers(0, len(vocab), (n, 40))]
            a = [" ".join(picks[i, : a_len[i]]) for i in range(n)]
            b = [" ".join(picks[i, 10 : 10 + b_len[i]]) for i in range(n)]
            writer.write_table(pa.table({"example_id": [f"u{start + i}" for i in range(n)], "a": a, "b": b,
                                         "label": pa.nulls(n, pa.string())}, schema=EXAMPLES_SCHEMA),
                               row_group_size=row_group)


def proc_status_kb(field: str) -> int:
    """VmRSS / VmHWM of this process in kB (VmHWM is per address space, so it starts afresh at exec;
    getrusage's ru_maxrss would include the parent's RSS copied at fork)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def rss_child(model_dir: str, parquet: str, out: str) -> None:
    """Runs in a fresh interpreter: score the Parquet file, print peak RSS and timings as JSON."""
    from pet_core.config import ScoreConfig
    from pet_core.scoring import score
    from pet_core.spec import TaskSpec

    args = parse_args([])
    threads = int(os.environ.get("SPEED_RSS_THREADS", "0"))
    if threads > 0:
        torch.set_num_threads(threads)
    spec = TaskSpec.from_yaml(args.task)
    before = proc_status_kb("VmRSS")
    started = time.perf_counter()
    summary = score(spec, model_dir, parquet, out, tiny_model_config(Path(model_dir)), ScoreConfig())
    wall = time.perf_counter() - started
    peak = proc_status_kb("VmHWM")
    print(json.dumps({"rows": summary["rows"], "wall_s": wall, "peak_rss_kb": peak, "rss_before_kb": before}))


def read_child(parquet: str, mode: str) -> None:
    """Runs in a fresh interpreter: only stream the example chunks (no model), print peak RSS as JSON.

    mode "pet_core": pet_core.scoring.iter_chunks as it is; "no_pre_buffer": the same read with
    ``pq.ParquetFile(path, pre_buffer=False)``."""
    from pet_core.scoring import iter_chunks

    before = proc_status_kb("VmRSS")
    if mode == "pet_core":
        chunks = iter_chunks(parquet, 4096)
    else:
        chunks = pq.ParquetFile(parquet, pre_buffer=False).iter_batches(batch_size=4096, columns=["example_id", "a", "b"])
    rows = 0
    for chunk in chunks:
        rows += len(chunk.column("a").to_pylist())
    print(json.dumps({"rows": rows, "peak_rss_kb": proc_status_kb("VmHWM"), "rss_before_kb": before}))


def read_only_rss(path: Path) -> dict[str, dict[str, int]]:
    out = {}
    for mode in ("pet_core", "no_pre_buffer"):
        proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--read-child", str(path), mode], cwd=ROOT,
                              capture_output=True, text=True, check=False)
        if proc.returncode == 0:
            out[mode] = json.loads(proc.stdout.strip().splitlines()[-1])
    return out


def bench_rss(args: argparse.Namespace, work: Path) -> list[Record]:
    model_dir, words = tiny_pvp_model(args, work)
    results: dict[int, dict[str, Any]] = {}
    reads: dict[int, dict[str, dict[str, int]]] = {}
    small, large = args.rows
    note = ""
    for rows in (small, large):
        if rows == large and large > 300_000:
            rate = results[small]["rows"] / results[small]["wall_s"]
            if large / rate / 60 > args.rss_budget_min:
                note = (f"; {large:,} rows would take ~{large / rate / 60:.0f} min at {rate:.0f} rows/s "
                        f"(> {args.rss_budget_min:g} min budget), so 300,000 were scored")
                large = rows = 300_000
        path = work / f"examples-{rows}.parquet"
        gen_s, _ = timed(write_examples, path, rows, words)
        log(f"wrote {rows} rows in {gen_s:.1f}s ({path.stat().st_size / 1e6:.0f} MB)")
        proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--rss-child", str(model_dir), str(path),
                               str(work / f"logits-{rows}.parquet")], cwd=ROOT, capture_output=True, text=True,
                              env={**os.environ, "SPEED_RSS_THREADS": str(args.rss_threads)}, check=False)
        if proc.returncode != 0:
            raise RuntimeError(f"scoring child failed: {proc.stderr[-2000:]}")
        results[rows] = json.loads(proc.stdout.strip().splitlines()[-1])
        out_rows = pq.ParquetFile(work / f"logits-{rows}.parquet").metadata.num_rows
        assert out_rows == rows, (out_rows, rows)
        log(f"scored {rows} rows in {results[rows]['wall_s']:.1f}s, peak RSS {results[rows]['peak_rss_kb'] / 1024:.0f} MB")
        reads[rows] = read_only_rss(path)
        path.unlink()
    rs, rl = results[small], results[large]
    threads = args.rss_threads or torch.get_num_threads()
    detail = ("pet_core.scoring.score on a tiny BERT (hidden 32, 2 layers) PVP model dir, Parquet in 50k-row groups, "
              f"chunk_rows 4096, precision auto, {threads} torch thread(s), fresh subprocess each, peak = VmHWM")
    return [
        record(f"peak RSS, scoring {small:,} rows", rs["peak_rss_kb"] / 1024, "MB",
               detail + f"; {rs['rows'] / rs['wall_s']:.0f} rows/s; RSS after imports "
               f"{rs['rss_before_kb'] / 1024:.0f} MB"),
        record(f"peak RSS, scoring {large:,} rows", rl["peak_rss_kb"] / 1024, "MB",
               f"{rl['rows'] / rl['wall_s']:.0f} rows/s, {rl['wall_s']:.0f} s" + note),
        record(f"peak RSS ratio {large:,} / {small:,} rows", rl["peak_rss_kb"] / rs["peak_rss_kb"], "x",
               "memory bounded by the chunk, not by |D|", "<= 1.2"),
        record(f"peak RSS above the post-import baseline, {large:,} / {small:,} rows",
               (rl["peak_rss_kb"] - rl["rss_before_kb"]) / (rs["peak_rss_kb"] - rs["rss_before_kb"]), "x",
               f"{(rs['peak_rss_kb'] - rs['rss_before_kb']) / 1024:.0f} MB vs "
               f"{(rl['peak_rss_kb'] - rl['rss_before_kb']) / 1024:.0f} MB: the scoring's own memory"),
    ] + read_records(reads, small, large)


def read_records(reads: dict[int, dict[str, dict[str, int]]], small: int, large: int) -> list[Record]:
    """Peak RSS growth of reading alone: pet_core's iter_chunks vs the same read with pre_buffer=False."""
    records = []
    for mode, label in (("pet_core", "pet_core.scoring.iter_chunks"), ("no_pre_buffer", "ParquetFile(pre_buffer=False)")):
        if mode in reads.get(small, {}) and mode in reads.get(large, {}):
            grow = [(reads[n][mode]["peak_rss_kb"] - reads[n][mode]["rss_before_kb"]) / 1024 for n in (small, large)]
            records.append(record(f"reading only, {label}: peak RSS growth {large:,} rows", grow[1], "MB",
                                  f"{grow[0]:.0f} MB for {small:,} rows; no model, the same chunks of 4096 rows, "
                                  "fresh subprocess"))
    return records


# -- 6. FLOPs per stage -------------------------------------------------------------------------------------
def flops_table(args: argparse.Namespace, ctx: dict[str, Any]) -> list[dict[str, Any]]:
    """FLOPs per stage of the benchmark setting (forward ≈ 2·N_nonemb + 2·L·T·d per token, training ≈ 3×)."""
    from transformers import AutoConfig, AutoTokenizer

    config = AutoConfig.from_pretrained(args.backbone)
    d, layers, vocab = config.hidden_size, config.num_hidden_layers, config.vocab_size
    params = ctx.get("n_params", {}).get("non_embedding") or layers * (4 * d * d + 2 * d * config.intermediate_size)
    _, table = ag_news(args, args.n_examples)
    t_pet = ctx.get("mean_tokens") or float(np.mean([len(e.input_ids) for e in encode_only(args)]))
    tokenizer = AutoTokenizer.from_pretrained(args.backbone)
    a, b = texts(table)
    plain = tokenizer(a, [x or "" for x in b], truncation="longest_first", max_length=args.max_seq_length)
    t_cls = float(np.mean([len(x) for x in plain["input_ids"]]))
    L = args.max_seq_length

    def enc(tokens: float) -> float:  # forward FLOPs of the encoder over one sequence of `tokens` tokens
        return tokens * (2 * params + 2 * layers * tokens * d)

    head = 2 * (d * d + d * vocab)  # MLM head (transform + decoder) at one position
    # pet_core: head at the mask (label scores) and at 15 % of D's tokens (aux MLM loss)
    train_step = 3 * (4 * (enc(t_pet) + head) + 4 * (enc(t_pet) + 0.15 * t_pet * head))
    ref_step = 3 * (8 * (enc(L) + L * head))  # reference: padded to L, head at every position
    n_models, steps, n_d, n_test = 4, 100, 2000, 2600
    distill_step = 3 * 16 * (enc(t_cls) + 2 * d * d)
    stages = [
        ("train (PVP, 4 patterns × 100 steps, batch 4+4)", n_models * steps * train_step,
         n_models * steps * ref_step, "train"),
        ("score D (4 models × 2,000)", n_models * n_d * (enc(t_pet) + head), n_models * n_d * (enc(L) + L * head),
         "score"),
        ("score test (4 models × 2,600)", n_models * n_test * (enc(t_pet) + head),
         n_models * n_test * (enc(L) + L * head), "score"),
        ("distill (125 steps × 16)", 125 * distill_step, 125 * 3 * 16 * (enc(L) + 2 * d * d), "train"),
        ("evaluate (2,600)", n_test * enc(t_cls), n_test * enc(L), "score"),
    ]
    rate = args.peak_tflops * 1e12 * args.mfu
    cpu_rates = {}
    if "score_eps" in ctx:
        cpu_rates["score"] = ctx["score_eps"] * (enc(t_pet) + head)
    if "train_step_s" in ctx:
        cpu_rates["train"] = train_step / ctx["train_step_s"]
    rows = []
    for name, flops, ref_flops, kind in stages:
        cpu = flops / cpu_rates[kind] if kind in cpu_rates else None
        rows.append({"stage": name, "tflops": flops / 1e12, "reference_tflops": ref_flops / 1e12,
                     "accelerator_s": flops / rate, "this_cpu_s": cpu})
    total = {"stage": "total", "tflops": sum(r["tflops"] for r in rows),
             "reference_tflops": sum(r["reference_tflops"] for r in rows),
             "accelerator_s": sum(r["accelerator_s"] for r in rows),
             "this_cpu_s": sum(r["this_cpu_s"] for r in rows) if all(r["this_cpu_s"] for r in rows) else None}
    ctx["flops_assumptions"] = {
        "non_embedding_params": params, "hidden": d, "layers": layers, "vocab": vocab,
        "mean_tokens_pattern": round(t_pet, 1), "mean_tokens_classifier": round(t_cls, 1),
        "forward_flops_per_token": "2*N_nonemb + 2*L*T*d", "training": "3x forward",
        "mlm_head_flops_per_position": head, "accelerator": f"{args.peak_tflops} TFLOP/s × {args.mfu:.0%} MFU",
        "reference": f"padded to {L}, MLM head at every position",
        "this_cpu": {k: f"{v / 1e9:.1f} GFLOP/s effective" for k, v in cpu_rates.items()},
    }
    return rows + [total]


# -- output -------------------------------------------------------------------------------------------------
def machine_info() -> dict[str, Any]:
    from pet_core.modeling import cpu_supports_bf16

    cpu = platform.processor()
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
        cpu = next(line.split(":", 1)[1].strip() for line in lscpu.splitlines() if line.startswith("Model name"))
    except (OSError, StopIteration):
        pass
    mem = next((line.split()[1] for line in Path("/proc/meminfo").read_text().splitlines()
                if line.startswith("MemTotal")), "0")
    import transformers

    return {"nproc": os.cpu_count(), "cpu": cpu, "ram_gb": round(int(mem) / 1024**2, 1),
            "torch_threads": torch.get_num_threads(), "cpu_bf16": cpu_supports_bf16(),
            "python": platform.python_version(), "torch": torch.__version__, "transformers": transformers.__version__,
            "platform": platform.platform(), "load_avg_start": os.getloadavg()}


def fmt(value: float | None) -> str:
    if value is None:
        return "–"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.3g}" if abs(value) < 1 else f"{value:.2f}"


def markdown(records: list[Record], flops: list[dict[str, Any]] | None, args: argparse.Namespace) -> str:
    lines = ["| measurement | value | unit | target | detail |", "|---|---|---|---|---|"]
    for r in records:
        lines.append(f"| {r['name']} | {fmt(r['value'])} | {r['unit']} | {r['target'] or ''} | {r['detail']} |")
    if flops:
        header = (f"| stage | TFLOPs (pet_core) | TFLOPs (pad {args.max_seq_length}, full head) | "
                  f"s at {args.peak_tflops:g} TFLOP/s × {args.mfu:.0%} | s on this CPU (est.) |")
        lines += ["", header, "|---|---|---|---|---|"]
        for r in flops:
            lines.append(f"| {r['stage']} | {r['tflops']:.2f} | {r['reference_tflops']:.2f} | "
                         f"{r['accelerator_s']:.3f} | {fmt(r['this_cpu_s'])} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.rss_child:
        rss_child(*args.rss_child)
        return
    if args.read_child:
        read_child(*args.read_child)
        return
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    started = time.perf_counter()
    info = machine_info()
    work = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="petflow-speed-"))
    work.mkdir(parents=True, exist_ok=True)
    ctx: dict[str, Any] = {}
    records: list[Record] = []
    flops = None
    sections = {
        "score": lambda: bench_scoring(args, ctx),
        "padding": lambda: bench_padding(args, ctx),
        "train": lambda: bench_training(args, ctx, work),
        "pipeline": lambda: bench_pipeline(args, work),
        "rss": lambda: bench_rss(args, work),
    }
    section_s = {}
    try:
        for name, fn in sections.items():
            if name in args.sections:
                log(f"section {name}")
                section_s[name], new = timed(fn)
                records += new
        if "flops" in args.sections:
            flops = flops_table(args, ctx)
    finally:
        if not args.workdir:
            shutil.rmtree(work, ignore_errors=True)
    info["load_avg_end"] = os.getloadavg()
    total = time.perf_counter() - started
    table = markdown(records, flops, args)
    print(table)
    result = {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "command": " ".join(["python benchmarks/speed.py", *(argv if argv is not None else sys.argv[1:])]),
        "quick": args.quick, "machine": info, "backbone": args.backbone, "records": records,
        "flops": {"rows": flops, "assumptions": ctx.get("flops_assumptions")} if flops else None,
        "section_s": {k: round(v, 1) for k, v in section_s.items()}, "total_s": round(total, 1),
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    log(f"wrote {out} in {total:.0f}s")


if __name__ == "__main__":
    main()
