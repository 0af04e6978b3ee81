"""Where a backbone comes from: local directory, installed package (``pkg:``) or hub name.

Kept free of torch and transformers so that config checks and cache keys stay cheap to import.
"""

from __future__ import annotations

from pathlib import Path


class BackboneError(ValueError):
    """The backbone cannot be used as configured (missing path, no MLM head, ...)."""


def resolve_backbone(name: str) -> str:
    """A local directory as a string, or a hub name left as is; a missing local path is an error."""
    if name.startswith("pkg:"):
        from pet_core.data import resolve_path

        name = str(resolve_path(name))
    path = Path(name).expanduser()
    looks_local = name.startswith(("/", ".", "~")) or path.exists()
    if looks_local and not path.is_dir():
        raise BackboneError(f"backbone directory {path} does not exist")
    return str(path) if looks_local else name
