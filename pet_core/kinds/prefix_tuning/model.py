"""The ``prefix_tuning`` kind: PET's cloze question on a frozen LM that attends to learned per-layer prefixes.

The prefix enters every self-attention layer as a ``DynamicCache`` of keys and values (transformers 5's
``cache`` argument; peft 0.21's prefix route passes the ``past_key_values`` alias removed in 5.40). The
input keeps position ids 0..T-1, so the mask logits at start are the cloze model's on a near-neutral prefix.
Needs a backbone whose encoder takes ``cache`` (BERT, RoBERTa and their relatives).
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Self

import torch
from transformers import DynamicCache

from pet_core.backbone import BackboneError
from pet_core.config import ModelConfig
from pet_core.keys import backbone_fingerprint
from pet_core.kinds.footprint import BackboneShape, count_on_meta
from pet_core.kinds.learned import LearnedPromptModel
from pet_core.kinds.prefix_tuning.config import PrefixTuningConfig
from pet_core.kinds.prompts import PrefixEncoder, init_token_ids, load_adapter
from pet_core.kinds.registry import KindConfig
from pet_core.modeling import Batch, MaskedLM
from pet_core.optim import ParamGroup
from pet_core.pvp import PVP, Encoded
from pet_core.spec import TaskSpec


class PrefixTuningModel(LearnedPromptModel):
    """Label logits of one pattern on a frozen masked LM with a learned prefix in every layer."""

    kind = "prefix_tuning"

    def __init__(self, mlm: MaskedLM, pvp: PVP, kind_config: KindConfig):
        super().__init__(mlm, pvp, kind_config)
        assert isinstance(kind_config, PrefixTuningConfig)
        self.settings = kind_config
        lm = mlm.model
        if "cache" not in inspect.signature(lm.base_model.forward).parameters:
            raise BackboneError(f"kind 'prefix_tuning' needs an encoder that takes a key/value cache; "
                                f"{type(lm.base_model).__name__} does not: use kind 'prompt_tuning' or 'ptuning'")
        cfg = lm.config
        heads = cfg.num_attention_heads
        self._attach(PrefixEncoder(kind_config.n_tokens, cfg.num_hidden_layers, heads, cfg.hidden_size // heads,
                                   cfg.hidden_size, kind_config.projection,
                                   None if kind_config.projection else self._init_prefix()), finetune_lm=False)

    @torch.no_grad()
    def _init_prefix(self) -> torch.Tensor:
        """The LM's own keys and values of ``init_text`` (or of random vocabulary tokens): (n, layers, 2, ...)."""
        tokenizer = self.mlm.tokenizer
        ids = init_token_ids(tokenizer, self.settings.n_tokens, self.settings.init_text, len(tokenizer))
        cache = DynamicCache(config=self.mlm.model.config)
        self.mlm.model.base_model(input_ids=torch.tensor([ids], device=self.mlm.device), cache=cache, use_cache=True)
        kv = torch.stack([torch.stack([layer.keys[0], layer.values[0]]) for layer in cache.layers])  # (L,2,h,n,d)
        return kv.permute(3, 0, 1, 2, 4).contiguous()

    @classmethod
    def _trainable(cls, pvp: PVP, kind_config: KindConfig, shape: BackboneShape) -> int | None:
        """The prefix encoder."""
        assert isinstance(kind_config, PrefixTuningConfig)
        return count_on_meta(PrefixEncoder, kind_config.n_tokens, shape.layers, shape.heads,
                             shape.hidden // shape.heads, shape.hidden, kind_config.projection)

    # -- life cycle ---------------------------------------------------------------------------
    @classmethod
    def load_weights(cls, spec: TaskSpec, pattern: int, model_dir: str | Path, model_config: ModelConfig,
                     kind_config: KindConfig) -> Self:
        """The saved prefix on the run's backbone (checked by content hash)."""
        model = cls._on(MaskedLM.load(model_config), spec, pattern, model_config, kind_config)
        load_adapter(model_dir, model.encoder, backbone_fingerprint(model_config.backbone))
        return model

    def save_weights(self, out_dir: str | Path) -> None:
        """The prefix encoder only (safetensors) and its base backbone's content hash."""
        self.save_adapter(out_dir, n_tokens=self.settings.n_tokens, projection=self.settings.projection)

    # -- the model ------------------------------------------------------------------------------
    def param_groups(self, lr: float) -> list[ParamGroup]:
        """The prefix at the kind's learning rate (the LM is frozen)."""
        return [ParamGroup(list(self.encoder.named_parameters(prefix="prefix")), self.settings.learning_rate)]

    def encode_unlabeled(self, a: list[str], b: list[str | None]) -> list[Encoded] | None:
        """No auxiliary MLM loss: the LM is frozen."""
        return None

    def _hidden(self, batch: Batch) -> torch.Tensor:
        """The encoder attending to the prefix in every layer; real tokens keep positions 0..T-1."""
        size, width = batch.input_ids.shape
        kv = self.encoder()  # (L, 2, heads, n, d)
        kv = kv.unsqueeze(3).expand(-1, -1, -1, size, -1, -1).transpose(2, 3)  # (L, 2, B, heads, n, d)
        cache = DynamicCache([(layer[0], layer[1]) for layer in kv])
        ones = torch.ones(size, self.settings.n_tokens, dtype=batch.attention_mask.dtype, device=self.mlm.device)
        positions = torch.arange(width, device=self.mlm.device).expand(size, width)
        attention = torch.cat([ones, batch.attention_mask], 1)
        return self.mlm.model.base_model(input_ids=batch.input_ids, attention_mask=attention, position_ids=positions,
                                         cache=cache, use_cache=False)[0]
