"""The ``ptuning`` and ``prompt_tuning`` kinds' run-config sections, and what they share."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pydantic import Field

from pet_core.kinds.demos import DemoFields
from pet_core.kinds.registry import KindConfig


@dataclass(frozen=True)
class SoftTokens:
    """How a kind with learned prompt tokens sets them up (the model reads only this)."""

    prepend: int  # soft tokens after the leading special tokens, before the template's own {soft} slots
    encoder: Literal["none", "mlp", "lstm"]
    finetune_lm: bool
    learning_rate: float  # of the prompt encoder (the LM trains at train.learning_rate)
    init_text: str | None  # soft tokens start as this text's word embeddings; None: the kind's default init
    vocab_init: bool  # without init_text: start from embeddings of random vocabulary tokens (else N(0, 1))


class PTuningConfig(KindConfig, DemoFields):
    """P-tuning ("GPT Understands, Too"): pseudo tokens at the template's ``{soft}`` / ``{soft:N}`` slots, made
    by a prompt encoder (bidirectional LSTM + MLP, or MLP), trained with PET's loss beside the LM (THUDM's
    few-shot setting) or with the LM frozen (its LAMA setting)."""

    kind: Literal["ptuning"] = Field(default="ptuning", description="P-tuning: learned pseudo tokens in the pattern.")
    encoder: Literal["lstm", "mlp"] = Field(default="lstm", description="Prompt encoder: 'lstm' (2-layer "
                                            "bidirectional LSTM + MLP, as published) or 'mlp'.")
    prepend: int | None = Field(default=None, ge=0, le=64, description="Pseudo tokens before the text; None: 4 when "
                                "the template has no {soft} slot, else 0.")
    finetune_lm: bool = Field(default=True, description="Train the LM too (few-shot P-tuning); false: LM frozen, "
                              "only the prompt encoder is saved.")
    encoder_learning_rate: float = Field(default=1e-4, gt=0, description="AdamW learning rate of the prompt "
                                         "encoder (THUDM: 1e-4 beside the LM's 1e-5).")

    def soft_tokens(self, template_slots: int) -> SoftTokens:
        """The setup for a template holding ``template_slots`` soft tokens."""
        prepend = self.prepend if self.prepend is not None else (0 if template_slots else 4)
        return SoftTokens(prepend, self.encoder, self.finetune_lm, self.encoder_learning_rate, None, False)


class PromptTuningConfig(KindConfig, DemoFields):
    """Prompt tuning (Lester et al.): ``n_tokens`` soft tokens in front of the input of a frozen LM; only
    they train and only they are saved (kilobytes per model)."""

    kind: Literal["prompt_tuning"] = Field(default="prompt_tuning", description="Soft tokens before a frozen LM.")
    n_tokens: int = Field(default=8, ge=1, le=64, description="Soft tokens put before the text (the template's "
                          "own {soft} slots come on top).")
    init_text: str | None = Field(default=None, description="Start the soft tokens as this text's word "
                                  "embeddings (cycled to n_tokens); None: embeddings of random vocabulary tokens.")
    learning_rate: float = Field(default=3e-2, gt=0, description="AdamW learning rate of the soft tokens.")

    def soft_tokens(self, template_slots: int) -> SoftTokens:
        """The setup: a frozen LM and a plain embedding."""
        return SoftTokens(self.n_tokens, "none", False, self.learning_rate, self.init_text, True)
