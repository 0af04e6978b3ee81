"""sha256 of small real artifacts — a PVP model, its logits, distilled soft and hard classifiers, an adapted
backbone — to show that a refactor changed no result: run it on two commits and compare the JSON.

AG's News (``../shared/data/ag_news/train.csv``): T = ``pool.sample(n=10, random_state=0)``, D = 200 rows
of the rest; backbone ``../shared/models/minilm-l6-mlm``; 1 thread, fp32/bf16 as ModelConfig's default.

    python benchmarks/artifact_hashes.py --out /tmp/after.json
    git worktree add /tmp/before HEAD~1 && (cd /tmp/before && python benchmarks/artifact_hashes.py --out /tmp/before.json)
    diff /tmp/before.json /tmp/after.json     # empty: byte-identical results
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import argparse  # noqa: E402
import hashlib  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
from pathlib import Path  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
SHARED = ROOT.parent / "shared"


def sha(path: Path) -> str:
    """sha256 of one file."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=None, help="JSON to write (default: print only)")
    args = parser.parse_args()

    import numpy as np
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq
    import torch

    from pet_core.adapt import adapt_backbone
    from pet_core.config import AdaptConfig, DistillConfig, ModelConfig, ScoreConfig, TrainConfig
    from pet_core.distill import GoldLabels, distill
    from pet_core.scoring import score
    from pet_core.spec import TaskSpec
    from pet_core.training import train_pvp

    torch.set_num_threads(1)
    spec = TaskSpec.from_yaml(ROOT / "data/tasks/ag_news.yaml")
    pool = pd.read_csv(SHARED / "data/ag_news/train.csv")
    t_rows = pool.sample(n=10, random_state=0)
    d_rows = pool.drop(t_rows.index).sample(n=200, random_state=1)

    def table(frame: pd.DataFrame, labelled: bool) -> pa.Table:
        labels = [spec.label_names[int(x) - 1] for x in frame["Class Index"]] if labelled else [None] * len(frame)
        return pa.table({"example_id": [str(i) for i in frame.index], "a": frame["Title"].tolist(),
                         "b": frame["Description"].tolist(), "label": pa.array(labels, pa.string())})

    t, d = table(t_rows, True), table(d_rows, False)
    model = ModelConfig(backbone=str(SHARED / "models/minilm-l6-mlm"), max_seq_length=64)
    work = Path(tempfile.mkdtemp(prefix="petflow-hashes-"))
    train_pvp(spec, 1, 1, t, d, model, TrainConfig(max_steps=10, grad_accumulation=1, unlabeled_ratio=1), work / "pvp")
    score(spec, work / "pvp", d, work / "logits.parquet", model, ScoreConfig())
    targets = np.random.default_rng(0).dirichlet(np.ones(4), size=d.num_rows).astype(np.float32)
    distill_config = DistillConfig(max_steps=6, min_steps=6, grad_accumulation=2, batch_size=8)
    distill(d, targets, spec.label_names, model, distill_config, work / "soft", seed=3)
    gold = np.array([int(x) - 1 for x in t_rows["Class Index"]])
    distill(t, gold, spec.label_names, model, distill_config, work / "hard", seed=3, objective=GoldLabels())
    adapt_backbone(model, AdaptConfig(max_steps=4, batch_size=8, max_seq_length=64), d, work / "adapt")
    hashes = {"pvp model": sha(work / "pvp/model.safetensors"),
              "pvp logits on D": hashlib.sha256(np.asarray(
                  pq.read_table(work / "logits.parquet").column("logits").to_pylist(), np.float32
              ).tobytes()).hexdigest(),
              "distilled (soft labels)": sha(work / "soft/model.safetensors"),
              "supervised (gold labels)": sha(work / "hard/model.safetensors"),
              "adapted backbone": sha(work / "adapt/model.safetensors")}
    for name, digest in hashes.items():
        print(f"| {name} | {digest[:16]} |")
    if args.out:
        Path(args.out).write_text(json.dumps(hashes, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
