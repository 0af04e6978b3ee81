"""The pattern-model interface: what training, scoring and validation know about any kind.

A kind turns texts into label logits for one pattern: ``encode`` prepares a table's texts once,
``label_logits`` gives differentiable (B, |L|) logits for a batch of them, an optional auxiliary loss
uses unlabelled texts, ``param_groups`` says what trains at which learning rate, ``save``/``load``
round-trip the trained model (the kind is read back from its record). ``predict`` and ``accuracy`` are
written once here.
"""

from __future__ import annotations

import contextlib
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Self

import numpy as np
import pyarrow as pa
import torch
from torch import nn

from pet_core.artifacts import ArtifactError, read_json
from pet_core.config import ModelConfig, TrainConfig
from pet_core.kinds.registry import DEFAULT_KIND, TRAIN_RECORD, KindConfig, get_kind
from pet_core.optim import ParamGroup
from pet_core.spec import TaskSpec

ProgressFn = Callable[[int, int], None]


@dataclass
class PatternCheck:
    """What ``PatternModel.check`` found for one pattern on sample texts."""

    sampled: int
    truncated: int
    notes: list[str] = field(default_factory=list)
    trainable: int | None = None  # parameters that will train (None: unknown without weights)
    words: dict[str, list[str]] = field(default_factory=dict)  # verbalizer word -> the tokens it became


def label_indices(table: pa.Table, spec: TaskSpec) -> np.ndarray:
    """Gold label indices in the spec's order."""
    index = {name: i for i, name in enumerate(spec.label_names)}
    return np.array([index[label] for label in table.column("label").to_pylist()], dtype=np.int64)


def texts(table: pa.Table) -> tuple[list[str], list[str | None]]:
    """The ``a`` and ``b`` columns as lists."""
    return table.column("a").to_pylist(), table.column("b").to_pylist()


