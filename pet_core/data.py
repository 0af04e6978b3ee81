"""Loading raw data into example tables (local files, ``pkg:`` paths, fsspec URLs, Hugging Face datasets).

Sampling T and D from them is ``pet_core.sampling``.

An example table has the columns of ``EXAMPLES_SCHEMA``: ``example_id``, ``a``, ``b``, ``label``
(the label's name, or null when unlabelled).
"""

from __future__ import annotations

import enum
import json
import math
from typing import Any
from pathlib import Path

import fsspec
import pandas as pd
import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field, model_validator

from pet_core.artifacts import EXAMPLES_SCHEMA
from pet_core.sources import SourceError, Where, locate, package_path
from pet_core.spec import TaskSpec


class DataError(ValueError):
    """Bad input data: the message names the file, row and field."""


class DataFormat(str, enum.Enum):
    """Supported input formats."""

    auto = "auto"
    csv = "csv"
    tsv = "tsv"
    jsonl = "jsonl"
    parquet = "parquet"
    folders = "folders"  # one sub-folder per raw label, one text file per example (first line = title)
    hf = "hf"  # a Hugging Face dataset: saved directory or hub name


SUFFIXES = {".csv": DataFormat.csv, ".tsv": DataFormat.tsv, ".jsonl": DataFormat.jsonl,
            ".json": DataFormat.jsonl, ".parquet": DataFormat.parquet, ".pq": DataFormat.parquet}


