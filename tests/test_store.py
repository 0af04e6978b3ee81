"""pet_core.store: the content-addressed artifact store (keys, cache hits, validity, atomic commits)."""

from __future__ import annotations

import importlib.util
import json
import multiprocessing
import os
import shutil
import stat
import sys
import time
from pathlib import Path

import pyarrow as pa
import pytest

from pet_core import store as store_module
from pet_core.artifacts import ArtifactError, read_table, sha256_path, write_table
from pet_core.store import RECORD, ArtifactStore, Ref, StageRecord, code_version


def table(n: int = 5, tag: str = "x") -> pa.Table:
    return pa.table({"example_id": [f"{tag}{i}" for i in range(n)], "value": list(range(n))})


class Builder:
    """A build function that counts its calls and writes one Parquet file and one sub-directory."""

    def __init__(self, n: int = 5):
        self.calls = 0
        self.n = n

    def __call__(self, tmp: Path):
        self.calls += 1
        write_table(table(self.n), tmp / "data.parquet")
        (tmp / "model").mkdir()
        (tmp / "model" / "weights.bin").write_bytes(b"\x00\x01" * 100)
        return {"data": "data.parquet", "model": "model"}, {"rows": self.n}


def stage_dirs(root: Path, stage: str) -> list[str]:
    return sorted(os.listdir(root / stage)) if (root / stage).exists() else []


# -- cache hits ------------------------------------------------------------------------------------------------
def test_cache_hit_returns_identical_record(tmp_path):
    store = ArtifactStore(tmp_path / "store")
    build = Builder()
    first = store.run("stage", {"a": 1}, {"in": "abc"}, build)
    second = store.run("stage", {"a": 1}, {"in": "abc"}, build)
    assert build.calls == 1
    assert first.cached is False and second.cached is True
    assert second.to_dict() == first.to_dict()
    assert second.outputs == first.outputs and second.info == {"rows": 5}
    # the committed layout: <root>/<stage>/<key>/ with the outputs and record.json, nothing else
    assert stage_dirs(store.root, "stage") == [first.key]
    entry = store.root / "stage" / first.key
    assert sorted(os.listdir(entry)) == ["data.parquet", "model", RECORD]
    on_disk = json.loads((entry / RECORD).read_text())
    assert on_disk == first.to_dict(entry=entry) and "cached" not in on_disk
    assert all(not Path(o["path"]).is_absolute() for o in on_disk["outputs"].values()), "store is relocatable"
    assert on_disk["stage"] == "stage" and on_disk["key"] == first.key and on_disk["config"] == {"a": 1}
    assert on_disk["inputs"] == {"in": "abc"} and on_disk["code_version"] == code_version()
    assert on_disk["wall_s"] >= 0 and on_disk["host"] == "", "no host name unless PETFLOW_RECORD_HOST=1"
    assert Path(first.out("data").path) == entry / "data.parquet"
    assert first.out("data").sha256 == sha256_path(entry / "data.parquet")
    assert first.out("model").sha256 == sha256_path(entry / "model")
    assert read_table(first.out("data").path).equals(table())
    assert StageRecord.from_dict(on_disk).to_dict() == on_disk


def test_a_new_store_object_on_the_same_root_sees_the_record(tmp_path):
    first = ArtifactStore(tmp_path / "s").run("stage", {"a": 1}, {}, Builder())
    again = ArtifactStore(str(tmp_path / "s")).lookup("stage", first.key)
    assert again is not None and again.cached and again.to_dict() == first.to_dict()


# -- the key ---------------------------------------------------------------------------------------------------
def test_key_depends_on_content_not_paths(tmp_path):
    """The same bytes in two files in different folders (and two store roots) give one key."""
    one, two = tmp_path / "a" / "pool.csv", tmp_path / "b" / "deeper" / "other-name.csv"
    for path in (one, two):
        path.parent.mkdir(parents=True)
        path.write_text("sentence,label\ngood,1\n")
    ref1, ref2 = Ref.of(one), Ref.of(two)
    assert ref1.path != ref2.path and ref1.sha256 == ref2.sha256
    s1, s2 = ArtifactStore(tmp_path / "store1"), ArtifactStore(tmp_path / "store2")
    key = s1.key("prepare", {"n": 1}, {"pool": ref1.sha256})
    assert s2.key("prepare", {"n": 1}, {"pool": ref2.sha256}) == key
    # directories: same content under different names/places -> same hash
    for base in (tmp_path / "m1", tmp_path / "x" / "m2"):
        (base / "sub").mkdir(parents=True)
        (base / "sub" / "w.bin").write_bytes(b"abc")
        (base / "config.json").write_text("{}")
    assert Ref.of(tmp_path / "m1").sha256 == Ref.of(tmp_path / "x" / "m2").sha256
    # ... and the key changes with the content
    two.write_text("sentence,label\nbad,0\n")
    assert s1.key("prepare", {"n": 1}, {"pool": Ref.of(two).sha256}) != key


