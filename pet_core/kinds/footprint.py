"""What a pattern model of a kind will train, known before any weights are loaded (for ``petflow validate``):
the backbone's shape from its config.json and its parameter count from the safetensors header."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from pet_core.backbone import BackboneError, resolve_backbone
from pet_core.config import ModelConfig


@dataclass(frozen=True)
class BackboneShape:
    """Sizes of a backbone that decide a learned prompt's size; ``parameters`` None when unknown."""

    hidden: int
    layers: int
    heads: int
    parameters: int | None


def _local_backbone(model_config: ModelConfig) -> tuple[Path, dict] | None:
    """The local backbone's folder and config.json (None for hub names or unreadable folders)."""
    try:
        folder = Path(resolve_backbone(model_config.backbone))
        return folder, json.loads((folder / "config.json").read_text())
    except (BackboneError, OSError, ValueError):
        return None


def _stored_parameters(folder: Path) -> int | None:
    """Parameters in the folder's model.safetensors, read from its header (None without that file)."""
    weights = folder / "model.safetensors"
    if not weights.is_file():
        return None
    from safetensors import safe_open

    with safe_open(str(weights), "pt") as f:
        return sum(math.prod(f.get_slice(k).get_shape()) for k in f.keys())  # noqa: SIM118 (safe_open is no dict)


def backbone_parameters(model_config: ModelConfig) -> int | None:
    """Parameters of the local backbone (any architecture), or None when unknown without a download."""
    local = _local_backbone(model_config)
    return None if local is None else _stored_parameters(local[0])


def backbone_shape(model_config: ModelConfig) -> BackboneShape | None:
    """The local backbone's shape (None for hub names or unreadable folders: no download at validation)."""
    local = _local_backbone(model_config)
    if local is None:
        return None
    folder, config = local
    try:
        return BackboneShape(config["hidden_size"], config["num_hidden_layers"], config["num_attention_heads"],
                             _stored_parameters(folder))
    except KeyError:
        return None


def count_on_meta(build: type[nn.Module], *args: object, **kwargs: object) -> int:
    """Parameters of a module built on the meta device (no memory, no init)."""
    with torch.device("meta"):
        return sum(p.numel() for p in build(*args, **kwargs).parameters())


def human_count(n: int | None) -> str:
    """22.7 M / 36,864 / unknown."""
    if n is None:
        return "unknown"
    return f"{n / 1e6:.1f} M" if n >= 1e6 else f"{n:,}"
