"""Zero-shot accuracy of word pairs × patterns on a dev split: how the SST-2 words were chosen.

Scores the dev split only (never test) with the untrained backbone, raw and mean-centred (each label's
logit minus its mean over the split), for every candidate word pair and pattern. Prints a table and
writes ``benchmarks/results/verbalizer_choice.json``.

    python benchmarks/verbalizer_choice.py            # SST-2 dev, ../shared/models/minilm-l6-mlm
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import transformers

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pet_core.config import ModelConfig  # noqa: E402
from pet_core.data import DataSource, load_examples  # noqa: E402
from pet_core.modeling import MaskedLM  # noqa: E402
from pet_core.pvp import PVP  # noqa: E402
from pet_core.kinds.cloze.model import ClozeModel  # noqa: E402
from pet_core.spec import TaskSpec  # noqa: E402

SHARED = ROOT.parent / "shared"
PAIRS = [("bad", "good"), ("terrible", "great"), ("awful", "great"), ("bad", "great"), ("boring", "fun"),
         ("worst", "best")]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--task", default=str(ROOT / "data/tasks/sst2.yaml"))
    parser.add_argument("--dev", default=str(SHARED / "data/sst2/dev.tsv"))
    parser.add_argument("--backbone", default=str(SHARED / "models/minilm-l6-mlm"))
    parser.add_argument("--out", default=str(ROOT / "benchmarks/results/verbalizer_choice.json"))
    return parser.parse_args(argv)


def with_words(spec: TaskSpec, words: tuple[str, ...]) -> TaskSpec:
    """The spec with one word per label (in label order)."""
    labels = [label.model_copy(update={"words": [word]}) for label, word in zip(spec.labels, words, strict=True)]
    return spec.model_copy(update={"labels": labels})


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    transformers.logging.set_verbosity_error()
    spec = TaskSpec.from_yaml(args.task)
    dev = load_examples(DataSource(path=args.dev), spec)
    gold = np.array([spec.label_names.index(x) for x in dev.column("label").to_pylist()])
    a, b = dev.column("a").to_pylist(), dev.column("b").to_pylist()
    mlm = MaskedLM.load(ModelConfig(backbone=args.backbone, max_seq_length=128))
    mlm.model.eval()
    rows = []
    for words in PAIRS:
        candidate = with_words(spec, words)
        for pattern in range(len(spec.patterns)):
            logits = ClozeModel(mlm, PVP(candidate, pattern, mlm.tokenizer, 128)).predict(a, b, 64)
            raw = float((logits.argmax(1) == gold).mean())
            centred = float(((logits - logits.mean(0)).argmax(1) == gold).mean())
            rows.append({"words": list(words), "pattern": pattern, "raw": raw, "centred": centred})
            print(f"{'/'.join(words):16} pattern {pattern}: raw {raw:.3f}  centred {centred:.3f}", flush=True)
    print("\n| words | mean raw | mean centred |\n|---|---|---|")
    for words in PAIRS:
        mine = [r for r in rows if r["words"] == list(words)]
        print(f"| {'/'.join(words)} | {np.mean([r['raw'] for r in mine]):.3f} | "
              f"{np.mean([r['centred'] for r in mine]):.3f} |")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"task": spec.name, "dev": Path(args.dev).name, "backbone": Path(args.backbone).name,
                               "rows": rows}, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
