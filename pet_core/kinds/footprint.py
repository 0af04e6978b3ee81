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


def backbone_shape(model_config: ModelConfig) -> BackboneShape | None:
    """The local backbone's shape (None for hub names or unreadable folders: no download at validation)."""
    try:
        folder = Path(resolve_backbone(model_config.backbone))
        config = json.loads((folder / "config.json").read_text())
    except (BackboneError, OSError, ValueError):
        return None
    parameters = None
    weights = folder / "model.safetensors"
    if weights.is_file():
        from safetensors import safe_open

        with safe_open(str(weights), "pt") as f:
            parameters = sum(math.prod(f.get_slice(k).get_shape()) for k in f.keys())  # noqa: SIM118 (safe_open is no dict)
    try:
        return BackboneShape(config["hidden_size"], config["num_hidden_layers"], config["num_attention_heads"],
                             parameters)
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
