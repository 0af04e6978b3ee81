"""Hooks for progress and metrics: stages call these; the orchestrator (or a notebook) listens.

pet_core never imports Prefect; the Prefect layer passes a callback that updates UI artifacts.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

log = logging.getLogger("pet_core")


class Callback:
    """Base callback: override what you need. Every method is a no-op by default."""

    def on_stage_begin(self, stage: str, total: int) -> None:
        """A stage starts; ``total`` units of work (steps, rows) are expected."""

    def on_progress(self, stage: str, done: int, total: int, **metrics: Any) -> None:
        """``done`` of ``total`` units are finished; optional running metrics (loss, ...)."""

    def on_stage_end(self, stage: str, metrics: dict[str, Any]) -> None:
        """A stage finished with these summary metrics."""


class LoggingCallback(Callback):
    """Logs about ten progress lines per stage through the standard logging module."""

    def __init__(self, every_fraction: float = 0.1):
        self.every_fraction = every_fraction
        self._next: dict[str, float] = {}

    def on_stage_begin(self, stage: str, total: int) -> None:
        self._next[stage] = 0.0
        log.info("%s: starting (%d units)", stage, total)

    def on_progress(self, stage: str, done: int, total: int, **metrics: Any) -> None:
        frac = done / max(total, 1)
        if frac >= self._next.get(stage, 0.0) or done == total:
            self._next[stage] = frac + self.every_fraction
            extra = " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in metrics.items())
            log.info("%s: %d/%d %s", stage, done, total, extra)

    def on_stage_end(self, stage: str, metrics: dict[str, Any]) -> None:
        log.info("%s: done %s", stage, metrics)


class CallbackList(Callback):
    """Fans one event out to several callbacks."""

    def __init__(self, callbacks: Sequence[Callback] = ()):
        self.callbacks = list(callbacks)

    def on_stage_begin(self, stage: str, total: int) -> None:
        for cb in self.callbacks:
            cb.on_stage_begin(stage, total)

    def on_progress(self, stage: str, done: int, total: int, **metrics: Any) -> None:
        for cb in self.callbacks:
            cb.on_progress(stage, done, total, **metrics)

    def on_stage_end(self, stage: str, metrics: dict[str, Any]) -> None:
        for cb in self.callbacks:
            cb.on_stage_end(stage, metrics)
