"""Speed benchmark: is pet_core fast by construction? Ratios measured within one run, plus a FLOPs estimate.

Measures (A and B repetitions interleaved, medians reported, so a shared machine biases both alike):

1. scoring throughput of ``ClozeModel.predict`` vs a bare ``AutoModelForMaskedLM`` forward (bf16/auto and fp32);
2. padding efficiency of length-sorted vs file-order batches vs padding to max_seq_length;
3. PVP training steps/s of ``train_pvp`` vs a plain full-vocabulary-head loop on the same model and batches;
4. wall time of a small ``pet_core.pipeline.run`` and of its cached rerun (and of the Prefect flow, if present);
5. peak RSS of streaming ``pet_core.scoring.score`` over 10k vs 1M Parquet rows (tiny model, fresh subprocesses);
6. FLOPs per stage of the benchmark setting, on paper, with the time at a given accelerator peak.

Writes ``benchmarks/results/speed.json`` and prints markdown tables. This file parses the flags, runs the
sections and writes the results; the measurements live in ``benchmarks/speed_parts/``.

    python benchmarks/speed.py            # full run: ~12 min on 2 idle CPU cores, 20+ min under load
    python benchmarks/speed.py --quick    # a few minutes: fewer examples, reps and rows
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
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

import torch

from benchmarks.speed_parts.common import SHARED, Record, log, timed
from benchmarks.speed_parts.flops import flops_table
from benchmarks.speed_parts.peak_rss import bench_rss, read_child, rss_child
from benchmarks.speed_parts.pipeline_rerun import bench_pipeline
from benchmarks.speed_parts.scoring import bench_padding, bench_scoring
from benchmarks.speed_parts.training import bench_training


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
        rss_child(*args.rss_child, task=args.task)
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
