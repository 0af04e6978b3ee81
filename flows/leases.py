"""Flow-run leases: a run whose process died is marked Crashed on the next start.

A SIGKILLed (or OOM-killed, or powered-off) ``petflow run`` cannot report its own end, so Prefect shows its
flow run "Running" forever. While a pipeline runs it holds an ``flock`` on ``<runs_dir>/.leases/<flow run
id>``; the kernel drops that lock when the process dies. Each pipeline start first looks at the leases in
its runs folder: a file nobody holds belongs to a dead run, whose flow run, subflow runs and unfinished
task runs are set Crashed (with a message saying why) before the file is removed. Works wherever the runs
folder's file system honours ``flock`` (local disks; not every network file system). Deployments run by a
Prefect worker can also rely on Prefect's own heartbeats and a zombie automation (Prefect docs, "Detect
zombie flows"); the lease covers ``petflow run``, which has no worker.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from uuid import UUID

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no leases, nothing reaped
    fcntl = None  # type: ignore[assignment]

LEASES = ".leases"
CRASH_MESSAGE = ("the process running this flow died (killed, out of memory or power loss); marked Crashed by "
                 "petflow at the next start. Finished stages are in the store: rerun the config to resume.")


@contextlib.contextmanager
def lease(runs_dir: str | Path, flow_run_id: UUID | str | None) -> Iterator[None]:
    """Hold this flow run's lease for the duration of the block (no-op without an id or without flock)."""
    if fcntl is None or flow_run_id is None:
        yield
        return
    folder = Path(runs_dir).expanduser() / LEASES
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / str(flow_run_id)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        yield
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        os.close(fd)


def dead_leases(runs_dir: str | Path) -> Iterator[UUID]:
    """Flow-run ids whose lease nobody holds (their process died); each file is removed once yielded."""
    folder = Path(runs_dir).expanduser() / LEASES
    if fcntl is None or not folder.is_dir():
        return
    for path in sorted(folder.iterdir()):
        try:
            run_id = UUID(path.name)
            fd = os.open(path, os.O_RDWR)
        except (ValueError, OSError):
            continue  # not a lease, or removed meanwhile
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            continue  # a live run holds it
        try:
            yield run_id
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
        finally:
            os.close(fd)


def reap(runs_dir: str | Path) -> list[str]:
    """Mark every dead run of ``runs_dir`` (and its subflow and task runs) Crashed; their flow-run names."""
    from prefect.client.orchestration import get_client

    names: list[str] = []
    with get_client(sync_client=True) as client:
        for run_id in dead_leases(runs_dir):
            names.append(client.read_flow_run(run_id).name)
            crash_tree(client, run_id)
    return names


def crash_tree(client, flow_run_id: UUID) -> None:
    """Set the flow run, its descendants and their unfinished task runs Crashed (finished states are kept)."""
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId, FlowRunFilterParentFlowRunId
    from prefect.states import Crashed

    pending = [flow_run_id]
    while pending:
        run_id = pending.pop()
        run = client.read_flow_run(run_id)
        if run.state is None or not run.state.is_final():
            client.set_flow_run_state(run_id, Crashed(message=CRASH_MESSAGE), force=True)
        for task_run in client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run_id]))):
            if task_run.state is None or not task_run.state.is_final():
                client.set_task_run_state(task_run.id, Crashed(message=CRASH_MESSAGE), force=True)
        children = client.read_flow_runs(
            flow_run_filter=FlowRunFilter(parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[run_id])))
        pending += [child.id for child in children]
