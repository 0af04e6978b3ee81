"""SetFit with its default arguments on one T, evaluated on one test file; run by benchmarks/vs_setfit.py.

Runs in the separate venv ``.venv-setfit`` (SetFit pins its own transformers; it is never installed
into the project's venv). Reads T and the test set from Parquet/CSV/TSV files with their original
columns, joins the text columns with a space (as petflow's adapt stage joins a and b), trains
``SetFitModel.from_pretrained(MODEL)`` with ``setfit.TrainingArguments()`` defaults (only
``output_dir`` and ``report_to`` are set: where checkpoints go, no logging integrations) and writes
accuracy, predictions and versions as JSON.

    python3 -m venv .venv-setfit && .venv-setfit/bin/pip install torch==2.13.0 && .venv-setfit/bin/pip install setfit
    .venv-setfit/bin/python benchmarks/setfit_runner.py --model MODEL_DIR --train T.parquet --test test.parquet \\
        --text Title Description --label "Class Index" --out setfit.json --threads 2
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import pandas as pd


def read(path: str) -> pd.DataFrame:
    """A Parquet, CSV or TSV file as strings."""
    if path.endswith((".parquet", ".pq")):
        return pd.read_parquet(path).astype(str)
    tsv = path.endswith(".tsv")
    return pd.read_csv(path, sep="\t" if tsv else ",", dtype=str, keep_default_na=False, quoting=3 if tsv else 0)


def texts(frame: pd.DataFrame, columns: list[str]) -> list[str]:
    """The text columns of each row, stripped and joined with a space."""
    return [" ".join(str(row[c]).strip() for c in columns if str(row[c]).strip()) for _, row in frame.iterrows()]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", required=True, help="Sentence-transformers model directory.")
    parser.add_argument("--train", required=True)
    parser.add_argument("--test", required=True)
    parser.add_argument("--text", nargs="+", required=True, help="Text column(s), joined with a space.")
    parser.add_argument("--label", required=True, help="Label column.")
    parser.add_argument("--out", required=True)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    started = time.perf_counter()
    import datasets
    import sentence_transformers
    import setfit
    import torch
    import transformers
    from setfit import SetFitModel, Trainer, TrainingArguments

    torch.set_num_threads(args.threads)
    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    datasets.disable_progress_bars()
    train, test = read(args.train), read(args.test)
    classes = sorted(set(train[args.label]) | set(test[args.label]), key=lambda v: (len(v), v))
    index = {c: i for i, c in enumerate(classes)}
    train_ds = datasets.Dataset.from_dict({"text": texts(train, args.text),
                                           "label": [index[v] for v in train[args.label]]})
    gold = [index[v] for v in test[args.label]]
    model = SetFitModel.from_pretrained(args.model)
    with tempfile.TemporaryDirectory(prefix="setfit-") as tmp:
        training_args = TrainingArguments(output_dir=tmp, report_to="none")
        trainer = Trainer(model=model, args=training_args, train_dataset=train_ds)
        fit_started = time.perf_counter()
        trainer.train()
        fit_s = time.perf_counter() - fit_started
    predicted = [int(p) for p in model.predict(texts(test, args.text), as_numpy=True)]
    accuracy = sum(p == g for p, g in zip(predicted, gold, strict=True)) / len(gold)
    result = {"accuracy": accuracy, "n_train": len(train), "n_test": len(test), "classes": classes,
              "predictions": [classes[p] for p in predicted], "train_s": round(fit_s, 2),
              "wall_s": round(time.perf_counter() - started, 2), "threads": args.threads,
              "arguments": "setfit.TrainingArguments() defaults",
              "versions": {"setfit": setfit.__version__, "sentence_transformers": sentence_transformers.__version__,
                           "transformers": transformers.__version__, "torch": torch.__version__}}
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"SetFit accuracy {accuracy:.4f} on {len(test)} rows (trained on {len(train)}) in {result['wall_s']} s")


if __name__ == "__main__":
    main()
