"""Quality benchmark: supervised vs PET vs iPET at |T| ∈ {10, 50, 100} × seeds, like PET's Table 1.

Writes records {dataset, n_labeled, method, seed, accuracy, macro_f1, wall_s, backbone, steps, ...}
to benchmarks/results/quality.json (merged with records already there) and prints a markdown table
of mean ± std. Runs share one artifact store, so iPET reuses PET's generation 0 (its wall_s then
counts only the extra work; ``wall_s_total`` adds the shared part).

    python benchmarks/quality.py --dataset ag_news --n-labeled 10 50 --seeds 1 2 3

``--kinds`` adds one PET method per pattern-model kind (every pattern trained as that kind: ``pet-ptuning``,
…) and ``mixed`` (the patterns' kinds taken in turn from the other kinds named), each with the kind's
trainable parameters, artifact size and train seconds per step:

    python benchmarks/quality.py --dataset ag_news --n-labeled 10 --methods supervised \
        --kinds cloze prompt_tuning ptuning prefix_tuning mixed
"""

from __future__ import annotations

import argparse
import fcntl
import json
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import transformers
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pet_core import stages  # noqa: E402
from pet_core.config import AdaptConfig, DistillConfig, IpetConfig, ModelConfig, TrainConfig  # noqa: E402
from pet_core.data import DataSource  # noqa: E402
from pet_core.pipeline import run  # noqa: E402
from pet_core.run_config import DataConfig, RunConfig  # noqa: E402
from pet_core.store import ArtifactStore  # noqa: E402
from run_facts import kind_footprint, words_found  # noqa: E402

SHARED = ROOT.parent / "shared"
METHOD_ORDER = ["supervised", "pet", "ipet"]
DATASETS = {
    "ag_news": {"task": ROOT / "data/tasks/ag_news.yaml", "pool": SHARED / "data/ag_news/train.csv",
                "test": SHARED / "data/ag_news/test.csv", "dev": None},
    "sst2": {"task": ROOT / "data/tasks/sst2.yaml", "pool": SHARED / "data/sst2/train.tsv",
             "test": SHARED / "data/sst2/test.tsv", "dev": SHARED / "data/sst2/dev.tsv"},
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", choices=sorted(DATASETS), required=True)
    parser.add_argument("--n-labeled", type=int, nargs="+", default=[10, 50, 100])
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--methods", nargs="+", default=["supervised", "pet", "ipet"],
                        choices=["supervised", "pet", "ipet"])
    parser.add_argument("--backbone", default=str(SHARED / "models/minilm-l6-mlm"))
    parser.add_argument("--n-unlabeled", type=int, default=2000)
    parser.add_argument("--n-test", type=int, default=None)
    parser.add_argument("--patterns", type=int, nargs="*", default=None)
    parser.add_argument("--train-steps", type=int, default=100)
    parser.add_argument("--learning-rate", type=float, default=1e-5)
    parser.add_argument("--unlabeled-ratio", type=int, default=1)
    parser.add_argument("--distill-steps", type=int, default=None,
                        help="Fixed distillation steps; default: the config's epochs-based budget.")
    parser.add_argument("--distill-lr", type=float, default=5e-5)
    parser.add_argument("--supervised-steps", type=int, default=None,
                        help="Fixed supervised-baseline steps; default: the config's epochs-based budget.")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="Dotted run-config override (YAML value), e.g. distill.head_init=random; repeatable.")
    parser.add_argument("--kinds", nargs="*", default=[], help="Pattern-model kinds to run as PET methods "
                        "(pet-<kind>); 'mixed' assigns the other named kinds to the patterns in turn.")
    parser.add_argument("--kind-set", dest="kind_overrides", action="append", default=[], metavar="KIND.KEY=VALUE",
                        help="An option of one kind, e.g. prompt_tuning.learning_rate=0.1.")
    parser.add_argument("--ipet-generations", type=int, default=None)
    parser.add_argument("--words", action="store_true", help="Search label words on T first (a words: section "
                        "with its defaults); PET methods are recorded as <method>+words.")
    parser.add_argument("--demos", action="store_true", help="Append LM-BFF demonstrations ({demos}) to every "
                        "pattern; PET methods are recorded as <method>+demos.")
    parser.add_argument("--demo-sets", type=int, default=4, help="Demonstration sets averaged at inference.")
    parser.add_argument("--demo-filter", type=float, default=1.0, help="Keep this most-similar fraction of each "
                        "label's demonstrations (LM-BFF: 0.5).")
    parser.add_argument("--max-seq-length", type=int, default=128)
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--eval", choices=["test", "dev"], default="test",
                        help="Evaluate on the dev split (for choosing settings; never tune on test).")
    parser.add_argument("--adapt-steps", type=int, default=0, help="MLM-adapt the backbone on D first (PET/iPET).")
    parser.add_argument("--adapt-lr", type=float, default=5e-5)
    parser.add_argument("--store", default=str(ROOT / "benchmarks/work/store"))
    parser.add_argument("--out", default=str(ROOT / "benchmarks/results/quality.json"))
    parser.add_argument("--table-only", action="store_true", help="Print the table of --out and exit.")
    return parser.parse_args(argv)


