"""Where a backbone comes from: local directory, installed package (``pkg:``) or hub name.

Kept free of torch and transformers so that config checks and cache keys stay cheap to import.
"""

from __future__ import annotations

from pathlib import Path


class BackboneError(ValueError):
    """The backbone cannot be used as configured (missing path, no MLM head, ...)."""


DEFAULT_BACKBONE = "petflow:minilm-l6-mlm"


def resolve_backbone(name: str) -> str:
    """A local directory as a string, or a hub name left as is; a missing local path is an error.

    ``petflow:minilm-l6-mlm`` (the offline default) resolves to a cached directory built from the PyPI
    encoder and the adapter shipped in ``pet_core/default_backbone/`` (see ``pet_core.default_backbone``).
    """
    if name == DEFAULT_BACKBONE:
        from pet_core.default_backbone import materialise

        return str(materialise())
    if name.startswith("petflow:"):
        raise BackboneError(f"unknown backbone {name!r}; the petflow: backbones are: {DEFAULT_BACKBONE}")
    if name.startswith("pkg:"):
        from pet_core.data import resolve_path

        name = str(resolve_path(name))
    path = Path(name).expanduser()
    looks_local = name.startswith(("/", ".", "~")) or path.exists()
    if looks_local and not path.is_dir():
        raise BackboneError(f"backbone directory {path} does not exist")
    return str(path) if looks_local else name
