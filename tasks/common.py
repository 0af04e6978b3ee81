"""What every stage task shares: the store, Ref <-> dict, the result dict, the Cached state, progress.

A task returns a small JSON-able dict (``StageResult``): stage, key, cached, output refs as dicts, the
ref of its ``record.json`` and a few info fields. Prefect never sees models or tables. Whether a stage is
done is decided by the pet_core store (record + output hashes checked on disk), never by Prefect's own
cache; a store hit is reported as a ``Completed`` state named ``Cached`` so the UI can tell it apart.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from prefect import get_run_logger
from prefect.artifacts import Artifact, ProgressArtifact, update_progress_artifact
from prefect.client.schemas.objects import State
from prefect.context import get_run_context
from prefect.exceptions import MissingContextError
from prefect.runtime import flow_run
from prefect.states import Completed

from pet_core.artifacts import sha256_file
from pet_core.callbacks import Callback
from pet_core.run_config import RunConfig
from pet_core.store import RECORD, ArtifactStore, Ref, StageRecord

RefDict = dict[str, str]
StageResult = dict[str, Any]

_stores: dict[str, ArtifactStore] = {}
_stores_lock = threading.Lock()


def open_store(where: RunConfig | str | Path) -> ArtifactStore:
    """The artifact store of a run config (or at a root path); one instance per root and process."""
    root = str(Path(where.store if isinstance(where, RunConfig) else where).expanduser().resolve())
    with _stores_lock:
        if root not in _stores:
            _stores[root] = ArtifactStore(root)
        return _stores[root]


def to_ref(ref: Mapping[str, str] | None) -> Ref | None:
    """A pet_core Ref from its dict form (None stays None)."""
    return None if ref is None else Ref(path=ref["path"], sha256=ref["sha256"])


def ref_dict(ref: Ref) -> RefDict:
    """The dict form of a Ref."""
    return {"path": ref.path, "sha256": ref.sha256}


def slug(text: str) -> str:
    """A Prefect artifact key fragment: lowercase letters, digits and dashes."""
    return re.sub(r"-+", "-", re.sub(r"[^a-z0-9]+", "-", text.lower())).strip("-") or "x"


def logger():
    """The run logger inside a flow or task run, the module logger elsewhere (e.g. under ``.fn``)."""
    try:
        return get_run_logger()
    except MissingContextError:
        import logging

        return logging.getLogger("petflow")


def record_ref(store: ArtifactStore, record: StageRecord) -> RefDict:
    """Path and sha256 of a stage's ``record.json``."""
    path = store.root / record.stage / record.key / RECORD
    return {"path": str(path), "sha256": sha256_file(path)}


def stage_result(store: ArtifactStore, record: StageRecord, name: str, **info: Any) -> StageResult:
    """The small dict a task returns for one stage record."""
    return {
        "stage": record.stage,
        "name": name,
        "key": record.key,
        "cached": record.cached,
        "outputs": {k: ref_dict(v) for k, v in record.outputs.items()},
        "record": record_ref(store, record),
        "wall_s": record.wall_s,
        "info": info,
    }


def finish(store: ArtifactStore, record: StageRecord, name: str, **info: Any) -> StageResult | State:
    """Log the outcome; a store hit becomes a ``Cached`` Completed state carrying the same dict.

    Call tasks with ``.submit()`` (the flows do): the future's ``.result()`` is always the dict. A direct
    call of a task that hit the store returns the state itself; ``value()`` unwraps both forms.
    """
    result = stage_result(store, record, name, **info)
    if record.cached:
        logger().info("%s: cached (store key %s, built in %.1f s earlier)", name, record.key[:12], record.wall_s)
        return Completed(name="Cached", data=result, message=f"store hit {record.stage}/{record.key[:12]}")
    logger().info("%s: done in %.1f s (store key %s)", name, record.wall_s, record.key[:12])
    return result


def value(result: StageResult | State) -> StageResult:
    """The result dict of a task call, whether it came back as a dict or as a Cached state."""
    return result.result() if isinstance(result, State) else result


def publish(artifact: type[Artifact], **fields: Any) -> Any:
    """Create a Prefect artifact on the flow run a user opens (the root run, also from inside a subflow);
    its id, or None outside a run (a task called through ``.fn``)."""
    try:
        get_run_context()
    except MissingContextError:
        return None
    root = flow_run.root_flow_run_id
    return artifact(**fields, flow_run_id=root).create(_sync=True).id


class PrefectProgress(Callback):
    """pet_core progress events -> a Prefect progress artifact per stage + run log lines.

    At most ``updates`` updates per stage (about every 5 %), and none closer than ``min_interval_s``.
    """

    def __init__(self, updates: int = 20, min_interval_s: float = 1.0):
        self.updates = updates
        self.min_interval_s = min_interval_s
        self._artifacts: dict[str, Any] = {}
        self._next: dict[str, int] = {}
        self._last: dict[str, float] = {}

    def on_stage_begin(self, stage: str, total: int) -> None:
        self._next[stage] = 0
        self._artifacts[stage] = publish(ProgressArtifact, progress=0.0, description=f"{stage} ({total} units)")
        logger().info("%s: starting (%d units)", stage, total)

    def on_progress(self, stage: str, done: int, total: int, **metrics: Any) -> None:
        step = max(total // self.updates, 1)
        now = time.monotonic()
        due = done >= self._next.get(stage, 0) and now - self._last.get(stage, 0.0) >= self.min_interval_s
        if not due and done != total:
            return
        self._next[stage], self._last[stage] = (done // step + 1) * step, now
        artifact = self._artifacts.get(stage)
        if artifact is not None:
            update_progress_artifact(artifact_id=artifact, progress=100.0 * done / max(total, 1))
        extra = " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in metrics.items())
        logger().info("%s: %d/%d %s", stage, done, total, extra)

    def on_stage_end(self, stage: str, metrics: dict[str, Any]) -> None:
        artifact = self._artifacts.pop(stage, None)
        if artifact is not None:
            update_progress_artifact(artifact_id=artifact, progress=100.0)
        logger().info("%s: finished %s", stage, metrics)
