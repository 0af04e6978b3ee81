"""Learned prompt parameters of the kinds that have them, and their adapter files.

``SoftPromptEncoder`` gives the vectors of soft tokens: a plain embedding (prompt tuning), or an embedding
reparametrised by an MLP or a bidirectional LSTM + MLP (P-tuning, as THUDM/P-tuning's prompt encoder).
``PrefixEncoder`` gives per-layer attention keys and values (prefix tuning; with ``projection`` the
two-layer reparametrisation of P-tuning v2 / peft's ``prefix_projection``).

Why not peft (0.21.2 on transformers 5.24; ``notes/prompt-methods.md``): its prompt methods on a masked LM
need ``FEATURE_EXTRACTION``, which drops ``token_type_ids``; they only prepend, so P-tuning's tokens inside
the pattern cannot be placed; ``save_pretrained`` keeps only the final prompt embeddings (the P-tuning
encoder is lost and a loaded prompt adapter refuses to train); its prefix tuning passes
``past_key_values``, an alias transformers removes in 5.40. Each piece is a few lines of torch here, and
the adapter is the encoder's own state dict in safetensors, beside a JSON naming its base backbone by
content hash.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from pet_core.artifacts import ArtifactError, read_json, write_json

ADAPTER_WEIGHTS = "prompt_adapter.safetensors"
ADAPTER_RECORD = "prompt_adapter.json"
Encoder = Literal["none", "mlp", "lstm"]


class SoftPromptEncoder(nn.Module):
    """``n`` soft-token vectors of width ``hidden``, optionally reparametrised by an MLP or LSTM + MLP."""

    def __init__(self, n: int, hidden: int, encoder: Encoder = "none", init: torch.Tensor | None = None):
        super().__init__()
        self.embedding = nn.Embedding(n, hidden)
        if init is not None:
            self.embedding.weight.data.copy_(init)
        self.lstm = (nn.LSTM(hidden, hidden // 2, num_layers=2, bidirectional=True, batch_first=True)
                     if encoder == "lstm" else None)
        self.mlp = (nn.Sequential(nn.Linear(2 * (hidden // 2) if self.lstm else hidden, hidden), nn.ReLU(),
                                  nn.Linear(hidden, hidden)) if encoder != "none" else None)

    def forward(self) -> torch.Tensor:
        """(n, hidden) soft-token vectors, in fp32 (tiny; and oneDNN has no bf16 LSTM under CPU autocast)."""
        x = self.embedding.weight.unsqueeze(0)
        with torch.autocast(x.device.type, enabled=False):
            if self.lstm is not None:
                x = self.lstm(x)[0]
            if self.mlp is not None:
                x = self.mlp(x)
        return x[0]


class PrefixEncoder(nn.Module):
    """``n`` prefix positions of keys and values for every layer: (layers, 2, heads, n, head_dim)."""

    def __init__(self, n: int, layers: int, heads: int, head_dim: int, hidden: int, projection: int | None = None,
                 init: torch.Tensor | None = None):
        super().__init__()
        self.shape = (n, layers, 2, heads, head_dim)
        width = layers * 2 * heads * head_dim
        if projection:
            self.embedding = nn.Embedding(n, hidden)
            self.transform: nn.Module = nn.Sequential(nn.Linear(hidden, projection), nn.Tanh(),
                                                      nn.Linear(projection, width))
        else:
            self.embedding = nn.Embedding(n, width)
            self.transform = nn.Identity()
            if init is not None:
                self.embedding.weight.data.copy_(init.reshape(n, width))

    def forward(self) -> torch.Tensor:
        """(layers, 2, heads, n, head_dim) keys and values (fp32, as the soft tokens)."""
        with torch.autocast(self.embedding.weight.device.type, enabled=False):
            return self.transform(self.embedding.weight).view(self.shape).permute(1, 2, 3, 0, 4)


def init_token_ids(tokenizer: Any, n: int, text: str | None, limit: int) -> list[int]:
    """``n`` token ids to start a learned prompt from: ``text``'s tokens cycled to ``n``, or (without text, or
    when it tokenizes to nothing) random non-special ids below ``limit`` drawn from torch's seeded generator."""
    ids = tokenizer(text, add_special_tokens=False)["input_ids"] if text else []
    if ids:
        return [ids[i % len(ids)] for i in range(n)]
    special = set(tokenizer.all_special_ids)
    candidates = torch.tensor([i for i in range(min(limit, 30000)) if i not in special])
    return candidates[torch.randint(len(candidates), (n,))].tolist()


def trainable_parameters(module: nn.Module) -> int:
    """Number of parameters that train."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


def save_adapter(out_dir: str | Path, encoder: nn.Module, info: dict[str, Any]) -> None:
    """The encoder's state dict (safetensors) and ``info`` (its base backbone, sizes) as JSON."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().contiguous().cpu() for k, v in encoder.state_dict().items()}, out / ADAPTER_WEIGHTS)
    write_json({**info, "trainable_parameters": trainable_parameters(encoder)}, out / ADAPTER_RECORD)


def load_adapter(model_dir: str | Path, encoder: nn.Module, base_fingerprint: str | None = None) -> dict[str, Any]:
    """Load ``encoder``'s weights from ``model_dir``; with ``base_fingerprint``, the adapter must have been
    trained on that backbone (ArtifactError naming both otherwise)."""
    directory = Path(model_dir)
    weights, record = directory / ADAPTER_WEIGHTS, directory / ADAPTER_RECORD
    if not weights.is_file() or not record.is_file():
        raise ArtifactError(f"{directory} has no {ADAPTER_WEIGHTS} / {ADAPTER_RECORD}: not a prompt adapter")
    info = read_json(record)
    base = info.get("base", {})
    if base_fingerprint is not None and base.get("fingerprint") != base_fingerprint:
        raise ArtifactError(f"{directory} was trained on backbone {base.get('backbone')!r} "
                            f"(content {str(base.get('fingerprint'))[:12]}), not on this run's backbone "
                            f"(content {base_fingerprint[:12]}); load it with the backbone it was trained on")
    encoder.load_state_dict(load_file(weights, device=str(next(encoder.parameters()).device)))
    return info
