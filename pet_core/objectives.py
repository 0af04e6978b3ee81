"""The losses the trainers optimise: CE on label logits (with iPET's sample weights), distillation from soft
labels (KL·T²), and the two things a final classifier can learn from (soft labels or gold labels)."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn


def weighted_cross_entropy(logits: torch.Tensor, gold: torch.Tensor,
                           weights: torch.Tensor | None = None) -> torch.Tensor:
    """Cross-entropy on label indices, the mean of the per-row losses weighted by ``weights`` (iPET's sample
    weights; None: equal)."""
    per_row = nn.functional.cross_entropy(logits, gold, reduction="none")
    return per_row.mean() if weights is None else (per_row * weights).sum() / weights.sum()


def distillation(logits: torch.Tensor, soft_targets: torch.Tensor, temperature: float) -> torch.Tensor:
    """KL(targets ‖ softmax(logits / T)) · T² (Hinton et al.), batch mean."""
    log_p = torch.log_softmax(logits / temperature, dim=-1)
    return nn.functional.kl_div(log_p, soft_targets, reduction="batchmean") * temperature**2


class Objective:
    """What the classifier learns from: the ensemble's soft labels (distillation) or gold labels (baseline)."""

    stage = "distill"

    def probe_targets(self, targets: np.ndarray, n_labels: int) -> tuple[np.ndarray, float]:
        """Probability rows and temperature for the probe fit of the output layer."""
        raise NotImplementedError

    def tensor(self, targets: np.ndarray) -> torch.Tensor:
        """The targets as a tensor indexed by row."""
        raise NotImplementedError

    def loss(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """One micro-batch's loss."""
        raise NotImplementedError


class SoftLabels(Objective):
    """KL(targets ‖ softmax(s/T))·T² on probability rows: distillation from the ensemble."""

    stage = "distill"

    def __init__(self, temperature: float):
        self.temperature = temperature

    def probe_targets(self, targets: np.ndarray, n_labels: int) -> tuple[np.ndarray, float]:
        return targets.astype(np.float32), self.temperature

    def tensor(self, targets: np.ndarray) -> torch.Tensor:
        return torch.tensor(targets, dtype=torch.float32)

    def loss(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return distillation(logits, targets, self.temperature)


class GoldLabels(Objective):
    """Cross-entropy on label indices: the supervised baseline on T."""

    stage = "supervised"

    def probe_targets(self, targets: np.ndarray, n_labels: int) -> tuple[np.ndarray, float]:
        return np.eye(n_labels, dtype=np.float32)[targets], 1.0

    def tensor(self, targets: np.ndarray) -> torch.Tensor:
        return torch.tensor(targets, dtype=torch.long)

    def loss(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return nn.functional.cross_entropy(logits, targets)
