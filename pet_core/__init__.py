"""petflow's ML library: PET/iPET on any Hugging Face masked LM, with no orchestrator inside.

Stages over the content-addressed store live in ``pet_core.stages`` and ``pet_core.pipeline.run``
runs a whole config. The table-level API below works in a notebook without any store::

    from pet_core import TaskSpec, train_pvp, score, merge, next_generation, distill
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "TaskSpec": "pet_core.spec",
    "RunConfig": "pet_core.run_config",
    "ModelConfig": "pet_core.config",
    "TrainConfig": "pet_core.config",
    "ScoreConfig": "pet_core.config",
    "EnsembleConfig": "pet_core.config",
    "IpetConfig": "pet_core.config",
    "DistillConfig": "pet_core.config",
    "AdaptConfig": "pet_core.config",
    "load_examples": "pet_core.data",
    "sample_split": "pet_core.sampling",
    "train_pvp": "pet_core.training",
    "load_pattern_model": "pet_core.kinds.base",
    "register_kind": "pet_core.kinds.registry",
    "known_kinds": "pet_core.kinds.registry",
    "score": "pet_core.scoring",
    "merge": "pet_core.ensemble",
    "next_generation": "pet_core.ipet",
    "distill": "pet_core.distill",
    "evaluate": "pet_core.distill",
    "adapt_backbone": "pet_core.adapt",
    "validate": "pet_core.validate",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    """Import public names lazily, so ``import pet_core`` stays cheap (no torch until needed)."""
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'pet_core' has no attribute {name!r}")
