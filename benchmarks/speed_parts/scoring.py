"""Sections 1–2: scoring throughput of ClozeModel.predict vs a bare MLM forward, and padding efficiency."""

from __future__ import annotations

import argparse
import statistics
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from benchmarks.speed_parts.common import Record, ag_news, encode_only, log, model_config, record, texts, timed

if TYPE_CHECKING:
    from transformers import PreTrainedModel

    from pet_core.modeling import MaskedLM
    from pet_core.pvp import Encoded


def bare_forward(mlm: MaskedLM, encoded: list[Encoded], batch_size: int, flat_ids: list[int], owner: list[int],
                 n_labels: int) -> np.ndarray:
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
    from pet_core.kinds.cloze.model import ClozeModel

    spec, full = ag_news(args, max(args.n_examples, args.fp32_examples))
    bs = args.batch_size
    records: list[Record] = []
    for precision, n, reps in (("auto", args.n_examples, args.reps), ("fp32", args.fp32_examples, args.reps)):
        a, b = texts(full.slice(0, n))
        mlm = MaskedLM.load(model_config(args, precision))
        mlm.model.eval()
        dtype = str(mlm.autocast_dtype).replace("torch.", "") if mlm.autocast_dtype else "fp32"
        pvp_model = ClozeModel(mlm, PVP(spec, args.pattern, mlm.tokenizer, args.max_seq_length))
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
            record(f"scoring: pet_core ClozeModel.predict{suffix}", pet_eps, "examples/s",
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


def count_params(model: PreTrainedModel) -> dict[str, int]:
    base = model.base_model
    non_embedding = sum(p.numel() for name, p in base.named_parameters() if "embeddings" not in name)
    return {"non_embedding": non_embedding, "hidden": model.config.hidden_size,
            "layers": model.config.num_hidden_layers, "vocab": model.config.vocab_size}


# -- padding -----------------------------------------------------------------------------------------------
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