def kind_patterns(args: argparse.Namespace, method: str, pattern_ids: list[int]) -> list[Any] | None:
    """The ``patterns`` entry of a pet-<kind> or pet-mixed method (None: the plain PET methods)."""
    if not method.startswith("pet-"):
        return args.patterns
    kind = method.removeprefix("pet-")
    options: dict[str, dict[str, Any]] = {}
    for item in args.kind_overrides:
        dotted, value = item.split("=", 1)
        name, key = dotted.split(".", 1)
        options.setdefault(name, {})[key] = yaml.safe_load(value)
    cycle = [k for k in args.kinds if k != "mixed"] if kind == "mixed" else [kind]
    return [{"pattern": p, "kind": cycle[i % len(cycle)], **options.get(cycle[i % len(cycle)], {})}
            for i, p in enumerate(pattern_ids)]


def with_demos(config: RunConfig, sets: int, keep: float) -> RunConfig:
    """``config`` with `` {demos}`` after every pattern of its task and the demonstration settings on every
    pattern's kind section."""
    spec = config.task_spec()
    patterns = [p.model_copy(update={"template": p.template.rstrip() + " {demos}"}) for p in spec.patterns]
    entries = [{**config.kind_for(p).to_dict(), "pattern": p, "demos": {"sets": sets, "filter": keep}}
               for p in config.pattern_ids()]
    return config.model_copy(update={"task": spec.model_copy(update={"patterns": patterns})}).with_updates(
        {"patterns": entries})


def run_config(args: argparse.Namespace, n_labeled: int, seed: int, ipet: bool, method: str = "pet") -> RunConfig:
    paths = DATASETS[args.dataset]
    if paths[args.eval] is None:
        raise SystemExit(f"{args.dataset} has no {args.eval} split")
    adapt = (AdaptConfig(max_steps=args.adapt_steps, learning_rate=args.adapt_lr, batch_size=16,
                         max_seq_length=args.max_seq_length, seed=seed) if args.adapt_steps else None)
    if args.patterns is None:
        n_patterns = len(RunConfig.model_validate({"task": str(paths["task"]), "data": {"pool": {"path": "-"}},
                                                   "model": {"backbone": "-"}}).task_spec().patterns)
    patterns = kind_patterns(args, method, args.patterns if args.patterns is not None else list(range(n_patterns)))
    return RunConfig(
        name=f"{args.dataset}-{n_labeled}-{seed}",
        task=str(paths["task"]),
        data=DataConfig(pool=DataSource(path=str(paths["pool"])), test=DataSource(path=str(paths[args.eval])),
                        n_labeled=n_labeled, n_unlabeled=args.n_unlabeled, n_test=args.n_test, seed=seed),
        model=ModelConfig(backbone=args.backbone, max_seq_length=args.max_seq_length, precision=args.precision),
        patterns=patterns,
        seeds=[seed],
        adapt=adapt,
        train=TrainConfig(max_steps=args.train_steps, grad_accumulation=1, learning_rate=args.learning_rate,
                          unlabeled_ratio=args.unlabeled_ratio),
        distill=DistillConfig(learning_rate=args.distill_lr, **fixed_steps(args.distill_steps)),
        ipet=IpetConfig(generations=args.ipet_generations) if ipet else None,
        baseline=False,  # the supervised method below is this benchmark's baseline
        store=args.store,
    ).with_updates({k: yaml.safe_load(v) for k, v in (o.split("=", 1) for o in args.overrides)})


