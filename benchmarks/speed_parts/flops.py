"""Section 6: FLOPs per stage of the benchmark setting, on paper, with times at an accelerator peak and on this CPU."""

from __future__ import annotations

import argparse
from typing import Any

import numpy as np

from benchmarks.speed_parts.common import ag_news, encode_only, texts


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
