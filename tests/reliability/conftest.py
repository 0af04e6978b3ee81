"""Fixtures of the reliability tests: data folders, broken backbones, a store per test."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from reliability._pipeline_support import write_sentiment_data, write_topic_data


@pytest.fixture(scope="session")
def topic_data(tmp_path_factory) -> Path:
    """task.yaml + pool.csv (21 rows) + test.csv (9 rows) of the 3-topic toy task."""
    return write_topic_data(tmp_path_factory.mktemp("rel-topic"))


@pytest.fixture(scope="session")
def sentiment_data(tmp_path_factory) -> Path:
    """task.yaml + pool.csv (40 rows) of the 2-label toy sentiment task."""
    return write_sentiment_data(tmp_path_factory.mktemp("rel-sentiment"))


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


@pytest.fixture(scope="session")
def headless_backbone(tiny_mlm_dir, tmp_path_factory) -> Path:
    """The tiny BERT's encoder saved without an MLM head."""
    from transformers import AutoTokenizer, BertForMaskedLM

    out = tmp_path_factory.mktemp("headless-mlm") / "encoder"
    BertForMaskedLM.from_pretrained(tiny_mlm_dir).bert.save_pretrained(out, safe_serialization=True)
    AutoTokenizer.from_pretrained(tiny_mlm_dir).save_pretrained(out)
    return out