def fixed_steps(steps: int | None) -> dict[str, int]:
    """DistillConfig fields for exactly ``steps`` steps, or none (the epochs-based budget)."""
    return {} if steps is None else {"min_steps": steps, "max_steps": steps}


def supervised(args: argparse.Namespace, config: RunConfig) -> dict[str, Any]:
    """The same backbone as a plain sequence classifier trained on T only."""
    started = time.perf_counter()
    spec = config.task_spec()
    store = ArtifactStore(config.store)
    prepared = stages.prepare(store, spec, config.data)
    cfg = config.distill.model_copy(update={"batch_size": min(16, max(config.data.n_labeled, 1)),
                                           **fixed_steps(args.supervised_steps)})
    clf = stages.supervised(store, spec, config.model, cfg, prepared.out("labeled"), seed=config.data.seed)
    metrics = stages.read_json_output(stages.evaluate(store, spec, config.model, clf.out("classifier"),
                                                      prepared.out("test")), "metrics")
    return {"accuracy": metrics["accuracy"], "macro_f1": metrics["macro_f1"], "steps": clf.info["steps"],
            "learning_rate": args.distill_lr, "wall_s": round(time.perf_counter() - started, 2)}


def pet(args: argparse.Namespace, config: RunConfig) -> dict[str, Any]:
    """PET or iPET through the plain-Python pipeline."""
    started = time.perf_counter()
    result = run(config)
    summary = result.summary(config.task_spec(), config)
    gens = summary["generations"]
    last = result.generations[-1].trained
    return {"accuracy": summary["final"]["accuracy"], "macro_f1": summary["final"]["macro_f1"],
            "steps": args.train_steps, "wall_s": round(time.perf_counter() - started, 2),
            "pattern_accuracy": gens[-1]["models"], "ensemble_accuracy": gens[-1]["ensemble"]["accuracy"],
            "generations": len(gens) - 1, "cached_stages": summary["cached_stages"],
            "kinds": [kind_footprint(Path(t.out("model").path))
                      | {"train_s_per_step": round(t.wall_s / args.train_steps, 3)} for t in last],
            **words_found(result)}


def table(records: list[dict[str, Any]], dataset: str) -> str:
    """Markdown table of mean ± std over seeds, per |T| and method (PET/iPET: also their ensembles)."""
    lines = ["| dataset | |T| | method | accuracy (mean ± std) | macro-F1 | ensemble | runs |",
             "|---|---|---|---|---|---|---|"]
    keys = sorted({(r["n_labeled"], r["method"]) for r in records if r["dataset"] == dataset},
                  key=lambda k: (k[0], METHOD_ORDER.index(k[1]) if k[1] in METHOD_ORDER else 9, k[1]))
    for n, method in keys:
        rows = [r for r in records if r["dataset"] == dataset and r["n_labeled"] == n and r["method"] == method]
        ensemble = [100 * r["ensemble_accuracy"] for r in rows if "ensemble_accuracy" in r]
        lines.append(f"| {dataset} | {n} | {method} | {mean_std([100 * r['accuracy'] for r in rows])} | "
                     f"{statistics.mean(100 * r['macro_f1'] for r in rows):.1f} | "
                     f"{mean_std(ensemble) if ensemble else '–'} | {len(rows)} |")
    return "\n".join(lines)


def kinds_table(records: list[dict[str, Any]], dataset: str) -> str:
    """Markdown table per |T| and pet-<kind> method: models / ensemble / final accuracy (mean over seeds),
    trainable parameters and artifact size per model, train seconds per step."""
    lines = [("| |T| | method | models | ensemble | final | trainable params / model | artifact / model | "
              "train s/step | runs |"), "|---|---|---|---|---|---|---|---|---|"]
    rows = [r for r in records if r["dataset"] == dataset and "kinds" in r]
    for n, method in sorted({(r["n_labeled"], r["method"]) for r in rows}):
        runs = [r for r in rows if r["n_labeled"] == n and r["method"] == method]
        models = [100 * statistics.mean(r["pattern_accuracy"].values()) for r in runs]
        per_model = [k for r in runs for k in r["kinds"]]
        lines.append(
            f"| {n} | {method} | {mean_std(models)} | {mean_std([100 * r['ensemble_accuracy'] for r in runs])} | "
            f"{mean_std([100 * r['accuracy'] for r in runs])} | "
            f"{statistics.mean(k['trainable_parameters'] for k in per_model):,.0f} | "
            f"{human_bytes(statistics.mean(k['artifact_bytes'] for k in per_model))} | "
            f"{statistics.mean(k['train_s_per_step'] for k in per_model):.3f} | {len(runs)} |")
    return "\n".join(lines)


