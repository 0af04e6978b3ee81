"""The one optimisation loop of every trainer: pattern models, distillation, the supervised baseline and
backbone adaptation each supply only their objective (a function of the step that returns one
micro-batch's loss; the losses themselves are in ``pet_core.objectives``).

Per step: ``grad_accumulation`` micro-batches (loss scaled for fp16 on CUDA, NaN guard, backward), then
unscale, clip, optimizer and schedule step, zero the gradients, report progress.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from pet_core.callbacks import Callback
from pet_core.config import OptimConfig
from pet_core.optim import ParamGroup, build_optimizer, check_finite, grad_scaler


class OptimLoop:
    """AdamW + linear schedule + loss scaling over ``module``'s parameters (or ``groups``), for ``steps``."""

    def __init__(self, module: nn.Module, config: OptimConfig, steps: int, autocast_dtype: torch.dtype | None,
                 groups: Sequence[ParamGroup] | None = None, param_lrs: dict[int, float] | None = None):
        self.module = module
        self.config = config
        self.steps = steps
        self.optimizer, self.scheduler = build_optimizer(
            groups if groups is not None else module, config.learning_rate, config.weight_decay,
            config.adam_epsilon, steps, config.warmup_steps, param_lrs=param_lrs)
        device = next(module.parameters()).device
        self.scaler = grad_scaler(device, autocast_dtype)

    def run(self, objective: Callable[[int], torch.Tensor], stage: str, events: Callback) -> float:
        """Train for ``steps`` optimizer steps; returns the last step's loss (mean over micro-batches)."""
        accumulation = self.config.grad_accumulation
        events.on_stage_begin(stage, self.steps)
        running = 0.0
        for step in range(self.steps):
            running = 0.0
            for _ in range(accumulation):
                loss = objective(step)
                check_finite(loss, f"{stage} step {step}")
                self.scaler.scale(loss / accumulation).backward()
                running += loss.item() / accumulation
            self.scaler.unscale_(self.optimizer)
            nn.utils.clip_grad_norm_(self.module.parameters(), self.config.max_grad_norm)
            self.scaler.step(self.optimizer)
            self.scaler.update()
            self.scheduler.step()
            self.optimizer.zero_grad(set_to_none=True)
            events.on_progress(stage, step + 1, self.steps, loss=running)
        return running

    def close(self) -> None:
        """Drop the optimizer state (Adam's moments: twice the weights) before the stage saves and scores."""
        self.optimizer.state.clear()
        del self.optimizer, self.scheduler
