"""The ``prefix_tuning`` kind's run-config section."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from pet_core.kinds.demos import DemoFields
from pet_core.kinds.registry import KindConfig


class PrefixTuningConfig(KindConfig, DemoFields):
    """Prefix tuning (Li & Liang) on PET's cloze question: ``n_tokens`` learned key/value positions in every
    attention layer of a frozen LM; ``projection`` = P-tuning v2's (and peft's ``prefix_projection``)
    two-layer reparametrisation. Only the prefix is saved."""

    kind: Literal["prefix_tuning"] = Field(default="prefix_tuning", description="Per-layer prefixes, frozen LM.")
    n_tokens: int = Field(default=8, ge=1, le=128, description="Prefix positions per layer.")
    projection: int | None = Field(default=None, ge=1, description="Hidden width of the reparametrising MLP "
                                   "(P-tuning v2 uses 512); None: the prefix is trained directly.")
    init_text: str | None = Field(default=None, description="Without projection, start the prefix as the LM's "
                                  "own keys/values of this text (cycled to n_tokens); None: of random vocabulary "
                                  "tokens.")
    learning_rate: float = Field(default=1e-2, gt=0, description="AdamW learning rate of the prefix (P-tuning v2: "
                                 "5e-3 to 1e-2).")
