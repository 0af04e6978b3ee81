"""Cloze questions with learned soft tokens: the ``ptuning`` and ``prompt_tuning`` kinds.

The template's ``{soft}`` slots (and ``prepend`` tokens after [CLS]) hold placeholder ids in the encoding;
the encoder pass embeds the input and writes the prompt encoder's vectors over those positions, so the
mask keeps its position, segment ids are untouched and the label logits, multi-token decoding and PET's
auxiliary loss are the cloze kind's. With the LM frozen only the prompt encoder trains and is saved
(``pet_core.kinds.prompts``); the base backbone is named by content hash and checked on load.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Self

import torch
from torch import nn

from pet_core.config import ModelConfig
from pet_core.keys import backbone_fingerprint
from pet_core.kinds.footprint import BackboneShape, count_on_meta
from pet_core.kinds.learned import LearnedPromptModel
from pet_core.kinds.prompts import SoftPromptEncoder, init_token_ids, load_adapter
from pet_core.kinds.ptuning.config import SoftTokens
from pet_core.kinds.registry import KindConfig
from pet_core.modeling import Batch, MaskedLM
from pet_core.optim import ParamGroup
from pet_core.pvp import PVP, Encoded, parse_template
from pet_core.spec import TaskSpec


def _soft_tokens(kind_config: KindConfig, pvp_or_slots: int) -> SoftTokens:
    return kind_config.soft_tokens(pvp_or_slots)  # type: ignore[attr-defined]


class SoftTokenModel(LearnedPromptModel):
    """A cloze model whose pattern holds learned soft tokens (P-tuning's kind; prompt tuning's subclasses it)."""

    kind = "ptuning"

    def __init__(self, mlm: MaskedLM, pvp: PVP, kind_config: KindConfig):
        super().__init__(mlm, pvp, kind_config)
        self.settings = _soft_tokens(kind_config, pvp.n_soft - pvp.prepend)
        embeddings = mlm.model.get_input_embeddings()
        self._attach(SoftPromptEncoder(pvp.n_soft, embeddings.embedding_dim, self.settings.encoder,
                                       self._init_vectors(embeddings)), self.settings.finetune_lm)

    @classmethod
    def _pvp(cls, spec: TaskSpec, pattern: int, tokenizer: Any, model_config: ModelConfig,
             kind_config: KindConfig) -> PVP:
        """The pattern with the kind's prepended soft tokens beside the template's own ``{soft}`` slots."""
        slots = sum(part.count for part in parse_template(spec.patterns[pattern].template) if part.kind == "soft")
        return PVP(spec, pattern, tokenizer, model_config.max_seq_length,
                   prepend=_soft_tokens(kind_config, slots).prepend)

    @classmethod
    def _trainable(cls, pvp: PVP, kind_config: KindConfig, shape: BackboneShape) -> int | None:
        """The prompt encoder, plus the LM when it is fine-tuned."""
        settings = _soft_tokens(kind_config, pvp.n_soft - pvp.prepend)
        prompt = count_on_meta(SoftPromptEncoder, pvp.n_soft, shape.hidden, settings.encoder)
        if not settings.finetune_lm:
            return prompt
        return None if shape.parameters is None else shape.parameters + prompt

    def _init_vectors(self, embeddings: nn.Module) -> torch.Tensor | None:
        """Start values of the soft tokens: ``init_text``'s word embeddings, random vocabulary embeddings, or
        None (the encoder's own N(0, 1) init)."""
        if not (self.settings.init_text or self.settings.vocab_init):
            return None
        ids = init_token_ids(self.mlm.tokenizer, self.pvp.n_soft, self.settings.init_text, embeddings.num_embeddings)
        return embeddings.weight.detach()[torch.tensor(ids, device=embeddings.weight.device)].clone()

    # -- life cycle ---------------------------------------------------------------------------
    @classmethod
    def load_weights(cls, spec: TaskSpec, pattern: int, model_dir: str | Path, model_config: ModelConfig,
                     kind_config: KindConfig) -> Self:
        """The saved adapter on the run's backbone (frozen LM), or on the saved fine-tuned LM."""
        finetuned = (Path(model_dir) / "config.json").is_file()
        mlm = MaskedLM.load(model_config, source=str(model_dir) if finetuned else None)
        model = cls._on(mlm, spec, pattern, model_config, kind_config)
        load_adapter(model_dir, model.encoder, None if finetuned else backbone_fingerprint(model_config.backbone))
        return model

    def save_weights(self, out_dir: str | Path) -> None:
        """The prompt encoder (safetensors), and the whole LM when it was fine-tuned."""
        if self.settings.finetune_lm:
            self.mlm.save(out_dir)
        self.save_adapter(out_dir, soft_tokens=self.pvp.n_soft, encoder=self.settings.encoder,
                          finetune_lm=self.settings.finetune_lm)

    # -- the model ------------------------------------------------------------------------------
    def param_groups(self, lr: float) -> list[ParamGroup]:
        """The prompt encoder at its own learning rate; the LM (when it trains) at ``lr``."""
        groups = [ParamGroup(list(self.encoder.named_parameters(prefix="prompt")), self.settings.learning_rate)]
        if self.settings.finetune_lm:
            groups.insert(0, ParamGroup([(n, p) for n, p in self.mlm.model.named_parameters() if p.requires_grad],
                                        lr))
        return groups

    def encode_unlabeled(self, a: list[str], b: list[str | None]) -> list[Encoded] | None:
        """PET's auxiliary MLM loss only when the LM trains (a frozen LM has nothing to learn from it)."""
        return super().encode_unlabeled(a, b) if self.settings.finetune_lm else None

    def _hidden(self, batch: Batch) -> torch.Tensor:
        """Embed the input, put the soft-token vectors at their positions, run the encoder."""
        lm = self.mlm.model
        embeds = lm.get_input_embeddings()(batch.input_ids)
        prompt = self.encoder().to(embeds.dtype)
        index = batch.soft_positions.unsqueeze(-1).expand(-1, -1, embeds.size(-1))
        embeds = embeds.scatter(1, index, prompt.unsqueeze(0).expand(embeds.size(0), -1, -1))
        return lm.base_model(inputs_embeds=embeds, attention_mask=batch.attention_mask)[0]


class PromptTuningModel(SoftTokenModel):
    """Prompt tuning: soft tokens before the input of a frozen LM (settings from ``PromptTuningConfig``)."""

    kind = "prompt_tuning"
