"""What the flows hand from stage to stage beyond single stage results: typed, so a misspelt key is an error
where it is written, not a ``KeyError`` in a report at the end of a run."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from tasks.common import RefDict, StageResult


class TrainedModel(BaseModel):
    """One pattern model of a generation: who it is, how it did on its training set, its artifacts."""

    model_config = ConfigDict(frozen=True)

    model_id: str = Field(description="g<generation>-p<pattern>-s<seed>.")
    kind: str = Field(description="Its pattern-model kind (pet_core.kinds).")
    pattern: int
    seed: int
    generation: int
    n_labeled: int = Field(description="Rows of its training set.")
    pre_train_accuracy: float | None = Field(description="Accuracy on its training set before training (its "
                                             "ensemble weight).")
    post_train_accuracy: float | None
    model: RefDict = Field(description="The trained model directory.")
    cached: bool = Field(description="Taken from the store, not trained in this run.")
    unlabeled_logits: RefDict = Field(description="Its logits on D.")
    test_logits: RefDict | None = Field(default=None, description="Its logits on test, if there is one.")


class GenerationResult(BaseModel):
    """One generation: its models in plan order (the order of every logits list), ensemble metrics on test, the
    iPET training sets it was trained on (None for generation 0) and every stage result."""

    model_config = ConfigDict(frozen=True)

    generation: int
    models: list[TrainedModel]
    test: dict[str, Any] | None = None
    sets: StageResult | None = None
    stages: list[StageResult] = Field(default_factory=list)
