"""What enters the store's cache keys besides configs: data sources, backbones and task specs by content,
the explicit seed of each model, and the kind section of a trained model."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

from pet_core.artifacts import read_json, sha256_path, stable_hash
from pet_core.config import ModelConfig
from pet_core.data import DataSource, resolve_path
from pet_core.kinds.registry import DEFAULT_KIND, TRAIN_RECORD
from pet_core.sources import Where, locate, url_fingerprint
from pet_core.spec import TaskSpec
from pet_core.store import Ref


def source_hash(source: DataSource | None) -> str | None:
    """Content hash of a local data source (file or folder); for a URL, the URL with what its filesystem says
    identifies the object's content (ETag/md5, size, mtime); for a hub dataset, its name."""
    if source is None:
        return None
    where = locate(source.path)
    if where.where is Where.url:
        digest = stable_hash({"url": source.path, **url_fingerprint(source.path)})
    else:
        path = resolve_path(source.path)
        digest = sha256_path(path) if path.exists() else source.path
    return stable_hash({"content": digest, "format": source.format.value, "split": source.split,
                        "limit": source.limit})


@functools.lru_cache(maxsize=32)
def _dir_hash(path: str, mtime_ns: int) -> str:
    return sha256_path(path)


def backbone_fingerprint(backbone: str) -> str:
    """Content hash of a local backbone directory, or the hub name itself."""
    from pet_core.backbone import resolve_backbone

    name = resolve_backbone(backbone)
    path = Path(name)
    if path.is_dir():
        newest = max((p.stat().st_mtime_ns for p in path.rglob("*") if p.is_file()), default=0)
        return _dir_hash(str(path.resolve()), newest)
    return name


def model_key(model: ModelConfig) -> dict[str, Any]:
    """The model config as it enters cache keys: backbone by content, device left out."""
    data = model.to_dict()
    data["backbone"] = backbone_fingerprint(model.backbone)
    data.pop("device")
    data.pop("allow_pickle_weights")  # decides whether loading is allowed, not what is computed
    return data


def spec_hash(spec: TaskSpec) -> str:
    """Hash of a task spec's content."""
    return stable_hash(spec.model_dump(mode="json"))


def model_seed(seed: int, pattern: int, generation: int) -> int:
    """The explicit torch seed of one model, derived from its run seed, pattern and generation."""
    return int(stable_hash([seed, pattern, generation])[:8], 16)


def trained_kind(model: Ref) -> dict[str, Any]:
    """The kind section in a trained model's record (cloze for records written before kinds)."""
    record = Path(model.path) / TRAIN_RECORD
    kind = read_json(record).get("kind") if record.is_file() else None
    return kind or {"kind": DEFAULT_KIND}
