"""Where a backbone comes from: local directory, installed package (``pkg:``) or hub name.

Kept free of torch and transformers so that config checks and cache keys stay cheap to import.
"""

from __future__ import annotations

import functools

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


@functools.lru_cache(maxsize=64)
def hub_problem(name: str) -> str | None:
    """Why the hub model ``name`` cannot be loaded here, found in seconds (transformers retries for about a
    minute before giving up): not in the local Hugging Face cache while offline mode is on or the hub is out
    of reach, or no such model. None for local folders, cached models and reachable ones."""
    if locate(name).where is not Where.hub:
        return None
    try:
        from huggingface_hub import constants, model_info, try_to_load_from_cache
        from huggingface_hub.errors import RepositoryNotFoundError
    except ImportError:  # pragma: no cover - transformers depends on it
        return None
    if isinstance(try_to_load_from_cache(name, "config.json"), str):
        return None
    fetch = (f"download it where there is network (`hf download {name}`, then copy the folder) and give its "
             "folder as model.backbone")
    if constants.HF_HUB_OFFLINE:
        return f"{name!r} is not in the local Hugging Face cache and HF_HUB_OFFLINE is set: {fetch}"
    try:
        model_info(name, timeout=10)
    except RepositoryNotFoundError:
        return (f"the Hugging Face hub has no model {name!r} (or it is private: `hf auth login`); check the "
                "name, or give a local model folder")
    except Exception as err:  # noqa: BLE001 - httpx, OSError, timeouts: the hub is out of reach
        return f"{name!r} is not in the local Hugging Face cache and the hub cannot be reached ({type(err).__name__}): {fetch}"
    return None


def loadable_backbone(name: str) -> str:
    """``resolve_backbone`` plus, for a hub name, the quick check that it can be loaded (BackboneError if not)."""
    resolved = resolve_backbone(name)
    problem = hub_problem(resolved)
    if problem:
        raise BackboneError(f"cannot load backbone: {problem}")
    return resolved
