"""How right were iPET's pseudo-labels? A diagnostic over the quality benchmark's artifact store.

For every iPET next-generation entry in the store, compares the labels given to the examples drawn
from D with their gold labels in the pool file (hidden from the pipeline; read here only to explain
the results). Prints a table and writes ``benchmarks/results/ipet_pseudo_labels.json``.

    python benchmarks/ipet_pseudo_labels.py --store benchmarks/work/store
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.quality import DATASETS  # noqa: E402
from pet_core.data import DataSource, load_examples  # noqa: E402
from pet_core.spec import TaskSpec  # noqa: E402


def gold_labels(dataset: str) -> tuple[list[str], dict[str, str]]:
    """(label names, example_id -> gold label) of a benchmark dataset's pool."""
    spec = TaskSpec.from_yaml(DATASETS[dataset]["task"])
    pool = load_examples(DataSource(path=str(DATASETS[dataset]["pool"])), spec)
    ids, labels = pool.column("example_id").to_pylist(), pool.column("label").to_pylist()
    return spec.label_names, dict(zip(ids, labels, strict=True))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--store", default=str(ROOT / "benchmarks/work/store"))
    parser.add_argument("--all", action="store_true",
                        help="Include entries of older code versions (default: the newest entry's version only).")
    parser.add_argument("--out", default=str(ROOT / "benchmarks/results/ipet_pseudo_labels.json"))
    args = parser.parse_args(argv)
    store = Path(args.store)
    golds = {name: gold_labels(name) for name in DATASETS}
    labeled_sets = [set(pq.read_table(f, columns=["example_id"]).column("example_id").to_pylist())
                    for f in store.glob("prepare/*/labeled.parquet")]
    rows = []
    paths = sorted(store.glob("ipet/*/record.json"), key=lambda p: p.stat().st_mtime)
    newest = json.loads(paths[-1].read_text(encoding="utf-8"))["code_version"] if paths else None
    for record_path in paths:
        record = json.loads(record_path.read_text(encoding="utf-8"))
        if not args.all and record["code_version"] != newest:
            continue
        labels = record["config"]["labels"]
        dataset = next(name for name, (names, _) in golds.items() if names == labels)
        gold = golds[dataset][1]
        for train_set in sorted(record_path.parent.glob("train_*.parquet")):
            table = pq.read_table(train_set, columns=["example_id", "label"]).to_pydict()
            ids = set(table["example_id"])
            t_ids = max((s for s in labeled_sets if s < ids), key=len, default=set())
            pseudo = [(i, y) for i, y in zip(table["example_id"], table["label"], strict=True) if i not in t_ids]
            rows.append({"dataset": dataset, "seed": record["config"]["seed"], "generation": record["config"]["generation"],
                         "set": train_set.stem, "n_labeled": len(t_ids), "n_pseudo": len(pseudo),
                         "pseudo_accuracy": sum(gold[i] == y for i, y in pseudo) / max(len(pseudo), 1),
                         "key": record_path.parent.name[:12], "code_version": record["code_version"]})
    print("| dataset | |T| | seed | generation | pseudo-labelled rows per set | pseudo-label accuracy (mean, min–max) |")
    print("|---|---|---|---|---|---|")
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        groups.setdefault((row["dataset"], row["n_labeled"], row["seed"], row["generation"], row["key"]), []).append(row)
    for (dataset, n, seed, gen, _), group in sorted(groups.items()):
        acc = [100 * r["pseudo_accuracy"] for r in group]
        print(f"| {dataset} | {n} | {seed} | {gen} | {group[0]['n_pseudo']} | "
              f"{statistics.mean(acc):.1f} ({min(acc):.1f}–{max(acc):.1f}) |")
    Path(args.out).write_text(json.dumps(rows, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
