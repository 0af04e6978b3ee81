"""Fixtures of the reliability tests: broken backbones.

The toy data folders (``topic_data``, ``sentiment_data``) and ``headless_backbone`` are in tests/conftest.py.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def nan_backbone(tiny_mlm_dir, tmp_path_factory) -> Path:
    """The tiny BERT with every floating-point weight set to NaN."""
    from safetensors.torch import load_file, save_file

    out = tmp_path_factory.mktemp("nan-mlm") / "model"
    shutil.copytree(tiny_mlm_dir, out)
    weights = load_file(str(out / "model.safetensors"))
    save_file({k: (v.clone().fill_(float("nan")) if v.is_floating_point() else v) for k, v in weights.items()},
              str(out / "model.safetensors"), metadata={"format": "pt"})
    return out