def test_key_changes_with_config_inputs_stage_and_code_version(tmp_path, monkeypatch):
    store = ArtifactStore(tmp_path)
    base = store.key("train", {"lr": 1e-3, "steps": 3}, {"t": "aa"})
    assert store.key("train", {"steps": 3, "lr": 1e-3}, {"t": "aa"}) == base  # key order is irrelevant
    assert store.key("train", {"lr": 1e-3, "steps": 4}, {"t": "aa"}) != base
    assert store.key("train", {"lr": 1e-3, "steps": 3}, {"t": "ab"}) != base
    assert store.key("score", {"lr": 1e-3, "steps": 3}, {"t": "aa"}) != base
    monkeypatch.setattr(store_module, "code_version", lambda: "9.9.9+feedfacecafe")
    assert store.key("train", {"lr": 1e-3, "steps": 3}, {"t": "aa"}) != base


def test_code_version_hashes_the_sources(tmp_path, monkeypatch):
    """code_version = package version + hash of pet_core's sources: an edit without a version bump changes it."""
    from pet_core import __version__

    assert code_version().startswith(__version__ + "+")
    copy = tmp_path / "pkg"
    shutil.copytree(Path(store_module.__file__).parent, copy, ignore=shutil.ignore_patterns("__pycache__"))
    spec = importlib.util.spec_from_file_location("petflow_store_copy", copy / "store.py")
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)  # dataclasses look their module up
    spec.loader.exec_module(module)
    before = module.code_version()
    assert before.startswith(__version__ + "+")
    with open(copy / "ensemble.py", "a", encoding="utf-8") as handle:
        handle.write("\n# an edit\n")
    module.code_version.cache_clear()
    assert module.code_version() != before


# -- validity: missing / modified outputs, directories without record -------------------------------------------
@pytest.mark.parametrize("damage", ["delete file", "modify file", "delete dir", "modify dir", "record garbage",
                                    "record missing"])
def test_damaged_entry_is_a_miss_and_is_rebuilt(tmp_path, damage):
    store = ArtifactStore(tmp_path)
    build = Builder()
    first = store.run("stage", {"a": 1}, {}, build)
    entry = store.root / "stage" / first.key
    if damage == "delete file":
        (entry / "data.parquet").unlink()
    elif damage == "modify file":
        write_table(table(6), entry / "data.parquet")
    elif damage == "delete dir":
        shutil.rmtree(entry / "model")
    elif damage == "modify dir":
        (entry / "model" / "weights.bin").write_bytes(b"changed")
    elif damage == "record garbage":
        (entry / RECORD).write_text("{not json")
    else:
        (entry / RECORD).unlink()
    assert store.lookup("stage", first.key) is None
    again = store.run("stage", {"a": 1}, {}, build)
    assert build.calls == 2 and again.cached is False and again.key == first.key
    assert store.lookup("stage", first.key) is not None
    assert read_table(again.out("data").path).equals(table())
    assert stage_dirs(store.root, "stage") == [first.key]  # the damaged entry was replaced, no temp left


def test_lookup_without_verify_trusts_the_record(tmp_path):
    store = ArtifactStore(tmp_path)
    first = store.run("stage", {"a": 1}, {}, Builder())
    (store.root / "stage" / first.key / "model" / "weights.bin").write_bytes(b"changed")
    assert store.lookup("stage", first.key) is None
    assert store.lookup("stage", first.key, verify=False) is not None


def test_directory_without_record_is_ignored(tmp_path):
    store = ArtifactStore(tmp_path)
    key = store.key("stage", {"a": 1}, {})
    stale = store.root / "stage" / key
    (stale / "model").mkdir(parents=True)
    write_table(table(2, "stale"), stale / "data.parquet")
    assert store.lookup("stage", key) is None
    build = Builder()
    record = store.run("stage", {"a": 1}, {}, build)
    assert build.calls == 1 and not record.cached
    assert read_table(record.out("data").path).equals(table())  # the stale content is gone
    assert stage_dirs(store.root, "stage") == [key]


