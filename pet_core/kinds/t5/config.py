"""The ``t5`` kind's run-config section."""

from __future__ import annotations

import enum
from typing import Literal

from pydantic import Field

from pet_core.kinds.registry import KindConfig


class T5Score(str, enum.Enum):
    """How a label word's decoder target ``<extra_id_0> WORD <extra_id_1>`` becomes its score."""

    sum = "sum"  # summed log-likelihood of the target tokens (t-few)
    mean = "mean"  # the same, divided by the number of target tokens (length-normalised)
    first = "first"  # log-probability of the word's first token only (OpenPrompt's seq2seq reading)


class T5KindConfig(KindConfig):
    """A seq2seq LM (T5, Flan-T5) fine-tuned on PET's patterns as text-to-text: ``{mask}`` is written as the
    sentinel ``<extra_id_0>`` in the encoder input, and each label word is scored by the decoder as the span
    that fills it (``<extra_id_0> WORD <extra_id_1>``, T5's span-corruption format). Several words per label
    average their scores. The whole model trains; there is no auxiliary loss."""

    kind: Literal["t5"] = Field(default="t5", description="Text-to-text patterns on a seq2seq LM (T5).")
    score: T5Score = Field(default=T5Score.sum, description="Label-word score: 'sum' of the target's token "
                           "log-probs, 'mean' (length-normalised) or 'first' (the word's first token only).")
