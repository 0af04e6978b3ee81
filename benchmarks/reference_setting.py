"""PET on the reference implementation's exact draws, against timoschick/pet's measured numbers.

AG's News pool ``../shared/data/ag_news/train.csv`` read with pandas: ``T = pool.sample(n=10,
random_state=0)`` (labels 2,1,3,3,4,3,2,2,2,2, asserted), ``D = pool.drop(T.index).sample(n=2000,
random_state=1)``, test = the first 1,000 rows of ``test.csv``. T, D and test are written as Parquet
files (original columns) and a RunConfig takes T as its pool (all 10 rows drawn, ``n_unlabeled: 0``),
D as ``data.unlabeled`` and test as ``data.test``; ``prepare``'s T is checked to equal the reference's.
4 patterns (PET's AG's patterns 0-3) × 1 seed × 100 steps with the auxiliary MLM loss, batch 4
labelled + 4 unlabelled (``unlabeled_ratio`` 1, ``grad_accumulation`` 1), lr 1e-5, max_seq_length
128, backbone ``../shared/models/minilm-l6-mlm``; distillation with ``DistillConfig``'s defaults of
the day (change them only with ``--set distill.KEY=VALUE``); plus the supervised baseline (the same
backbone as a sequence classifier on the same T, with the run's distill config).

timoschick/pet on these draws, same 2 cores: pattern models 63.5 % on average, ensemble 65.2 %, final
classifier 41.4 %, wall 2,416 s, peak RSS 2,621 MB. Our peak RSS is ``getrusage(RUSAGE_SELF).ru_maxrss``
of this process, so it includes the imports (torch, transformers, pyarrow) and, with the baseline
on, is read right after PET, before the baseline runs. Wall is ``pipeline.run`` alone, with the
pipeline's own baseline switched off (``baseline: false``, where RunConfig has it) and run separately.

    python benchmarks/reference_setting.py                   # writes benchmarks/results/reference_setting.json
    python benchmarks/reference_setting.py --threads 2 --set distill.learning_rate=5e-5
    python benchmarks/reference_setting.py --quick --threads 1   # tiny check (|D| 32, 40 test rows, 2 steps)
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
from typing import Any

import pandas as pd
import yaml

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
sys.path.insert(0, str(ROOT))

REFERENCE = {"wall_s": 2416.0, "peak_rss_mb": 2621.0, "pattern_mean": 0.635, "ensemble": 0.652, "final": 0.414}
REFERENCE_T_LABELS = [2, 1, 3, 3, 4, 3, 2, 2, 2, 2]
POOL, TEST = SHARED / "data/ag_news/train.csv", SHARED / "data/ag_news/test.csv"


def read_table(path: Path) -> pd.DataFrame:
    """A CSV/TSV as strings, read the way pet_core reads it (same rows and index as a default read)."""
    tsv = path.suffix.lower() == ".tsv"
    return pd.read_csv(path, sep="\t" if tsv else ",", dtype=str, keep_default_na=False,
                       quoting=3 if tsv else 0)


def write_draws(work: Path, t: pd.DataFrame, d: pd.DataFrame, test: pd.DataFrame) -> dict[str, str]:
    """T, D and test as Parquet files with their original columns; returns their paths."""
    work.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name, frame in (("T", t), ("D", d), ("test", test)):
        paths[name] = str(work / f"{name}.parquet")
        frame.reset_index(drop=True).to_parquet(paths[name], index=False)
    return paths


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """``key.sub=value`` pairs (values parsed as YAML scalars) for ``RunConfig.with_updates``."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"--set expects KEY=VALUE, got {item!r}")
        out[key.strip()] = yaml.safe_load(value)
    return out


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far, in MB (Linux reports KiB; imports included)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def pet_only(config: Any) -> Any:
    """The config with the pipeline's own supervised baseline off, where RunConfig has that switch: the
    timed run is PET alone (as the reference's), and the baseline is run and timed on its own."""
    return config.with_updates({"baseline": False}) if "baseline" in type(config).model_fields else config