class PatternModel(ABC):
    """One pattern's model. Subclasses set ``kind`` and are registered once (pet_core.kinds.registry)."""

    kind: ClassVar[str]
    masked_lm: ClassVar[bool] = True  # runs on a masked LM (validation checks its mask token and MLM head)
    n_labels: int
    kind_config: KindConfig

    # -- life cycle ---------------------------------------------------------------------------
    @classmethod
    @abstractmethod
    def create(cls, spec: TaskSpec, pattern: int, model_config: ModelConfig, kind_config: KindConfig) -> Self:
        """A fresh model for one pattern, from the backbone."""

    @classmethod
    @abstractmethod
    def load(cls, spec: TaskSpec, pattern: int, model_dir: str | Path, model_config: ModelConfig,
             kind_config: KindConfig) -> Self:
        """A trained model saved by ``save``."""

    @abstractmethod
    def save(self, out_dir: str | Path) -> None:
        """Write what ``load`` needs (the whole model, or an adapter only) into ``out_dir``."""

    def release(self) -> None:
        """Drop the weights and hand their memory back before the next stage (idempotent)."""

    def use_labeled(self, table: pa.Table, seed: int) -> None:
        """Hand the kind T before training (cloze kinds draw ``{demos}`` from it with ``seed``); default: nothing."""

    @classmethod
    @abstractmethod
    def check(cls, spec: TaskSpec, pattern: int, tokenizer: Any, model_config: ModelConfig,
              kind_config: KindConfig, a: list[str], b: list[str | None]) -> PatternCheck:
        """Validate the pattern for this kind without weights (raise ValueError naming the problem)."""

    # -- the model ------------------------------------------------------------------------------
    @property
    @abstractmethod
    def module(self) -> nn.Module:
        """The torch module that trains (for modes, clipping and the default parameter group)."""

    @property
    @abstractmethod
    def device(self) -> torch.device:
        """Where the model runs."""

    @property
    def autocast_dtype(self) -> torch.dtype | None:
        """The autocast dtype of forward passes (None: fp32); fp16 on CUDA turns on loss scaling."""
        return None

    def autocast(self) -> contextlib.AbstractContextManager:
        """The precision context of forward passes (none by default)."""
        return contextlib.nullcontext()

    def param_groups(self, lr: float) -> list[ParamGroup]:
        """What trains, at which learning rate: by default every trainable parameter at ``lr``."""
        return [ParamGroup([(n, p) for n, p in self.module.named_parameters() if p.requires_grad], lr)]

    # -- data -----------------------------------------------------------------------------------
    @abstractmethod
    def encode(self, a: list[str], b: list[str | None]) -> Any:
        """Encodings of labelled or scored texts, indexed by row in ``label_logits``."""

    @abstractmethod
    def lengths(self, encodings: Any) -> list[int]:
        """Token length of each encoded row (batches at inference are sorted by it)."""

    @abstractmethod
    def label_logits(self, encodings: Any, indices: list[int]) -> torch.Tensor:
        """(B, |L|) label logits of the given rows, with gradients."""

    def inference_logits(self, encodings: Any, indices: list[int]) -> torch.Tensor:
        """(B, |L|) label logits at inference (a kind may decode differently); default ``label_logits``."""
        return self.label_logits(encodings, indices)

    def encode_unlabeled(self, a: list[str], b: list[str | None]) -> Any | None:
        """Encodings of unlabelled texts for ``aux_loss``; None: this kind has no auxiliary loss."""
        return None

    def aux_loss(self, encodings: Any, indices: list[int], generator: torch.Generator,
                 config: TrainConfig) -> torch.Tensor:
        """The auxiliary loss on unlabelled rows (only called when ``encode_unlabeled`` gave encodings)."""
        raise NotImplementedError(f"kind {self.kind!r} has no auxiliary loss")

    # -- written once ---------------------------------------------------------------------------
    def train(self, mode: bool = True) -> None:
        """Training or evaluation mode of the module."""
        self.module.train(mode)

    @torch.inference_mode()
    def predict(self, a: list[str], b: list[str | None], batch_size: int,
                progress: ProgressFn | None = None) -> np.ndarray:
        """(n, |L|) float32 label logits, in the input order; batches sorted by length (longest first)."""
        encodings = self.encode(a, b)
        out = np.zeros((len(a), self.n_labels), dtype=np.float32)
        done = 0
        for indices in self.batches(encodings, batch_size):
            with self.autocast():
                logits = self.inference_logits(encodings, indices)
            out[indices] = logits.float().cpu().numpy()
            done += len(indices)
            if progress is not None:
                progress(done, len(a))
        return out

    def accuracy(self, table: pa.Table, spec: TaskSpec, batch_size: int) -> float | None:
        """Accuracy on a labelled table (None when it is empty), in evaluation mode."""
        if table.num_rows == 0:
            return None
        was_training = self.module.training
        self.train(False)
        logits = self.predict(*texts(table), batch_size=batch_size)
        self.train(was_training)
        return float((logits.argmax(1) == label_indices(table, spec)).mean())

    def batches(self, encodings: Any, batch_size: int) -> Iterator[list[int]]:
        """Row batches sorted by length, longest first."""
        lengths = self.lengths(encodings)
        order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
        for start in range(0, len(order), batch_size):
            yield order[start : start + batch_size]


def record_kind(record: dict[str, Any]) -> KindConfig:
    """The kind section a train record holds (records from before kinds existed are cloze)."""
    section = record.get("kind") or {"kind": DEFAULT_KIND}
    return get_kind(section["kind"]).config(section)


def load_pattern_model(spec: TaskSpec, model_dir: str | Path, model_config: ModelConfig,
                       pattern: int | None = None) -> tuple[PatternModel, dict[str, Any]]:
    """Load a trained model directory with its train record; the kind comes from the record."""
    record_path = Path(model_dir) / TRAIN_RECORD
    if not record_path.is_file():
        raise ArtifactError(f"{model_dir} has no {TRAIN_RECORD}: not a finished pattern model")
    record = read_json(record_path)
    kind_config = record_kind(record)
    pattern = record["pattern"] if pattern is None else pattern
    model = get_kind(kind_config.kind).model_class().load(spec, pattern, model_dir, model_config, kind_config)
    model.train(False)
    return model, record
