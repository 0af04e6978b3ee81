"""Where a backbone comes from: local directory, installed package (``pkg:``) or hub name.

Kept free of torch and transformers so that config checks and cache keys stay cheap to import.
"""

from __future__ import annotations

from pet_core.sources import SourceError, Where, locate


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
    try:
        where = locate(name)
    except SourceError as err:
        raise BackboneError(str(err)) from None
    if where.where is Where.url:
        raise BackboneError(f"backbone {name!r}: a URL cannot be loaded as a model; copy the model folder to a "
                            "local (or mounted) path and give that path")
    if where.where is Where.hub:
        return name
    if not where.path.is_dir():
        raise BackboneError(f"backbone directory {where.path} does not exist")
    return str(where.path)