class DataSource(BaseModel):
    """Where a table comes from. ``pkg:<package>/<sub/path>`` points inside an installed package."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    path: str
    format: DataFormat = DataFormat.auto
    split: str | None = Field(default=None, description="Split name for Hugging Face datasets.")
    limit: int | None = Field(default=None, ge=1, description="Read only the first rows.")

    @model_validator(mode="before")
    @classmethod
    def _from_path(cls, value: Any) -> Any:
        """A bare string is the path (``pool: data.csv`` in YAML, ``--set data.pool=data.csv``)."""
        return {"path": value} if isinstance(value, str) else value


def resolve_path(path: str) -> Path:
    """A filesystem path, with ``pkg:name/sub`` resolved inside the installed package ``name``."""
    try:
        return package_path(path) if path.startswith("pkg:") else Path(path.removeprefix("file://")).expanduser()
    except SourceError as err:
        raise DataError(str(err)) from None


def _detect_format(path: Path) -> DataFormat:
    if path.is_dir():
        if any(path.glob("dataset_info.json")) or any(path.glob("*/dataset_info.json")):
            return DataFormat.hf
        return DataFormat.folders
    fmt = SUFFIXES.get(path.suffix.lower())
    if fmt is None:
        raise DataError(f"{path}: unknown file format {path.suffix!r}; use one of {sorted(SUFFIXES)} or a folder")
    return fmt


def _url_format(source: DataSource) -> DataFormat:
    """The file format of a URL from its suffix (folders and saved datasets are local only)."""
    fmt = SUFFIXES.get(Path(source.path.split("?")[0]).suffix.lower())
    if fmt is None:
        raise DataError(f"{source.path}: unknown file format; a URL must end in one of {sorted(SUFFIXES)} "
                        "(or set format:)")
    return fmt


def _read_folders(root: Path) -> pd.DataFrame:
    rows = []
    for label_dir in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(("_", "."))):
        for file in sorted(label_dir.glob("*.txt")):
            text = file.read_bytes().decode("utf-8", errors="replace").strip()
            title, _, body = text.partition("\n")
            rows.append({"id": f"{label_dir.name}/{file.stem}", "title": title.strip(),
                         "body": " ".join(body.split()), "label": label_dir.name})
    if not rows:
        raise DataError(f"{root}: no <label>/*.txt files found")
    return pd.DataFrame(rows)


def read_raw(source: DataSource) -> pd.DataFrame:
    """Read a source into a DataFrame of its raw columns (strings)."""
    fmt = source.format
    try:
        where = locate(source.path)
    except SourceError as err:
        raise DataError(str(err)) from None
    if where.where is Where.url:
        path: Path | str = source.path  # pandas and fsspec read URLs themselves
        fmt = _url_format(source) if fmt is DataFormat.auto else fmt
    else:
        path = resolve_path(source.path)
        if fmt is not DataFormat.hf and not path.exists():
            hub_name = where.where is Where.hub and "/" in source.path and path.suffix.lower() not in SUFFIXES
            if fmt is DataFormat.auto and hub_name:
                fmt = DataFormat.hf
            else:
                raise DataError(f"data file {path} does not exist")
        if fmt is DataFormat.auto:
            fmt = _detect_format(path)
    try:
        if fmt in (DataFormat.csv, DataFormat.tsv):
            frame = pd.read_csv(path, sep="," if fmt is DataFormat.csv else "\t", dtype=str,
                                keep_default_na=False, na_values=[""], encoding="utf-8",
                                quoting=3 if fmt is DataFormat.tsv else 0, nrows=source.limit)
        elif fmt is DataFormat.jsonl:
            with fsspec.open(str(path), "rt", encoding="utf-8") as handle:
                rows = [json.loads(line) for line in handle if line.strip()]
            frame = pd.DataFrame(rows, dtype=object)
        elif fmt is DataFormat.parquet:
            frame = pd.read_parquet(path)
        elif fmt is DataFormat.folders:
            frame = _read_folders(path)
        else:
            import datasets  # local import: only users of HF datasets pay for it

            loaded = datasets.load_from_disk(str(path)) if path.exists() else datasets.load_dataset(source.path)
            if isinstance(loaded, datasets.DatasetDict):
                split = source.split or "train"
                if split not in loaded:
                    raise DataError(f"{source.path}: no split {split!r}; has {sorted(loaded)}")
                loaded = loaded[split]
            frame = loaded.to_pandas()
    except (OSError, ImportError) as err:
        if where.where is not Where.url:
            raise
        raise DataError(f"{source.path}: cannot read it ({type(err).__name__}: {err}); check the URL, its "
                        "credentials and that the filesystem's fsspec package is installed (e.g. s3fs)") from err
    except UnicodeDecodeError as err:
        raise DataError(f"{path}: not UTF-8 text (byte {err.start}: {err.reason}); re-encode the file as UTF-8") from err
    except (pd.errors.ParserError, ValueError, json.JSONDecodeError) as err:
        if isinstance(err, DataError):
            raise
        raise DataError(f"{path}: cannot parse as {fmt.value}: {err}") from err
    if source.limit is not None:
        frame = frame.head(source.limit)
    return frame.reset_index(drop=True)


def _join(frame: pd.DataFrame, columns: list[str], sep: str) -> list[str]:
    """Join the non-empty stripped values of several columns per row ('' when all are empty)."""
    values = [frame[c].astype("string").fillna("").str.strip().tolist() for c in columns]
    return [sep.join(v for v in row if v).strip() for row in zip(*values, strict=True)]


def to_examples(frame: pd.DataFrame, spec: TaskSpec, origin: str, labeled: bool = True) -> pa.Table:
    """Map raw columns to an example table, validating every row; errors name origin, row and field."""
    fields = spec.fields
    wanted = list(fields.a) + list(fields.b) + ([fields.label] if labeled else []) + ([fields.id] if fields.id else [])
    missing = [c for c in wanted if c not in frame.columns]
    if missing:
        raise DataError(f"{origin}: missing column(s) {missing}; found {list(frame.columns)} "
                        f"(set fields.a/b/label/id in the task spec)")
    a = _join(frame, fields.a, fields.separator)
    empty = [i for i, text in enumerate(a) if not text]
    if empty:
        raise DataError(f"{origin}: row {empty[0]}: field 'a' ({'+'.join(fields.a)}) is empty or whitespace "
                        f"({len(empty)} such rows); drop or fill them")
    b: list[str | None] = _join(frame, fields.b, fields.separator) if fields.b else [None] * len(frame)
    if fields.id:
        ids = frame[fields.id].astype(str)
    else:
        ids = pd.Series([f"r{i}" for i in range(len(frame))])
    dupes = ids[ids.duplicated()]
    if len(dupes):
        raise DataError(f"{origin}: duplicate example id {dupes.iloc[0]!r} (column {fields.id!r}); ids must be unique")
    labels: list[str | None] = [None] * len(frame)
    if labeled:
        mapping = spec.raw_to_label()
        raw = frame[fields.label]
        for i, value in enumerate(raw.tolist()):
            if value is None or (isinstance(value, float) and math.isnan(value)) or str(value).strip() == "":
                raise DataError(f"{origin}: row {i}: label column {fields.label!r} is empty")
            key = str(value).strip()
            if key not in mapping:
                raise DataError(f"{origin}: row {i}: label {key!r} is not in the task spec "
                                f"(known raw values: {sorted(mapping)})")
            labels[i] = mapping[key]
    return pa.table(
        {"example_id": pa.array(ids.tolist(), pa.string()), "a": pa.array(a, pa.string()),
         "b": pa.array(b, pa.string()), "label": pa.array(labels, pa.string())},
        schema=EXAMPLES_SCHEMA,
    )


def load_examples(source: DataSource, spec: TaskSpec, labeled: bool = True) -> pa.Table:
    """Read and validate a data source into an example table."""
    return to_examples(read_raw(source), spec, origin=source.path, labeled=labeled)
