"""The cloze kind's run-config section."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from pet_core.kinds.demos import DemoFields
from pet_core.kinds.registry import KindConfig


class ClozeConfig(KindConfig, DemoFields):
    """PET (Schick & Schütze): the whole masked LM is fine-tuned; label logits are the verbalizer words'
    MLM logits at the mask. Training and scoring settings live in the run's ``train``/``score`` sections."""

    kind: Literal["cloze"] = Field(default="cloze", description="PET's cloze questions on a masked LM.")