def human_bytes(n: float) -> str:
    """1.2 MB / 148 KB."""
    return f"{n / 1e6:.1f} MB" if n >= 1e6 else f"{n / 1e3:.0f} KB"


def seed_table(records: list[dict[str, Any]], dataset: str) -> str:
    """Markdown table of every run: one row per |T| and seed, accuracy per method (PET/iPET: final / ensemble)."""
    lines = ["| |T| | seed | supervised | PET final | PET ensemble | iPET final | iPET ensemble |",
             "|---|---|---|---|---|---|---|"]
    runs = {(r["n_labeled"], r["seed"], r["method"]): r for r in records if r["dataset"] == dataset}

    def cell(key: tuple[int, int, str], field: str) -> str:
        return f"{100 * runs[key][field]:.1f}" if key in runs and field in runs[key] else "–"

    for n, seed in sorted({(n, seed) for n, seed, _ in runs}):
        lines.append(f"| {n} | {seed} | {cell((n, seed, 'supervised'), 'accuracy')} | "
                     f"{cell((n, seed, 'pet'), 'accuracy')} | {cell((n, seed, 'pet'), 'ensemble_accuracy')} | "
                     f"{cell((n, seed, 'ipet'), 'accuracy')} | {cell((n, seed, 'ipet'), 'ensemble_accuracy')} |")
    return "\n".join(lines)


def mean_std(values: list[float]) -> str:
    """``mean ± std`` (sample std; 0 for one value), one decimal."""
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.1f} ± {std:.1f}"


def save_record(out: Path, record: dict[str, Any]) -> list[dict[str, Any]]:
    """Replace this (dataset, |T|, method, seed) record in the JSON file, under a lock (runs in parallel)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        records = json.loads(out.read_text()) if out.exists() else []
        key = (record["dataset"], record["n_labeled"], record["method"], record["seed"])
        records = [r for r in records if (r["dataset"], r["n_labeled"], r["method"], r["seed"]) != key] + [record]
        tmp = out.with_suffix(".tmp")
        tmp.write_text(json.dumps(records, indent=2) + "\n")
        tmp.replace(out)
    return records


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    transformers.logging.set_verbosity_error()
    out = Path(args.out)
    records: list[dict[str, Any]] = json.loads(out.read_text()) if out.exists() else []
    if args.table_only:
        print(table(records, args.dataset), seed_table(records, args.dataset), kinds_table(records, args.dataset),
              sep="\n\n")
        return
    methods = [*args.methods, *(f"pet-{kind}" for kind in args.kinds)]
    for n_labeled in args.n_labeled:
        for seed in args.seeds:
            for method in methods:
                config = run_config(args, n_labeled, seed, ipet=(method == "ipet"), method=method)
                searched = args.words and method != "supervised"
                if searched:
                    config = config.with_updates({"words": {}})
                demos = args.demos and method != "supervised"
                if demos:
                    config = with_demos(config, args.demo_sets, args.demo_filter)
                result = supervised(args, config) if method == "supervised" else pet(args, config)
                record = {"dataset": args.dataset, "n_labeled": n_labeled, "method": method + "+words" * searched + "+demos" * demos,
                          "seed": seed,
                          "backbone": Path(args.backbone).name, "n_unlabeled": args.n_unlabeled,
                          "n_test": args.n_test, "eval": args.eval, "learning_rate": args.learning_rate,
                          "adapt_steps": args.adapt_steps, "patterns": args.patterns, "machine": f"{platform.node()} {platform.processor()}".strip(),
                          **result}
                records = save_record(out, record)
                print(f"{args.dataset} |T|={n_labeled} seed={seed} {record['method']}: acc={record['accuracy']:.4f} "
                      f"wall={record['wall_s']}s", flush=True)
    print(table(records, args.dataset))
    if args.kinds:
        print(kinds_table(records, args.dataset))


if __name__ == "__main__":
    main()
