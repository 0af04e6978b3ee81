"""A principled start for a sequence classifier's output layer: a linear probe fitted to its targets.

Distilling near-uniform soft labels into a randomly initialised head (and, on sentence encoders, a
pooler that never saw the task) loses what the teacher knew when the step budget is small: the first
hundreds of steps only undo the random head. Fitting the output layer first on the frozen backbone's
features (a linear probe, then fine-tuning: "LP-FT", Kumar et al. 2022) makes step 0 of the student the
best linear reading of the teacher that those features allow, and fine-tuning starts from there.

Works for any ``AutoModelForSequenceClassification`` whose last ``nn.Linear`` maps to the labels
(BERT's ``classifier``, RoBERTa's and ELECTRA's ``classifier.out_proj``, DeBERTa's ``classifier``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from torch import nn


def output_layer(model: nn.Module, num_labels: int) -> nn.Linear:
    """The last ``nn.Linear`` with ``num_labels`` outputs: the layer that the probe initialises."""
    found = [m for m in model.modules() if isinstance(m, nn.Linear) and m.out_features == num_labels]
    if not found:
        raise ValueError(f"{type(model).__name__} has no linear layer with {num_labels} outputs to initialise")
    return found[-1]


@torch.inference_mode()
def layer_inputs(model: nn.Module, layer: nn.Linear, batches: Iterable[Callable[[], object]]) -> torch.Tensor:
    """The features entering ``layer`` (float32, CPU), one row per example, in batch order.

    Each item of ``batches`` runs one forward pass of ``model`` when called.
    """
    captured: list[torch.Tensor] = []
    handle = layer.register_forward_hook(lambda _m, args, _out: captured.append(args[0].detach().float().cpu()))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():  # features only: no autograd graph kept alive during the pass
            for forward in batches:
                forward()
    finally:
        handle.remove()
        model.train(was_training)
    return torch.cat(captured)


def fit_probe(features: torch.Tensor, targets: torch.Tensor, temperature: float = 1.0, l2: float = 1e-3,
              max_iter: int = 200) -> tuple[torch.Tensor, torch.Tensor]:
    """Weights (L, H) and bias (L,) minimising CE(targets, softmax((XWᵀ + b)/T)) + l2·‖W‖².

    ``targets``: (n, L) probability rows (soft labels or one-hot). The fit runs on standardised features
    (so ``l2`` means the same for any feature scale) and is folded back into the layer's own units.
    Deterministic (full-batch L-BFGS in float64 from zeros): equal inputs give an equal head.
    """
    mean = features.double().mean(0)
    scale = features.double().std(0, unbiased=False).clamp_min(1e-12) if features.size(0) > 1 else \
        torch.ones_like(mean)
    x = (features.double() - mean) / scale
    y = targets.double()
    weight = torch.zeros(y.size(1), x.size(1), dtype=torch.float64, requires_grad=True)
    bias = torch.zeros(y.size(1), dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([weight, bias], lr=1.0, max_iter=max_iter, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        log_p = torch.log_softmax((x @ weight.T + bias) / temperature, dim=-1)
        loss = -(y * log_p).sum(1).mean() + l2 * weight.pow(2).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        optimizer.step(closure)
    folded = weight.detach() / scale
    return folded.float(), (bias.detach() - folded @ mean).float()


@torch.no_grad()
def set_layer(layer: nn.Linear, weight: torch.Tensor, bias: torch.Tensor) -> None:
    """Copy a fitted probe into the output layer (bias-free layers get the weights only)."""
    layer.weight.copy_(weight.to(layer.weight.device, layer.weight.dtype))
    if layer.bias is not None:
        layer.bias.copy_(bias.to(layer.bias.device, layer.bias.dtype))
