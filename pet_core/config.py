"""Typed stage configs: every default of petflow lives here and nowhere else.

Each stage gets its own section; a stage's cache key hashes that section plus its input hashes.
"""

from __future__ import annotations

import enum
import json
import math
from pathlib import Path
from typing import Any, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator


class Precision(str, enum.Enum):
    """Numeric precision of forward/backward passes (weights stay float32)."""

    auto = "auto"  # bf16 on CUDA with bf16 support or a CPU with native bf16, fp16 on older CUDA, else fp32
    fp32 = "fp32"
    bf16 = "bf16"
    fp16 = "fp16"


class Reduction(str, enum.Enum):
    """How the ensemble merges model logits."""

    wmean = "wmean"  # weighted by each model's accuracy on T before training
    mean = "mean"


class StageConfig(BaseModel):
    """Base of every config: frozen fields, JSON round trip, a stable hashable dict."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_enum_values=False)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict (enums as values)."""
        return json.loads(self.model_dump_json())

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Self:
        """Validate a dict into this config."""
        return cls.model_validate(data)


class ModelConfig(StageConfig):
    """The backbone and how to run it; shared by all model stages."""

    backbone: str = Field(description="Hub name or local directory of a masked LM.")
    max_seq_length: int = Field(default=256, gt=8, le=4096)
    device: str = Field(default="auto", description="'auto', 'cpu', 'cuda', 'cuda:1', ...")
    precision: Precision = Precision.auto
    trust_remote_code: bool = Field(default=False, description="Only for backbones you trust.")
    allow_pickle_weights: bool = Field(default=False, description="Load a backbone that has only pickled "
                                       "PyTorch weights (.bin, read with torch.load, which can run code); by "
                                       "default only safetensors load. Only for backbones you trust.")

    def load_options(self) -> dict[str, Any]:
        """Keyword arguments of every ``from_pretrained`` call on the backbone (tokenizers take the first)."""
        return {"trust_remote_code": self.trust_remote_code,
                "use_safetensors": None if self.allow_pickle_weights else True}


class OptimConfig(StageConfig):
    """The optimizer settings every trainer shares (pattern models, distillation, baseline, adaptation):
    AdamW with a linear schedule, gradient accumulation and clipping. Each stage's section inherits them,
    so they are declared once and stay flat in the YAML (``train.learning_rate``)."""

    grad_accumulation: int = Field(default=1, ge=1, description="Micro-batches per optimizer step.")
    learning_rate: float = Field(default=1e-5, gt=0, description="AdamW learning rate (linear decay to 0).")
    weight_decay: float = Field(default=0.01, ge=0, description="AdamW weight decay (not on biases/LayerNorm).")
    adam_epsilon: float = Field(default=1e-8, gt=0, description="AdamW epsilon.")
    max_grad_norm: float = Field(default=1.0, gt=0, description="Gradient clipping norm.")
    warmup_steps: int = Field(default=0, ge=0, description="Linear warm-up steps.")


class TrainConfig(OptimConfig):
    """Fine-tuning one pattern model (paper defaults, with the auxiliary MLM loss)."""

    max_steps: int = Field(default=1000, ge=1, description="Optimizer steps (paper: 1000 with MLM, 250 without).")
    batch_size: int = Field(default=4, ge=1, description="Labelled examples per micro-batch.")
    grad_accumulation: int = Field(default=4, ge=1, description="Micro-batches per optimizer step (paper: 4).")
    mlm_alpha: float = Field(default=1e-4, ge=0, lt=1, description="Weight of the auxiliary MLM loss; 0 = off.")
    unlabeled_ratio: int = Field(default=3, ge=1, description="Unlabelled examples per labelled one, per step.")
    mlm_probability: float = Field(default=0.15, gt=0, lt=1)
    score_batch_size: int = Field(default=64, ge=1, description="Batch size for the accuracy-on-T probe.")

    @property
    def use_mlm(self) -> bool:
        """Whether the auxiliary MLM loss is on."""
        return self.mlm_alpha > 0


class ScoreConfig(StageConfig):
    """Inference of label logits: length-sorted batches streamed from Parquet."""

    batch_size: int = Field(default=64, ge=1)
    chunk_rows: int = Field(default=4096, ge=1, description="Rows read and length-sorted at a time.")


class EnsembleConfig(StageConfig):
    """Merging the models' logits into soft labels."""

    reduction: Reduction = Reduction.wmean
    temperature: float = Field(default=2.0, gt=0)


class IpetConfig(StageConfig):
    """iPET generations (paper defaults)."""

    generations: int | None = Field(default=None, ge=1, description="None: ceil(log_d(1000/|T|)).")
    scale_factor: float = Field(default=5.0, gt=1)
    labeller_fraction: float = Field(default=0.25, gt=0, le=1)
    temperature: float = Field(default=1.0, gt=0)
    zero_shot_top_k: int = Field(default=100, ge=1)

    def num_generations(self, n_labeled: int) -> int:
        """Generations after generation 0: the configured value or ceil(log_d(1000/|T|))."""
        if self.generations is not None:
            return self.generations
        base = max(n_labeled, 1)
        if base >= 1000:
            return 1
        return max(1, math.ceil(math.log(1000 / base, self.scale_factor) - 1e-9))


