"""Section 5: peak RSS of streamed scoring over a small vs a large Parquet file, in fresh subprocesses."""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from benchmarks.speed_parts.common import ROOT, SPEED_SCRIPT, Record, log, record, timed

if TYPE_CHECKING:
    from pet_core.config import ModelConfig


def tiny_backbone(out_dir: Path) -> Path:
    """tests/_petcore_support.build_tiny_mlm when importable, else the same recipe."""
    sys.path.insert(0, str(ROOT / "tests"))
    try:
        from _petcore_support import build_tiny_mlm

        return build_tiny_mlm(out_dir)
    except ImportError:
        pass
    finally:
        sys.path.remove(str(ROOT / "tests"))
    from tokenizers import BertWordPieceTokenizer
    from transformers import BertConfig, BertForMaskedLM, BertTokenizerFast

    words = ["world", "sports", "business", "tech", "news", "category", "the", "a", "of", "in", "and", "to"]
    corpus = [" ".join(np.random.default_rng(i).permutation(words)) for i in range(200)] + [": - ( ) [ ]"]
    wordpiece = BertWordPieceTokenizer(lowercase=True)
    wordpiece.train_from_iterator(corpus, vocab_size=700, min_frequency=1, show_progress=False,
                                  special_tokens=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"])
    tokenizer = BertTokenizerFast(tokenizer_object=wordpiece._tokenizer, do_lower_case=True, model_max_length=128)
    torch.manual_seed(0)
    model = BertForMaskedLM(BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                       intermediate_size=64, vocab_size=len(tokenizer), max_position_embeddings=128,
                                       pad_token_id=tokenizer.pad_token_id))
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
    return out_dir


def tiny_model_config(model_dir: Path) -> ModelConfig:
    from pet_core.config import ModelConfig

    return ModelConfig(backbone=str(model_dir), max_seq_length=128, device="cpu")


def tiny_pvp_model(args: argparse.Namespace, work: Path) -> tuple[Path, list[str]]:
    """A tiny backbone fine-tuned for 3 steps with train_pvp: a model dir with train_record.json."""
    from transformers import AutoTokenizer

    from pet_core.artifacts import EXAMPLES_SCHEMA
    from pet_core.config import TrainConfig
    from pet_core.spec import TaskSpec
    from pet_core.training import train_pvp

    backbone = tiny_backbone(work / "tiny-backbone")
    vocab = AutoTokenizer.from_pretrained(backbone).get_vocab()
    words = sorted(w for w in vocab if w.isalpha() and len(w) > 1)
    spec = TaskSpec.from_yaml(args.task)
    rng = np.random.default_rng(0)
    n = 8
    labeled = pa.table({"example_id": [f"t{i}" for i in range(n)],
                        "a": [" ".join(rng.choice(words, 6)) for _ in range(n)],
                        "b": [" ".join(rng.choice(words, 15)) for _ in range(n)],
                        "label": [spec.label_names[i % len(spec.labels)] for i in range(n)]}, schema=EXAMPLES_SCHEMA)
    out = work / "tiny-pvp"
    train_pvp(spec, 0, 0, labeled, None, tiny_model_config(backbone), TrainConfig(max_steps=3, grad_accumulation=1),
              out)
    return out, words


def write_examples(path: Path, rows: int, words: list[str], row_group: int = 50_000) -> None:
    """Random texts from the tiny vocabulary: title 4–10 words, description 10–30 words, label null."""
    from pet_core.artifacts import EXAMPLES_SCHEMA

    rng = np.random.default_rng(rows)
    vocab = np.array(words)
    with pq.ParquetWriter(path, EXAMPLES_SCHEMA) as writer:
        for start in range(0, rows, row_group):
            n = min(row_group, rows - start)
            a_len, b_len = rng.integers(4, 11, n), rng.integers(10, 31, n)
            picks = vocab[rng.integers(0, len(vocab), (n, 40))]
            a = [" ".join(picks[i, : a_len[i]]) for i in range(n)]
            b = [" ".join(picks[i, 10 : 10 + b_len[i]]) for i in range(n)]
            writer.write_table(pa.table({"example_id": [f"u{start + i}" for i in range(n)], "a": a, "b": b,
                                         "label": pa.nulls(n, pa.string())}, schema=EXAMPLES_SCHEMA),
                               row_group_size=row_group)