def test_a_moved_store_serves_its_own_files(tmp_path):
    old = ArtifactStore(tmp_path / "old")
    first = old.run("stage", {"a": 1}, {}, Builder())
    shutil.copytree(tmp_path / "old", tmp_path / "new")
    shutil.rmtree(tmp_path / "old")
    found = ArtifactStore(tmp_path / "new").lookup("stage", first.key)
    assert found is not None
    assert Path(found.out("data").path) == tmp_path / "new" / "stage" / first.key / "data.parquet"


def test_lookup_of_unknown_key_is_none(tmp_path):
    assert ArtifactStore(tmp_path).lookup("stage", "0" * 64) is None


def test_ref_verify(tmp_path):
    path = write_table(table(), tmp_path / "t.parquet")
    ref = Ref.of(path)
    assert ref.verify() is ref and Path(ref.path).is_absolute()
    assert Ref(**ref.to_dict()) == ref
    write_table(table(7), path)
    with pytest.raises(ArtifactError, match="does not match its record") as err:
        ref.verify()
    assert str(path) in str(err.value) and "rerun" in str(err.value)
    path.unlink()
    with pytest.raises(ArtifactError, match="does not exist"):
        ref.verify()


# -- failures leave nothing ------------------------------------------------------------------------------------
def test_exception_in_build_leaves_no_directory_and_no_temp(tmp_path):
    store = ArtifactStore(tmp_path)
    seen = []

    def build(tmp: Path):
        seen.append(tmp)
        write_table(table(), tmp / "data.parquet")
        raise RuntimeError("boom in build")

    with pytest.raises(RuntimeError, match="boom in build"):
        store.run("stage", {"a": 1}, {}, build)
    assert seen and not seen[0].exists()
    assert stage_dirs(store.root, "stage") == []
    assert store.lookup("stage", store.key("stage", {"a": 1}, {})) is None
    # and the next run builds normally
    assert store.run("stage", {"a": 1}, {}, Builder()).cached is False


def test_build_that_forgets_an_output_fails_cleanly(tmp_path):
    store = ArtifactStore(tmp_path)

    def build(tmp: Path):
        write_table(table(), tmp / "data.parquet")
        return {"data": "data.parquet", "model": "model"}, {}

    with pytest.raises(ArtifactError, match="did not write its output 'model'"):
        store.run("stage", {"a": 1}, {}, build)
    assert stage_dirs(store.root, "stage") == []


# -- permissions -------------------------------------------------------------------------------------------------
def test_artifacts_are_world_readable_under_a_normal_umask(tmp_path):
    old = os.umask(0o022)
    try:
        record = ArtifactStore(tmp_path / "store").run("stage", {"a": 1}, {}, Builder())
    finally:
        os.umask(old)
    entry = Path(record.out("data").path).parent
    for path in [entry, *entry.rglob("*")]:
        mode = stat.S_IMODE(path.stat().st_mode)
        wanted = 0o755 if path.is_dir() else 0o644
        assert mode == wanted, f"{path.relative_to(tmp_path)} has mode {oct(mode)}, expected {oct(wanted)}"


# -- concurrency ---------------------------------------------------------------------------------------------------
def _race_worker(root: str, barrier_dir: str, out: str, locked: bool = False) -> None:
    """Run one stage; inside build, wait until the other process is inside its build too.

    ``locked=False`` turns the store's key lock off (as where flock is unavailable), so that both builds
    overlap and the commit itself is raced; with the lock, the second process must never build.
    """
    me = Path(barrier_dir) / f"in-build-{os.getpid()}"
    if not locked:
        import contextlib

        store_module.key_lock = lambda path: contextlib.nullcontext()

    def build(tmp: Path):
        write_table(table(50), tmp / "data.parquet")
        (tmp / "model").mkdir()
        (tmp / "model" / "weights.bin").write_bytes(b"w" * 1000)
        me.touch()
        deadline = time.monotonic() + (60 if not locked else 3)
        while len(list(Path(barrier_dir).glob("in-build-*"))) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        return {"data": "data.parquet", "model": "model"}, {"pid": os.getpid()}

    record = ArtifactStore(root).run("race", {"a": 1}, {"in": "x"}, build)
    Path(out).write_text(json.dumps({**record.to_dict(), "cached": record.cached}))


