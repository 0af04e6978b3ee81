"""The masked-LM wrapper: loading any HF MLM, device and precision, and label logits at mask positions.

The encoder runs on every token; the MLM head runs only on the positions that need it (the mask
positions for label scores, the masked 15 % for the auxiliary loss), which on small models is as
costly as the encoder itself when run everywhere.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from transformers import AutoModelForMaskedLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from pet_core.backbone import BackboneError, loadable_backbone, resolve_backbone  # noqa: F401 - re-exported
from pet_core.config import ModelConfig, Precision
from pet_core.memory import configure_allocator, release_memory
from pet_core.pvp import Encoded

log = logging.getLogger(__name__)


def resolve_device(name: str) -> torch.device:
    """'auto' -> CUDA if available, else CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise BackboneError(f"device {name!r} requested but CUDA is not available")
    return device


def cpu_supports_bf16() -> bool:
    """True when this CPU runs bf16 matmuls natively (AVX512-BF16 / AMX)."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def resolve_precision(precision: Precision, device: torch.device) -> torch.dtype | None:
    """Autocast dtype for a device, or None for plain fp32."""
    if precision is Precision.fp32:
        return None
    if precision is Precision.bf16:
        return torch.bfloat16
    if precision is Precision.fp16:
        return torch.float16
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16 if device.type == "cpu" and cpu_supports_bf16() else None


def head_modules(model: PreTrainedModel) -> list[nn.Module]:
    """The MLM head: the model's children other than the encoder and loss modules, in order."""
    base = model.base_model
    return [m for _, m in model.named_children() if m is not base and not isinstance(m, nn.modules.loss._Loss)]


def gather_positions(hidden: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """hidden (B, T, H) at positions (B, M) -> (B, M, H)."""
    index = positions.unsqueeze(-1).expand(-1, -1, hidden.size(-1))
    return hidden.gather(1, index)


@dataclass
class Batch:
    """A padded batch of encoded examples and where they came from."""

    indices: list[int]
    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    mask_positions: torch.Tensor  # (B, M)
    soft_positions: torch.Tensor | None = None  # (B, S): where learned prompt tokens go (kinds that have them)

    def to(self, device: torch.device) -> Batch:
        """Move tensors to a device."""
        soft = None if self.soft_positions is None else self.soft_positions.to(device)
        return Batch(self.indices, self.input_ids.to(device), self.attention_mask.to(device),
                     self.mask_positions.to(device), soft)


def collate(encoded: Sequence[Encoded], indices: Sequence[int], pad_id: int) -> Batch:
    """Pad a list of encodings to the longest one (dynamic padding)."""
    width = max(len(encoded[i].input_ids) for i in indices)
    ids = torch.full((len(indices), width), pad_id, dtype=torch.long)
    att = torch.zeros((len(indices), width), dtype=torch.long)
    n_masks = max(len(encoded[i].mask_positions) for i in indices)
    pos = torch.zeros((len(indices), max(n_masks, 1)), dtype=torch.long)
    for row, i in enumerate(indices):
        seq = encoded[i].input_ids
        ids[row, : len(seq)] = torch.tensor(seq)
        att[row, : len(seq)] = 1
        if encoded[i].mask_positions:
            pos[row, : len(encoded[i].mask_positions)] = torch.tensor(encoded[i].mask_positions)
    n_soft = len(encoded[indices[0]].soft_positions)
    soft = torch.tensor([encoded[i].soft_positions for i in indices], dtype=torch.long) if n_soft else None
    return Batch(list(indices), ids, att, pos, soft)


def length_sorted_batches(encoded: Sequence[Encoded], batch_size: int) -> Iterator[list[int]]:
    """Index batches of similar length (longest first), so padding stays small."""
    order = sorted(range(len(encoded)), key=lambda i: -len(encoded[i].input_ids))
    for start in range(0, len(order), batch_size):
        yield order[start : start + batch_size]


class MaskedLM:
    """A masked LM with its tokenizer, device and autocast dtype."""

    def __init__(self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, config: ModelConfig):
        self.config = config
        self.device = resolve_device(config.device)
        self.autocast_dtype = resolve_precision(config.precision, self.device)
        self.model = model.to(self.device)
        self.tokenizer = tokenizer
        self.head = head_modules(model)
        self.missing_head_keys: list[str] = []

    @classmethod
    def load(cls, config: ModelConfig, source: str | None = None, require_head: bool = True) -> MaskedLM:
        """Load the backbone (or ``source``, e.g. a fine-tuned PVP model directory)."""
        name = loadable_backbone(source or config.backbone)
        configure_allocator()
        try:
            tokenizer = AutoTokenizer.from_pretrained(name, trust_remote_code=config.trust_remote_code)
            model, info = AutoModelForMaskedLM.from_pretrained(
                name, output_loading_info=True, dtype=torch.float32, **config.load_options())
        except (OSError, ValueError) as err:
            raise BackboneError(f"cannot load masked LM {name!r}: {err}") from err
        missing = [k for k in info.get("missing_keys", []) if not k.startswith(model.base_model_prefix + ".")]
        missing = [k for k in missing if "decoder.weight" not in k]
        if missing and require_head:
            raise BackboneError(
                f"backbone {name!r} has no trained MLM head (missing {sorted(missing)[:4]}): its label scores "
                "would be noise; adapt it first (adapt stage / pet_core.adapt.adapt_backbone)"
            )
        loaded = cls(model, tokenizer, config)
        loaded.missing_head_keys = sorted(missing)
        return loaded

    @contextlib.contextmanager
    def autocast(self) -> Iterator[None]:
        """bf16/fp16 autocast when configured, else nothing."""
        if self.autocast_dtype is None:
            yield
        else:
            with torch.autocast(self.device.type, dtype=self.autocast_dtype):
                yield

    def encode(self, batch: Batch) -> torch.Tensor:
        """Last hidden states (B, T, H) of the encoder."""
        out = self.model.base_model(input_ids=batch.input_ids, attention_mask=batch.attention_mask)
        return out[0]

    def vocab_logits(self, states: torch.Tensor) -> torch.Tensor:
        """Run the MLM head on selected hidden states (..., H) -> (..., V)."""
        for module in self.head:
            states = module(states)
        return states

    def mask_logits(self, batch: Batch) -> torch.Tensor:
        """Vocabulary logits at the mask positions only: (B, M, V), float32."""
        hidden = self.encode(batch)
        return self.vocab_logits(gather_positions(hidden, batch.mask_positions)).float()

    def save(self, out_dir: str | Path) -> None:
        """save_pretrained (safetensors) of model and tokenizer."""
        self.model.save_pretrained(out_dir, safe_serialization=True)
        self.tokenizer.save_pretrained(out_dir)

    def release(self) -> None:
        """Drop the model (and the head list, which holds the tied decoder) and return the freed memory to
        the OS (glibc heap, CUDA cache) before the next stage. Idempotent."""
        self.__dict__.pop("model", None)
        self.head = []
        release_memory()


def label_scores(vocab_logits: torch.Tensor, token_ids: list[int], owner: list[int], n_labels: int) -> torch.Tensor:
    """(B, V) vocabulary logits -> (B, |L|): the mean logit of each label's words."""
    words = vocab_logits[:, token_ids]  # (B, W)
    owner_t = torch.tensor(owner, device=words.device)
    summed = torch.zeros(words.size(0), n_labels, device=words.device, dtype=words.dtype)
    summed.index_add_(1, owner_t, words)
    counts = torch.bincount(owner_t, minlength=n_labels).to(words.dtype)
    return summed / counts
