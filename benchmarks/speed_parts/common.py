"""Shared helpers of the speed benchmark: paths, result records, timing, logging and the AG's News inputs."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import pyarrow as pa

if TYPE_CHECKING:
    from pet_core.config import ModelConfig
    from pet_core.pvp import Encoded
    from pet_core.spec import TaskSpec

ROOT = Path(__file__).resolve().parents[2]
SHARED = ROOT.parent / "shared"
SPEED_SCRIPT = ROOT / "benchmarks" / "speed.py"  # the entry point; the RSS children re-run it with hidden flags

Record = dict[str, Any]
T = TypeVar("T")


def record(name: str, value: float | None, unit: str, detail: str = "", target: str | None = None) -> Record:
    return {"name": name, "value": None if value is None else round(float(value), 4), "unit": unit,
            "detail": detail, "target": target}


def timed(fn: Callable[..., T], *a: Any, **k: Any) -> tuple[float, T]:
    start = time.perf_counter()
    out = fn(*a, **k)
    return time.perf_counter() - start, out


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# -- shared inputs ------------------------------------------------------------------------------------------
def ag_news(args: argparse.Namespace, n: int | None = None) -> tuple[TaskSpec, pa.Table]:
    from pet_core.data import DataSource, load_examples
    from pet_core.spec import TaskSpec

    spec = TaskSpec.from_yaml(args.task)
    table = load_examples(DataSource(path=args.data), spec)
    return spec, (table if n is None else table.slice(0, n))


def model_config(args: argparse.Namespace, precision: str = "auto") -> ModelConfig:
    from pet_core.config import ModelConfig

    return ModelConfig(backbone=args.backbone, max_seq_length=args.max_seq_length, device="cpu",
                       precision=precision)


def texts(table: pa.Table) -> tuple[list[str], list[str | None]]:
    return table.column("a").to_pylist(), table.column("b").to_pylist()


def encode_only(args: argparse.Namespace) -> list[Encoded]:
    from transformers import AutoTokenizer

    from pet_core.pvp import PVP

    spec, table = ag_news(args, args.n_examples)
    tokenizer = AutoTokenizer.from_pretrained(args.backbone)
    return PVP(spec, args.pattern, tokenizer, args.max_seq_length).encode_texts(*texts(table))