def check_labeled(labeled_path: str, t: pd.DataFrame, spec: Any) -> None:
    """Assert that prepare's T is the reference's T: same rows, same order, same labels."""
    got = pd.read_parquet(labeled_path)
    names = spec.raw_to_label()
    want_a = [s.strip() for s in t["Title"]]
    want_b = [s.strip() for s in t["Description"]]
    want_label = [names[str(v).strip()] for v in t["Class Index"]]
    assert got["a"].tolist() == want_a, "prepare's T differs from the reference's T (titles)"
    assert got["b"].tolist() == want_b, "prepare's T differs from the reference's T (descriptions)"
    assert got["label"].tolist() == want_label, "prepare's T differs from the reference's T (labels)"


def build_config(args: argparse.Namespace, paths: dict[str, str], n_unlabeled: int, n_test: int) -> Any:
    from pet_core.config import ModelConfig, TrainConfig
    from pet_core.data import DataSource
    from pet_core.run_config import DataConfig, RunConfig

    config = RunConfig(
        name="reference-setting" + ("-quick" if args.quick else ""),
        task=str(ROOT / "data/tasks/ag_news.yaml"),
        data=DataConfig(pool=DataSource(path=paths["T"]), unlabeled=DataSource(path=paths["D"]),
                        test=DataSource(path=paths["test"]), n_labeled=10, n_unlabeled=0, n_test=n_test,
                        seed=args.seed),
        model=ModelConfig(backbone=args.backbone, max_seq_length=128),
        patterns=[0, 1] if args.quick else [0, 1, 2, 3],
        seeds=[args.seed],
        train=TrainConfig(max_steps=2 if args.quick else 100, batch_size=4, grad_accumulation=1,
                          learning_rate=1e-5, unlabeled_ratio=1),
        store=args.store,
    )
    updates = ({"distill.max_steps": 3} if args.quick else {}) | parse_overrides(args.set)
    config = pet_only(config.with_updates(updates) if updates else config)
    assert config.data.n_unlabeled == 0 and n_unlabeled > 0
    return config


def supervised(config: Any, prepared_labeled: Any, prepared_test: Any) -> dict[str, Any]:
    """The same backbone as a plain sequence classifier on T only, with the run's distill config."""
    from pet_core import stages
    from pet_core.store import ArtifactStore

    started = time.perf_counter()
    store, spec = ArtifactStore(config.store), config.task_spec()
    clf = stages.supervised(store, spec, config.model, config.distill, prepared_labeled, seed=config.data.seed)
    metrics = stages.read_json_output(stages.evaluate(store, spec, config.model, clf.out("classifier"),
                                                      prepared_test, config.distill.eval_batch_size), "metrics")
    return {"accuracy": metrics["accuracy"], "macro_f1": metrics["macro_f1"], "steps": clf.info.get("steps"),
            "wall_s": round(time.perf_counter() - started, 1)}


