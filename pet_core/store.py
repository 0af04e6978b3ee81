"""A content-addressed artifact store: ``<root>/<stage>/<key>/`` with ``record.json`` written last.

The key hashes the stage name, its config, the content hashes of its inputs and the code version,
never paths or the clock. A directory without a valid record does not exist: outputs are built in
a temp directory and renamed into place in one step; readers verify output hashes. One writer per key
at a time (``pet_core.locks``): a concurrent run of the same stage waits and takes the result.
"""

from __future__ import annotations

import functools
import hashlib
import os
import platform
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pet_core.artifacts import ArtifactError, publish_mode, read_json, sha256_path, stable_hash, write_json
from pet_core.locks import key_lock

RECORD = "record.json"


@dataclass(frozen=True)
class Ref:
    """A small reference to an artifact: where it is and what its content hashes to."""

    path: str
    sha256: str

    def to_dict(self) -> dict[str, str]:
        """JSON-able dict."""
        return asdict(self)

    @classmethod
    def of(cls, path: str | Path) -> Ref:
        """Reference an existing file or directory by hashing it."""
        return cls(str(Path(path).resolve()), sha256_path(path))

    def verify(self) -> Ref:
        """Raise ArtifactError when the artifact is gone or its content changed."""
        actual = sha256_path(self.path)
        if actual != self.sha256:
            raise ArtifactError(f"artifact {self.path} does not match its record (sha256 {actual[:12]} != "
                                f"{self.sha256[:12]}); it was modified or corrupted: rerun its stage")
        return self


def record_host() -> str:
    """The host name a record carries: only when ``PETFLOW_RECORD_HOST=1`` asks for it (records can be shared)."""
    return platform.node() if os.environ.get("PETFLOW_RECORD_HOST", "") == "1" else ""


@dataclass
class StageRecord:
    """What a finished stage wrote: the record that makes its directory valid."""

    stage: str
    key: str
    config: dict[str, Any]
    inputs: dict[str, str]
    outputs: dict[str, Ref]
    code_version: str
    wall_s: float
    host: str  # empty unless PETFLOW_RECORD_HOST=1
    info: dict[str, Any] = field(default_factory=dict)
    cached: bool = False

    def to_dict(self, entry: Path | None = None) -> dict[str, Any]:
        """JSON-able dict (without the transient ``cached`` flag); paths relative to ``entry`` if given."""
        data = asdict(self)
        data.pop("cached")
        data["outputs"] = {k: {"path": os.path.relpath(v.path, entry) if entry else v.path, "sha256": v.sha256}
                           for k, v in self.outputs.items()}
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any], entry: Path | None = None) -> StageRecord:
        """Parse a record.json; relative output paths are resolved against ``entry``."""
        outputs = {k: Ref(str(entry / v["path"]) if entry else v["path"], v["sha256"])
                   for k, v in data["outputs"].items()}
        return cls(**{**data, "outputs": outputs})

    def out(self, name: str) -> Ref:
        """One output reference by name."""
        return self.outputs[name]


@functools.cache
def code_version() -> str:
    """Package version plus a hash of pet_core's sources, sub-packages included (catches edits a version
    bump forgot)."""
    from pet_core import __version__

    root = Path(__file__).parent
    digest = hashlib.sha256()
    for file in sorted(root.rglob("*.py")):
        digest.update(file.relative_to(root).as_posix().encode())
        digest.update(file.read_bytes())
    return f"{__version__}+{digest.hexdigest()[:12]}"


class ArtifactStore:
    """Stage outputs under ``root``, keyed by content; safe for concurrent runs of any configs."""

    def __init__(self, root: str | Path):
        self.root = Path(root).expanduser().resolve()
        self.root.mkdir(parents=True, exist_ok=True)

    def key(self, stage: str, config: dict[str, Any], inputs: dict[str, str]) -> str:
        """Cache key of a stage invocation (sha256 of sorted-key JSON)."""
        return stable_hash({"stage": stage, "config": config, "inputs": inputs, "code": code_version()})

    def lookup(self, stage: str, key: str, verify: bool = True) -> StageRecord | None:
        """The valid record of a finished stage, or None (missing, unreadable or outputs changed)."""
        entry = self.root / stage / key
        path = entry / RECORD
        if not path.is_file():
            return None
        try:
            record = StageRecord.from_dict(read_json(path), entry)
            if verify:
                for ref in record.outputs.values():
                    ref.verify()
        except (ArtifactError, KeyError, TypeError):
            return None
        record.cached = True
        return record

    def run(
        self,
        stage: str,
        config: dict[str, Any],
        inputs: dict[str, str],
        build: Callable[[Path], tuple[dict[str, str], dict[str, Any]]],
    ) -> StageRecord:
        """Return the cached record, or call ``build(tmp_dir)`` and commit its outputs atomically.

        ``build`` writes into ``tmp_dir`` and returns ({output name: file name inside tmp_dir}, info).
        """
        key = self.key(stage, config, inputs)
        found = self.lookup(stage, key)
        if found is not None:
            return found
        final = self.root / stage / key
        final.parent.mkdir(parents=True, exist_ok=True)
        with key_lock(final.parent / f".{key}.lock"):
            found = self.lookup(stage, key)  # a concurrent writer of this key may have finished meanwhile
            if found is not None:
                return found
            for stale in final.parent.glob(f".{key[:16]}.*.tmp"):  # left by a writer that died
                shutil.rmtree(stale, ignore_errors=True)
            return self._build(stage, key, config, inputs, build, final)

    def _build(self, stage: str, key: str, config: dict[str, Any], inputs: dict[str, str],
               build: Callable[[Path], tuple[dict[str, str], dict[str, Any]]], final: Path) -> StageRecord:
        """Build into a temp directory and commit it as ``final`` (the caller holds the key's lock)."""
        tmp = Path(tempfile.mkdtemp(prefix=f".{key[:16]}.", suffix=".tmp", dir=final.parent))
        started = time.perf_counter()
        try:
            names, info = build(tmp)
            outputs = {}
            for name, rel in names.items():
                produced = tmp / rel
                if not produced.exists():
                    raise ArtifactError(f"stage {stage} did not write its output {name!r} ({rel})")
                outputs[name] = Ref(str(final / rel), sha256_path(produced))
            record = StageRecord(stage, key, config, inputs, outputs, code_version(),
                                 round(time.perf_counter() - started, 3), record_host(), info)
            write_json(record.to_dict(entry=final), tmp / RECORD)
            publish_mode(tmp)
            self._commit(tmp, final, stage, key)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
        committed = self.lookup(stage, key, verify=False)
        if committed is None:
            raise ArtifactError(f"stage {stage} {key[:12]}: record missing after commit")
        committed.cached = False
        return committed

    def _commit(self, tmp: Path, final: Path, stage: str, key: str) -> None:
        """Rename tmp into place; a concurrent identical run that won keeps its (equal) result."""
        for _ in range(3):
            try:
                os.rename(tmp, final)
                return
            except OSError:
                if self.lookup(stage, key) is not None:
                    return  # another process finished the same stage first
                stale = final.with_name(f".{final.name}.stale-{os.getpid()}-{time.monotonic_ns()}")
                try:
                    os.rename(final, stale)  # move a stale entry (no valid record) aside atomically
                except OSError:
                    continue
                shutil.rmtree(stale, ignore_errors=True)
        raise ArtifactError(f"could not commit {final}")
