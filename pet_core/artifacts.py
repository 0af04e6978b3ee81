"""Artifact I/O: atomic Parquet/JSON writes, content hashes, and the schemas of the tables.

Every write goes to a temp name in the same directory and is renamed into place, so a reader never
sees a half-written file. No pickle anywhere: tables are Parquet, configs JSON, weights safetensors.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

EXAMPLES_SCHEMA = pa.schema(
    [
        pa.field("example_id", pa.string(), nullable=False),
        pa.field("a", pa.string(), nullable=False),
        pa.field("b", pa.string()),
        pa.field("label", pa.string()),
    ]
)


class ArtifactError(RuntimeError):
    """An artifact is missing, unreadable, or does not match its recorded hash."""


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def sha256_dir(path: str | Path) -> str:
    """Hex sha256 over a directory's relative file names and contents (sorted, recursive)."""
    root = Path(path)
    digest = hashlib.sha256()
    for file in sorted(p for p in root.rglob("*") if p.is_file()):
        digest.update(file.relative_to(root).as_posix().encode())
        digest.update(sha256_file(file).encode())
    return digest.hexdigest()


def sha256_path(path: str | Path) -> str:
    """Content hash of a file or a directory."""
    path = Path(path)
    if not path.exists():
        raise ArtifactError(f"artifact {path} does not exist")
    return sha256_dir(path) if path.is_dir() else sha256_file(path)


def stable_hash(obj: Any) -> str:
    """sha256 of sorted-key JSON: the hash of configs and cache keys."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def publish_mode(path: Path) -> None:
    """Give a temp file/dir the permissions a plain create would (mkstemp/mkdtemp use 0600/0700)."""
    if path.is_dir():
        for sub in [path, *path.rglob("*")]:
            os.chmod(sub, (0o777 if sub.is_dir() else 0o666) & ~_umask())
    else:
        os.chmod(path, 0o666 & ~_umask())


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temp path beside ``path``; rename it into place only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        publish_mode(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


@contextlib.contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """Yield a temp directory beside ``path``; swap it into place only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        yield tmp
        publish_mode(tmp)
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def write_json(obj: Any, path: str | Path) -> Path:
    """Write sorted, indented JSON atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n", encoding="utf-8")
    return Path(path)


def read_json(path: str | Path) -> Any:
    """Read a JSON artifact, naming the file on failure."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise ArtifactError(f"cannot read JSON artifact {path}: {err}") from err


def write_table(table: pa.Table, path: str | Path) -> Path:
    """Write a Parquet table atomically."""
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)
    return Path(path)


def read_table(path: str | Path, columns: list[str] | None = None) -> pa.Table:
    """Read a Parquet artifact; a truncated or corrupt file raises ArtifactError naming it."""
    path = Path(path)
    if not path.is_file():
        raise ArtifactError(f"artifact {path} does not exist")
    try:
        return pq.read_table(path, columns=columns)
    except (pa.ArrowInvalid, OSError) as err:
        raise ArtifactError(f"artifact {path} is not a readable Parquet file ({err}); rerun the stage") from err


def float_rows(matrix: np.ndarray, width: int | None = None) -> pa.FixedSizeListArray:
    """An (n, width) matrix as a fixed-size list column of float32 (the type of every logits column)."""
    matrix = np.asarray(matrix, dtype=np.float32)
    width = matrix.shape[1] if width is None else width
    return pa.FixedSizeListArray.from_arrays(pa.array(matrix.reshape(-1), type=pa.float32()), width)


LOGITS_COLUMNS = {"model_id": pa.string(), "pattern": pa.int64(), "seed": pa.int64(), "generation": pa.int64()}


def logits_schema(width: int, columns: Iterable[str] = LOGITS_COLUMNS) -> pa.Schema:
    """The schema of a model's logits file: ``example_id``, ``logits`` (``width`` float32) and constant columns
    (the model's ``LOGITS_COLUMNS``; other names are strings)."""
    return pa.schema([("example_id", pa.string()), ("logits", pa.list_(pa.float32(), width)),
                      *((name, LOGITS_COLUMNS.get(name, pa.string())) for name in columns)])


def logits_table(
    example_ids: list[str],
    logits: np.ndarray,
    **columns: Any,
) -> pa.Table:
    """A logits table (``logits_schema``): ``example_id``, ``logits`` and the given constant columns."""
    logits = np.asarray(logits, dtype=np.float32)
    n, width = logits.shape if logits.ndim == 2 else (len(example_ids), 0)
    schema = logits_schema(width, columns)
    data = [pa.array(example_ids, type=pa.string()), float_rows(logits, width)]
    data += [pa.array([value] * n, type=schema.field(name).type) for name, value in columns.items()]
    return pa.Table.from_arrays(data, schema=schema)


def logits_of(table: pa.Table, column: str = "logits") -> np.ndarray:
    """The (n, |L|) float32 matrix held in a fixed-size list column."""
    col = table.column(column).combine_chunks()
    width = col.type.list_size
    values = col.flatten().to_numpy(zero_copy_only=False).astype(np.float32, copy=False)
    return values.reshape(len(col), width)