def table(ours: dict[str, Any], n_unlabeled: int, n_test: int) -> str:
    def pct(value: float | None) -> str:
        return "–" if value is None else f"{100 * value:.1f} %"

    rows = [(f"pattern model {name}", None, ours["pattern_accuracy"][name]) for name in ours["pattern_accuracy"]]
    rows += [("pattern models, mean", REFERENCE["pattern_mean"], ours["pattern_mean"]),
             ("ensemble", REFERENCE["ensemble"], ours["ensemble"]),
             ("final classifier", REFERENCE["final"], ours["final"]),
             ("supervised baseline (same T, backbone)", None, ours.get("supervised", {}).get("accuracy"))]
    lines = [(f"| AG's News, reference draws (|T| 10, |D| {n_unlabeled:,}, {n_test:,} test) | timoschick/pet | "
              "petflow | ratio |"),
             "|---|---|---|---|"]
    lines += [f"| {name} | {pct(ref)} | {pct(value)} | |" for name, ref, value in rows]
    lines.append(f"| wall time (s) | {REFERENCE['wall_s']:,.0f} | {ours['wall_s']:,.1f} | "
                 f"{ours['wall_s'] / REFERENCE['wall_s']:.3f} |")
    lines.append(f"| peak RSS (MB, imports included) | {REFERENCE['peak_rss_mb']:,.0f} | {ours['peak_rss_mb']:,.0f} | "
                 f"{ours['peak_rss_mb'] / REFERENCE['peak_rss_mb']:.3f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seed", type=int, default=1, help="Model seed (and distillation seed); the draws are fixed.")
    parser.add_argument("--backbone", default=str(SHARED / "models/minilm-l6-mlm"))
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="Dotted RunConfig override, e.g. --set distill.learning_rate=5e-5 (repeatable).")
    parser.add_argument("--no-supervised", action="store_true", help="Skip the supervised baseline.")
    parser.add_argument("--quick", action="store_true", help="Tiny sizes to check the script; writes to a temp dir.")
    parser.add_argument("--work", default=None, help="Folder for T/D/test files and the store (default: temp dir).")
    parser.add_argument("--store", default=None, help="Artifact store (default: fresh, under --work: nothing cached).")
    parser.add_argument("--out", default=None, help="JSON result (default: benchmarks/results/reference_setting.json; "
                        "with --quick: under the work dir, never the real results).")
    args = parser.parse_args(argv)
    import torch
    import transformers

    from pet_core.pipeline import run

    torch.set_num_threads(args.threads)
    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    work = Path(args.work or tempfile.mkdtemp(prefix="petflow-ref-"))
    args.store = args.store or str(work / "store")
    out = Path(args.out or (work / "reference_setting_quick.json" if args.quick
                            else ROOT / "benchmarks/results/reference_setting.json"))
    n_unlabeled, n_test = (32, 40) if args.quick else (2000, 1000)

    pool = read_table(POOL)
    t = pool.sample(n=10, random_state=0)
    labels = [int(v) for v in t["Class Index"]]
    assert labels == REFERENCE_T_LABELS, f"T's labels {labels} are not the reference's {REFERENCE_T_LABELS}"
    d = pool.drop(t.index).sample(n=n_unlabeled, random_state=1)
    test = read_table(TEST).head(n_test)
    paths = write_draws(work, t, d, test)
    config = build_config(args, paths, n_unlabeled, n_test)
    spec = config.task_spec()

    started = time.perf_counter()
    result = run(config)
    wall = time.perf_counter() - started
    rss = peak_rss_mb()
    prepared = result.prepared
    check_labeled(prepared.out("labeled").path, t, spec)
    assert prepared.info["unlabeled"]["rows"] == n_unlabeled and prepared.info["test"]["rows"] == n_test
    summary = result.summary(spec, config)
    gen = summary["generations"][0]
    ours: dict[str, Any] = {
        "wall_s": round(wall, 1), "peak_rss_mb": round(rss, 1), "pattern_accuracy": gen["models"],
        "pattern_mean": statistics.mean(gen["models"].values()), "ensemble": gen["ensemble"]["accuracy"],
        "final": summary["final"]["accuracy"], "final_macro_f1": summary["final"]["macro_f1"],
        "distill_steps": result.classifier.info.get("steps"), "cached_stages": summary["cached_stages"]}
    if not args.no_supervised:
        ours["supervised"] = supervised(config, prepared.out("labeled"), prepared.out("test"))
    ours["peak_rss_mb_all"] = round(peak_rss_mb(), 1)
    print(table(ours, n_unlabeled, n_test))
    print(f"\nwall ratio petflow / reference: {ours['wall_s'] / REFERENCE['wall_s']:.3f}; "
          f"RSS ratio: {ours['peak_rss_mb'] / REFERENCE['peak_rss_mb']:.3f}; threads {args.threads}; "
          f"distill steps {ours['distill_steps']}")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({
        "reference": REFERENCE, "petflow": ours, "quick": args.quick, "threads": args.threads,
        "wall_ratio": ours["wall_s"] / REFERENCE["wall_s"], "rss_ratio": ours["peak_rss_mb"] / REFERENCE["peak_rss_mb"],
        "draws": {"T_index": [int(i) for i in t.index], "T_labels": labels, "n_unlabeled": n_unlabeled,
                  "n_test": n_test}, "overrides": args.set,
        "machine": f"{platform.node()} {platform.platform()}", "config": config.to_dict()}, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
