"""PET in the reference implementation's benchmark setting, against its measured numbers.

AG's News, |T| = 10 (seeded), |D| = 2,000, 4 patterns × 1 seed × 100 steps with the auxiliary MLM
loss (batch 4 labelled + 4 unlabelled, timoschick/pet's CLI defaults), distillation on D, evaluation
on the 2,600-row test file, backbone ../shared/models/minilm-l6-mlm; plus the supervised baseline
(same backbone, same T). timoschick/pet on these 2 cores: 2,416 s, 2.6 GB peak, pattern models 63.5 %
on average, ensemble 65.2 %, final classifier 41.4 %.

    python benchmarks/reference_setting.py   # prints a table, writes benchmarks/results/reference_setting.json
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import transformers  # noqa: E402

from benchmarks.quality import parse_args as quality_args  # noqa: E402
from benchmarks.quality import run_config, supervised  # noqa: E402
from pet_core.pipeline import run  # noqa: E402

REFERENCE = {"wall_s": 2416.0, "peak_rss_gb": 2.6, "pattern_mean": 0.635, "ensemble": 0.652, "final": 0.414}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--store", default=None, help="Artifact store (default: a fresh temp dir, so nothing is cached)")
    parser.add_argument("--out", default=str(ROOT / "benchmarks/results/reference_setting.json"))
    args = parser.parse_args()
    transformers.logging.set_verbosity_error()
    store = args.store or tempfile.mkdtemp(prefix="petflow-ref-")
    qargs = quality_args(["--dataset", "ag_news", "--n-unlabeled", "2000", "--train-steps", "100",
                          "--unlabeled-ratio", "1", "--distill-steps", "125", "--store", store])
    config = run_config(qargs, 10, args.seed, ipet=False)
    started = time.perf_counter()
    result = run(config)
    pet_wall = time.perf_counter() - started
    summary = result.summary(config.task_spec(), config)
    gen = summary["generations"][0]
    baseline = supervised(qargs, config)
    peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2
    ours = {"wall_s": round(pet_wall, 1), "peak_rss_gb": round(peak_gb, 2),
            "pattern_accuracy": gen["models"], "pattern_mean": statistics.mean(gen["models"].values()),
            "ensemble": gen["ensemble"]["accuracy"], "final": summary["final"]["accuracy"],
            "final_macro_f1": summary["final"]["macro_f1"], "supervised": baseline["accuracy"]}
    rows = [("wall time (s)", REFERENCE["wall_s"], ours["wall_s"]),
            ("peak RSS (GB)", REFERENCE["peak_rss_gb"], ours["peak_rss_gb"]),
            ("pattern models, mean acc", REFERENCE["pattern_mean"], ours["pattern_mean"]),
            ("ensemble acc", REFERENCE["ensemble"], ours["ensemble"]),
            ("final classifier acc", REFERENCE["final"], ours["final"])]
    print("| AG's News, |T|=10, |D|=2000, 4 patterns x 100 steps | timoschick/pet | petflow |")
    print("|---|---|---|")
    for name, ref, value in rows:
        print(f"| {name} | {ref:g} | {value:.3f} |" if value < 10 else f"| {name} | {ref:g} | {value:.1f} |")
    print(f"\ntime ratio petflow / reference: {ours['wall_s'] / REFERENCE['wall_s']:.3f} (target <= 0.15)")
    print(f"supervised baseline (same backbone, same T): {baseline['accuracy']:.3f}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"reference": REFERENCE, "petflow": ours, "seed": args.seed,
                               "time_ratio": ours["wall_s"] / REFERENCE["wall_s"],
                               "machine": platform.platform(), "config": config.to_dict()}, indent=2) + "\n")


if __name__ == "__main__":
    main()
