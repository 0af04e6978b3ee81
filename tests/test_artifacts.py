"""pet_core.artifacts: atomic writes, Parquet/JSON I/O with clear errors, content hashes."""

from __future__ import annotations

import json
import os
import stat

import numpy as np
import pyarrow as pa
import pytest

from pet_core.artifacts import (
    ArtifactError, atomic_dir, atomic_path, logits_of, logits_table, read_json, read_table, sha256_file,
    sha256_path, stable_hash, write_json, write_table,
)


class Boom(RuntimeError):
    pass


def test_atomic_path_writes_on_success(tmp_path):
    target = tmp_path / "sub" / "file.txt"
    with atomic_path(target) as tmp:
        assert tmp.parent == target.parent and tmp != target
        tmp.write_text("new")
        assert not target.exists()  # nothing visible until the block ends
    assert target.read_text() == "new"
    assert os.listdir(target.parent) == ["file.txt"]


def test_atomic_path_failure_keeps_old_file_and_no_temp(tmp_path):
    target = tmp_path / "file.txt"
    target.write_text("old")
    with pytest.raises(Boom):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise Boom
    assert target.read_text() == "old"
    assert os.listdir(tmp_path) == ["file.txt"]


def test_atomic_dir_failure_keeps_old_dir(tmp_path):
    target = tmp_path / "model"
    target.mkdir()
    (target / "weights").write_text("old")
    with pytest.raises(Boom):
        with atomic_dir(target) as tmp:
            (tmp / "weights").write_text("half")
            raise Boom
    assert (target / "weights").read_text() == "old"
    assert os.listdir(tmp_path) == ["model"]
    with atomic_dir(target) as tmp:
        (tmp / "weights").write_text("new")
    assert os.listdir(target) == ["weights"] and (target / "weights").read_text() == "new"
    assert os.listdir(tmp_path) == ["model"]


def test_write_json_sorted_and_read_back(tmp_path):
    path = write_json({"b": 1, "a": [1, 2]}, tmp_path / "x.json")
    assert path.read_text().startswith('{\n  "a"')
    assert read_json(path) == {"a": [1, 2], "b": 1}
    path.write_text("{broken")
    with pytest.raises(ArtifactError, match="x.json"):
        read_json(path)
    with pytest.raises(ArtifactError, match="missing.json"):
        read_json(tmp_path / "missing.json")


def test_table_roundtrip(tmp_path):
    table = pa.table({"x": [1, 2, 3], "y": ["a", "b", None]})
    write_table(table, tmp_path / "t.parquet")
    assert read_table(tmp_path / "t.parquet").equals(table)
    assert read_table(tmp_path / "t.parquet", columns=["y"]).column_names == ["y"]


def test_read_table_truncated_parquet_names_file(tmp_path):
    path = write_table(pa.table({"x": list(range(1000))}), tmp_path / "cut.parquet")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ArtifactError) as info:
        read_table(path)
    assert str(path) in str(info.value) and "rerun the stage" in str(info.value)
    path.write_bytes(b"")
    with pytest.raises(ArtifactError, match="cut.parquet"):
        read_table(path)
    with pytest.raises(ArtifactError, match="does not exist"):
        read_table(tmp_path / "nope.parquet")


def test_logits_table_roundtrip():
    logits = np.arange(12, dtype=np.float32).reshape(4, 3) / 7
    table = logits_table(["a", "b", "c", "d"], logits, model_id="g0-p0-s0", pattern=0)
    assert table.column_names == ["example_id", "logits", "model_id", "pattern"]
    assert table.schema.field("logits").type == pa.list_(pa.float32(), 3)
    assert table.column("model_id").to_pylist() == ["g0-p0-s0"] * 4
    np.testing.assert_array_equal(logits_of(table), logits)
    chunked = pa.concat_tables([table.slice(0, 2), table.slice(2)])
    np.testing.assert_array_equal(logits_of(chunked), logits)


def make_tree(root, files):
    for name, content in files:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
    return root


def test_sha256_path_dir_is_order_independent_and_content_sensitive(tmp_path):
    files = [("a.txt", b"alpha"), ("sub/b.bin", b"\x00\x01"), ("c.json", b"{}")]
    one = make_tree(tmp_path / "one", files)
    two = make_tree(tmp_path / "two", list(reversed(files)))
    assert sha256_path(one) == sha256_path(two)
    changed = make_tree(tmp_path / "three", [("a.txt", b"alphA"), *files[1:]])
    assert sha256_path(changed) != sha256_path(one)
    renamed = make_tree(tmp_path / "four", [("A.txt", b"alpha"), *files[1:]])
    assert sha256_path(renamed) != sha256_path(one)
    moved = make_tree(tmp_path / "five", [("a.txt", b"alpha"), ("b.bin", b"\x00\x01"), ("c.json", b"{}")])
    assert sha256_path(moved) != sha256_path(one)


def test_sha256_path_file_and_missing(tmp_path):
    path = tmp_path / "f"
    path.write_bytes(b"abc")
    assert sha256_path(path) == sha256_file(path) == (
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
    with pytest.raises(ArtifactError, match="does not exist"):
        sha256_path(tmp_path / "missing")


def test_stable_hash_ignores_key_order():
    assert stable_hash({"a": 1, "b": [1, 2]}) == stable_hash({"b": [1, 2], "a": 1})
    assert stable_hash({"a": 1}) != stable_hash({"a": 2})
    assert stable_hash({"a": 1}) == stable_hash(json.loads('{"a": 1}'))


def current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_atomic_file_honours_umask(tmp_path):
    path = write_json({"a": 1}, tmp_path / "x.json")
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~current_umask()


def test_atomic_dir_honours_umask(tmp_path):
    with atomic_dir(tmp_path / "model") as tmp:
        (tmp / "w").write_text("x")
    assert stat.S_IMODE((tmp_path / "model").stat().st_mode) == 0o777 & ~current_umask()