class HeadInit(str, enum.Enum):
    """How the final classifier's output layer starts."""

    probe = "probe"  # a linear probe fitted to the targets on the frozen backbone's features (LP-FT)
    random = "random"  # the model class's own random initialisation


class DistillConfig(OptimConfig):
    """Training the final sequence classifier on D with the ensemble's soft labels (and the baseline on T)."""

    epochs: float = Field(default=4.0, gt=0, description="Passes over the training set; the step count is "
                          "ceil(epochs·n / (batch_size·grad_accumulation)), within [min_steps, max_steps].")
    min_steps: int = Field(default=30, ge=1, description="At least this many steps, however small the set.")
    max_steps: int = Field(default=5000, ge=1, description="At most this many steps (the paper's budget).")
    batch_size: int = Field(default=16, ge=1, description="Examples per micro-batch.")
    learning_rate: float = Field(default=5e-5, gt=0, description="AdamW learning rate (linear decay to 0).")
    temperature: float = Field(default=2.0, gt=0, description="Student softmax temperature of the KL·T² loss.")
    head_init: HeadInit = Field(default=HeadInit.probe, description="'probe': fit the output layer to the "
                                "targets on frozen features before fine-tuning, so step 0 already follows the "
                                "teacher; 'random': the usual random head.")
    probe_l2: float = Field(default=1e-3, ge=0, description="L2 penalty of the probe fit (per example).")
    include_labeled: bool = Field(default=True, description="Train on T (gold labels, one-hot) ∪ D, not D only.")
    eval_batch_size: int = Field(default=64, ge=1, description="Batch size when scoring the classifier.")
    gradient_checkpointing: bool = Field(default=False, description="Recompute each layer's activations in the "
                                         "backward pass instead of keeping them: less memory for more compute.")

    def steps_for(self, n_examples: int) -> int:
        """Optimizer steps for a training set of ``n_examples`` rows."""
        per_step = self.batch_size * self.grad_accumulation
        wanted = math.ceil(self.epochs * n_examples / per_step)
        return max(1, min(self.max_steps, max(self.min_steps, wanted)))


class WordsConfig(StageConfig):
    """The words stage: LM-BFF's label-word search on T (``pet_core.label_search``), pairings ranked by
    cross-validated zero-shot accuracy; each searched pattern then uses its best pairing as its verbalizer."""

    patterns: list[int] | None = Field(default=None, description="Patterns whose words are searched; None = "
                                       "every pattern of the run without {soft} slots.")
    k_likely: int = Field(default=100, ge=1, description="Candidate words kept per label (by mean log-prob).")
    k_per_label: int = Field(default=10, ge=1, description="First candidates per label that pairings combine.")
    n_pairs: int = Field(default=5, ge=1, description="Best pairings kept.")
    folds: int = Field(default=4, ge=2, description="Cross-validation folds (at most the smallest label count).")
    max_combinations: int = Field(default=10000, ge=1, description="All pairings up to this many, else beam width.")
    seed_spec_words: bool = Field(default=False, description="The pattern's own words lead each label's candidates.")
    batch_size: int = Field(default=32, ge=1, description="Examples per forward pass.")

    @model_validator(mode="after")
    def _check(self) -> Self:
        if self.k_per_label > self.k_likely:
            raise ValueError(f"k_per_label ({self.k_per_label}) exceeds k_likely ({self.k_likely})")
        return self


class AdaptConfig(OptimConfig):
    """Continued masked-LM training of a backbone on unlabelled text (learns a missing MLM head)."""

    max_steps: int = Field(default=2000, ge=1, description="Optimizer steps; always run in full, so the adapted "
                           "backbone is the same on a busy and an idle machine (no wall-clock budget).")
    batch_size: int = Field(default=32, ge=1, description="Texts per micro-batch.")
    learning_rate: float = Field(default=1e-4, gt=0, description="AdamW learning rate of the encoder.")
    head_learning_rate: float = Field(default=1e-3, gt=0, description="For a newly initialised MLM head.")
    mlm_probability: float = Field(default=0.15, gt=0, lt=1)
    freeze_layers: int = Field(default=0, ge=0, description="Lowest encoder layers kept frozen.")
    max_seq_length: int = Field(default=128, gt=8)
    seed: int = 0


def load_json(path: str | Path, cls: type[StageConfig]) -> StageConfig:
    """Read a config snapshot written beside an artifact."""
    return cls.from_dict(json.loads(Path(path).read_text(encoding="utf-8")))