@pytest.mark.parametrize("locked", [False, True], ids=["commit-race", "key-lock"])
def test_two_processes_running_the_same_stage_leave_one_valid_entry(tmp_path, locked):
    if locked and sys.platform == "win32":
        pytest.skip("the key lock uses flock (a no-op on Windows)")
    root, barrier = tmp_path / "store", tmp_path / "barrier"
    barrier.mkdir()
    ctx = multiprocessing.get_context("spawn")
    outs = [tmp_path / f"out{i}.json" for i in range(2)]
    procs = [ctx.Process(target=_race_worker, args=(str(root), str(barrier), str(out), locked)) for out in outs]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(120)
        assert proc.exitcode == 0, "a racing process failed"
    if locked:
        assert len(list(barrier.iterdir())) == 1, "with the key lock, only one process may build"
        assert sorted(json.loads(out.read_text())["cached"] for out in outs) == [False, True]
    else:
        assert len(list(barrier.iterdir())) == 2, "the two builds did not overlap"
    results = [json.loads(out.read_text()) for out in outs]
    for result in results:
        result.pop("cached")
    assert results[0] == results[1], "both processes must return the committed record"
    store = ArtifactStore(root)
    key = results[0]["key"]
    assert sorted(os.listdir(root / "race")) == [key]  # exactly one entry, no temp directories
    record = store.lookup("race", key)
    assert record is not None and record.info["pid"] in {p.pid for p in procs}
    assert read_table(record.out("data").path).num_rows == 50


def test_run_ignores_foreign_temp_dirs(tmp_path):
    """A temp directory left by a killed process (hidden, no record) never counts as a result."""
    store = ArtifactStore(tmp_path)
    key = store.key("stage", {"a": 1}, {})
    junk = store.root / "stage" / f".{key[:16]}.dead.tmp"
    junk.mkdir(parents=True)
    (junk / RECORD).write_text("{}")
    record = store.run("stage", {"a": 1}, {}, Builder())
    assert not record.cached and store.lookup("stage", key) is not None


if __name__ == "__main__":  # pragma: no cover - debugging aid
    sys.exit(pytest.main([__file__, "-q"]))


# -- one writer per key -------------------------------------------------------------------------------------------
def _slow_build(calls: list[str], name: str, seconds: float):
    def build(tmp: Path):
        calls.append(name)
        time.sleep(seconds)
        (tmp / "out.txt").write_text("same result")
        return {"out": "out.txt"}, {"built_by": name}
    return build


@pytest.mark.skipif(sys.platform == "win32", reason="the key lock uses flock (a no-op on Windows)")
def test_a_second_writer_of_the_same_key_waits_and_takes_the_first_result(tmp_path):
    import threading

    store = ArtifactStore(tmp_path / "store")
    calls: list[str] = []
    records: dict[str, StageRecord] = {}

    def run(name: str) -> None:
        records[name] = store.run("train", {"x": 1}, {}, _slow_build(calls, name, 0.5))

    first = threading.Thread(target=run, args=("first",))
    first.start()
    time.sleep(0.1)
    second = threading.Thread(target=run, args=("second",))
    second.start()
    first.join()
    second.join()
    assert calls == ["first"], "the same stage was computed twice"
    assert not records["first"].cached and records["second"].cached
    assert records["second"].info == {"built_by": "first"}
    assert sorted(p.name for p in (tmp_path / "store" / "train").iterdir()) == [records["first"].key]


def test_a_dead_writers_temp_directory_is_removed_by_the_next_writer(tmp_path):
    store = ArtifactStore(tmp_path / "store")
    key = store.key("train", {"x": 2}, {})
    stage_dir = tmp_path / "store" / "train"
    stage_dir.mkdir(parents=True)
    (stage_dir / f".{key[:16]}.abc123.tmp").mkdir()  # what a SIGKILLed writer leaves behind
    (stage_dir / f".{key}.lock").write_text("")       # and its lock file (the kernel released the lock)
    (stage_dir / ".0000000000000000.other.tmp").mkdir()  # another key's writer, maybe alive: untouched
    record = store.run("train", {"x": 2}, {}, _slow_build([], "next", 0.0))
    assert sorted(p.name for p in stage_dir.iterdir()) == [".0000000000000000.other.tmp", record.key]


def test_records_name_the_host_only_when_asked(tmp_path, monkeypatch):
    import platform

    store = ArtifactStore(tmp_path)
    build = Builder()
    assert store.run("stage", {"a": 1}, {}, build).host == ""
    monkeypatch.setenv("PETFLOW_RECORD_HOST", "1")
    assert store.run("stage", {"a": 2}, {}, build).host == platform.node()
