"""What a benchmark records about a finished PET run besides accuracy: each model's kind and footprint, and the
label words a words stage chose (used by quality.py)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any


def words_found(result: Any) -> dict[str, Any]:
    """With a words: section: the words chosen per pattern, their cross-validated accuracy on T and the search's
    wall time (of the build, also when it came from the store)."""
    found = [r for r in result.records if r.stage == "words"]
    if not found:
        return {}
    return {"words": {p: f["words"] for p, f in found[0].info["patterns"].items()},
            "words_cv_accuracy": {p: f["cv_accuracy"] for p, f in found[0].info["patterns"].items()},
            "words_search_s": found[0].wall_s}


def kind_footprint(model_dir: Path) -> dict[str, Any]:
    """A trained model's kind, trainable parameters (all weights for a fine-tuned LM) and artifact bytes."""
    from safetensors import safe_open

    record = json.loads((model_dir / "train_record.json").read_text())
    adapter = model_dir / "prompt_adapter.json"
    trainable = json.loads(adapter.read_text())["trainable_parameters"] if adapter.is_file() else 0
    weights = model_dir / "model.safetensors"
    if weights.is_file():
        with safe_open(str(weights), "pt") as f:
            trainable += sum(math.prod(f.get_slice(k).get_shape()) for k in f.keys())  # noqa: SIM118 (safe_open is no dict)
    size = sum(p.stat().st_size for p in model_dir.rglob("*") if p.is_file())
    return {"kind": record["kind"]["kind"], "trainable_parameters": trainable, "artifact_bytes": size}