def proc_status_kb(field: str) -> int:
    """VmRSS / VmHWM of this process in kB (VmHWM is per address space, so it starts afresh at exec;
    getrusage's ru_maxrss would include the parent's RSS copied at fork)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def rss_child(model_dir: str, parquet: str, out: str, task: str) -> None:
    """Runs in a fresh interpreter: score the Parquet file with the task spec ``task``, print peak RSS and timings
    as JSON."""
    from pet_core.config import ScoreConfig
    from pet_core.scoring import score
    from pet_core.spec import TaskSpec

    threads = int(os.environ.get("SPEED_RSS_THREADS", "0"))
    if threads > 0:
        torch.set_num_threads(threads)
    spec = TaskSpec.from_yaml(task)
    before = proc_status_kb("VmRSS")
    started = time.perf_counter()
    summary = score(spec, model_dir, parquet, out, tiny_model_config(Path(model_dir)), ScoreConfig())
    wall = time.perf_counter() - started
    peak = proc_status_kb("VmHWM")
    print(json.dumps({"rows": summary["rows"], "wall_s": wall, "peak_rss_kb": peak, "rss_before_kb": before}))


def read_child(parquet: str, mode: str) -> None:
    """Runs in a fresh interpreter: only stream the example chunks (no model), print peak RSS as JSON.

    mode "pet_core": pet_core.scoring.iter_chunks as it is; "no_pre_buffer": the same read with
    ``pq.ParquetFile(path, pre_buffer=False)``."""
    from pet_core.scoring import iter_chunks

    before = proc_status_kb("VmRSS")
    if mode == "pet_core":
        chunks = iter_chunks(parquet, 4096)
    else:
        chunks = pq.ParquetFile(parquet, pre_buffer=False).iter_batches(batch_size=4096, columns=["example_id", "a", "b"])
    rows = 0
    for chunk in chunks:
        rows += len(chunk.column("a").to_pylist())
    print(json.dumps({"rows": rows, "peak_rss_kb": proc_status_kb("VmHWM"), "rss_before_kb": before}))


def read_only_rss(path: Path) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    for mode in ("pet_core", "no_pre_buffer"):
        proc = subprocess.run([sys.executable, str(SPEED_SCRIPT), "--read-child", str(path), mode], cwd=ROOT,
                              capture_output=True, text=True, check=False)
        if proc.returncode == 0:
            out[mode] = json.loads(proc.stdout.strip().splitlines()[-1])
    return out


def bench_rss(args: argparse.Namespace, work: Path) -> list[Record]:
    model_dir, words = tiny_pvp_model(args, work)
    results: dict[int, dict[str, Any]] = {}
    reads: dict[int, dict[str, dict[str, int]]] = {}
    small, large = args.rows
    note = ""
    for rows in (small, large):
        if rows == large and large > 300_000:
            rate = results[small]["rows"] / results[small]["wall_s"]
            if large / rate / 60 > args.rss_budget_min:
                note = (f"; {large:,} rows would take ~{large / rate / 60:.0f} min at {rate:.0f} rows/s "
                        f"(> {args.rss_budget_min:g} min budget), so 300,000 were scored")
                large = rows = 300_000
        path = work / f"examples-{rows}.parquet"
        gen_s, _ = timed(write_examples, path, rows, words)
        log(f"wrote {rows} rows in {gen_s:.1f}s ({path.stat().st_size / 1e6:.0f} MB)")
        proc = subprocess.run([sys.executable, str(SPEED_SCRIPT), "--rss-child", str(model_dir), str(path),
                               str(work / f"logits-{rows}.parquet")], cwd=ROOT, capture_output=True, text=True,
                              env={**os.environ, "SPEED_RSS_THREADS": str(args.rss_threads)}, check=False)
        if proc.returncode != 0:
            raise RuntimeError(f"scoring child failed: {proc.stderr[-2000:]}")
        results[rows] = json.loads(proc.stdout.strip().splitlines()[-1])
        out_rows = pq.ParquetFile(work / f"logits-{rows}.parquet").metadata.num_rows
        assert out_rows == rows, (out_rows, rows)
        log(f"scored {rows} rows in {results[rows]['wall_s']:.1f}s, peak RSS {results[rows]['peak_rss_kb'] / 1024:.0f} MB")
        reads[rows] = read_only_rss(path)
        path.unlink()
    rs, rl = results[small], results[large]
    threads = args.rss_threads or torch.get_num_threads()
    detail = ("pet_core.scoring.score on a tiny BERT (hidden 32, 2 layers) PVP model dir, Parquet in 50k-row groups, "
              f"chunk_rows 4096, precision auto, {threads} torch thread(s), fresh subprocess each, peak = VmHWM")
    return [
        record(f"peak RSS, scoring {small:,} rows", rs["peak_rss_kb"] / 1024, "MB",
               detail + f"; {rs['rows'] / rs['wall_s']:.0f} rows/s; RSS after imports "
               f"{rs['rss_before_kb'] / 1024:.0f} MB"),
        record(f"peak RSS, scoring {large:,} rows", rl["peak_rss_kb"] / 1024, "MB",
               f"{rl['rows'] / rl['wall_s']:.0f} rows/s, {rl['wall_s']:.0f} s" + note),
        record(f"peak RSS ratio {large:,} / {small:,} rows", rl["peak_rss_kb"] / rs["peak_rss_kb"], "x",
               "memory bounded by the chunk, not by |D|", "<= 1.2"),
        record(f"peak RSS above the post-import baseline, {large:,} / {small:,} rows",
               (rl["peak_rss_kb"] - rl["rss_before_kb"]) / (rs["peak_rss_kb"] - rs["rss_before_kb"]), "x",
               f"{(rs['peak_rss_kb'] - rs['rss_before_kb']) / 1024:.0f} MB vs "
               f"{(rl['peak_rss_kb'] - rl['rss_before_kb']) / 1024:.0f} MB: the scoring's own memory"),
    ] + read_records(reads, small, large)


def read_records(reads: dict[int, dict[str, dict[str, int]]], small: int, large: int) -> list[Record]:
    """Peak RSS growth of reading alone: pet_core's iter_chunks vs the same read with pre_buffer=False."""
    records: list[Record] = []
    for mode, label in (("pet_core", "pet_core.scoring.iter_chunks"), ("no_pre_buffer", "ParquetFile(pre_buffer=False)")):
        if mode in reads.get(small, {}) and mode in reads.get(large, {}):
            grow = [(reads[n][mode]["peak_rss_kb"] - reads[n][mode]["rss_before_kb"]) / 1024 for n in (small, large)]
            records.append(record(f"reading only, {label}: peak RSS growth {large:,} rows", grow[1], "MB",
                                  f"{grow[0]:.0f} MB for {small:,} rows; no model, the same chunks of 4096 rows, "
                                  "fresh subprocess"))
    return records
