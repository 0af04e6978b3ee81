"""Test support for whole runs, shared by tests/, tests/reliability/ and tests/flows/: toy data folders on
disk, tiny run configs (dict, RunConfig or YAML), task-spec variants and backbones derived from the tiny BERT.

Plain functions only (importable by this unique name, like _petcore_support); the session fixtures built
on them (``topic_data``, ``sentiment_data``, ``headless_backbone``) live in tests/conftest.py.
"""

from __future__ import annotations

import copy
import shutil
from pathlib import Path
from typing import Any

import yaml

from _petcore_support import SENTIMENT_SPEC, TOPIC_SPEC, sentiment_frame, topic_frame


# -- data on disk -------------------------------------------------------------------------------------------
def write_topic_data(root: Path) -> Path:
    """task.yaml (3 topics, 2 patterns), pool.csv (21 rows) and a disjoint test.csv (9 rows) under ``root``."""
    root.mkdir(parents=True, exist_ok=True)
    frame = topic_frame()
    test = frame.groupby("topic").head(3)
    frame.drop(test.index).to_csv(root / "pool.csv", index=False)
    test.to_csv(root / "test.csv", index=False)
    (root / "task.yaml").write_text(yaml.safe_dump(TOPIC_SPEC), encoding="utf-8")
    return root


def write_sentiment_data(root: Path) -> Path:
    """task.yaml (2 labels, 2 patterns) and pool.csv (40 rows) under ``root``."""
    root.mkdir(parents=True, exist_ok=True)
    sentiment_frame().to_csv(root / "pool.csv", index=False)
    (root / "task.yaml").write_text(yaml.safe_dump(SENTIMENT_SPEC), encoding="utf-8")
    return root


def write_yaml(config: dict[str, Any], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return path


# -- task specs ---------------------------------------------------------------------------------------------
def spec_with(base: dict[str, Any], **changes: Any) -> dict[str, Any]:
    """A deep copy of the spec dict ``base`` (e.g. SENTIMENT_SPEC) with top-level keys replaced."""
    spec = copy.deepcopy(base)
    spec.update(changes)
    return spec


# -- configs ------------------------------------------------------------------------------------------------
def tiny_model_dict(backbone: Path | str, **overrides: Any) -> dict[str, Any]:
    """The ``model`` section of a tiny run: fp32 on CPU, 64 tokens."""
    return {"backbone": str(backbone), "max_seq_length": 64, "device": "cpu", "precision": "fp32", **overrides}


def tiny_model_config(backbone: Path | str, **overrides: Any):
    """``tiny_model_dict`` as a pet_core ModelConfig."""
    from pet_core.config import ModelConfig

    return ModelConfig(**tiny_model_dict(backbone, **overrides))


def tiny_run_dict(data_dir: Path, backbone: Path, store: Path, **sections: Any) -> dict[str, Any]:
    """A run config (as a dict) for the topic data and the tiny BERT: 2 patterns x 1 seed, a few steps.

    A dict in ``sections`` is merged into the section of that name; anything else replaces the key.
    """
    config: dict[str, Any] = {
        "name": "tiny",
        "task": str(data_dir / "task.yaml"),
        "data": {"pool": {"path": str(data_dir / "pool.csv")}, "test": {"path": str(data_dir / "test.csv")},
                 "n_labeled": 6, "seed": 1},
        "model": tiny_model_dict(backbone),
        "seeds": [1],
        "train": {"max_steps": 3, "batch_size": 2, "grad_accumulation": 1, "learning_rate": 1e-3,
                  "score_batch_size": 16},
        "score": {"batch_size": 16},
        "distill": {"max_steps": 4, "batch_size": 4, "learning_rate": 1e-3, "eval_batch_size": 16},
        "baseline": False,  # the supervised baseline is tested on its own (tests/test_pipeline.py)
        "store": str(store),
        "runs_dir": str(store.parent / "runs"),
    }
    for key, value in sections.items():
        if isinstance(value, dict) and isinstance(config.get(key), dict):
            config[key] = {**config[key], **value}
        else:
            config[key] = value
    return config


def tiny_run_config(data_dir: Path, backbone: Path, store: Path, **sections: Any):
    """``tiny_run_dict`` validated into a RunConfig."""
    from pet_core.run_config import RunConfig

    return RunConfig.model_validate(tiny_run_dict(data_dir, backbone, store, **sections))


# -- backbones derived from the tiny BERT -------------------------------------------------------------------
def save_headless_encoder(mlm_dir: Path, out: Path) -> Path:
    """Save only the encoder (BertModel): config.architectures = ['BertModel'], no cls.* weights."""
    from transformers import AutoTokenizer, BertForMaskedLM

    BertForMaskedLM.from_pretrained(mlm_dir).bert.save_pretrained(out, safe_serialization=True)
    AutoTokenizer.from_pretrained(mlm_dir).save_pretrained(out)
    return out


def drop_mlm_head(mlm_dir: Path, out: Path) -> Path:
    """A BertForMaskedLM checkpoint with its cls.* tensors removed from the safetensors file."""
    from safetensors.torch import load_file, save_file

    shutil.copytree(mlm_dir, out)
    weights = load_file(str(out / "model.safetensors"))
    kept = {k: v.contiguous() for k, v in weights.items() if not k.startswith("cls.")}
    assert len(kept) < len(weights)
    save_file(kept, str(out / "model.safetensors"), metadata={"format": "pt"})
    return out
