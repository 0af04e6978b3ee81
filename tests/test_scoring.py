"""pet_core.scoring: label logits of a trained PVP model, streamed to Parquet."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pet_core.artifacts import ArtifactError, logits_of, read_table, write_table
from pet_core.config import ScoreConfig
from pet_core.kinds.base import load_pattern_model
from pet_core.scoring import count_rows, iter_chunks, score

from _petcore_support import Recorder


@pytest.fixture(scope="module")
def model_dir(trained_models):
    return Path(trained_models[1].model_dir)  # pattern 1, seed 1


@pytest.fixture(scope="module")
def reference_logits(model_dir, sentiment_spec, sentiment_split, model_config):
    model, _ = load_pattern_model(sentiment_spec, model_dir, model_config)
    d = sentiment_split[1]
    logits = model.predict(d.column("a").to_pylist(), d.column("b").to_pylist(), batch_size=64)
    model.mlm.release()
    return logits


@pytest.fixture(scope="module")
def scored(tmp_path_factory, model_dir, sentiment_spec, sentiment_split, model_config):
    out = tmp_path_factory.mktemp("scores") / "logits.parquet"
    summary = score(sentiment_spec, model_dir, sentiment_split[1], out, model_config, ScoreConfig())
    return out, summary


def test_score_writes_logits_table(scored, sentiment_split, trained_models):
    out, summary = scored
    table = read_table(out)
    assert table.column_names == ["example_id", "logits", "model_id", "pattern", "seed", "generation"]
    assert table.column("example_id").to_pylist() == sentiment_split[1].column("example_id").to_pylist()
    logits = logits_of(table)
    assert logits.shape == (32, 2) and logits.dtype == np.float32 and np.isfinite(logits).all()
    assert set(table.column("model_id").to_pylist()) == {"g0-p1-s1"}
    assert set(table.column("pattern").to_pylist()) == {1} and set(table.column("seed").to_pylist()) == {1}
    assert set(table.column("generation").to_pylist()) == {0}
    assert table.schema.field("logits").type == pa.list_(pa.float32(), 2)
    assert summary["rows"] == 32 and summary["model_id"] == "g0-p1-s1" and summary["pattern"] == 1
    assert not list(out.parent.glob(".*.tmp"))


def test_score_equals_predict(scored, reference_logits):
    np.testing.assert_array_equal(logits_of(read_table(scored[0])), reference_logits)


def test_streaming_chunks_give_same_result(tmp_path, model_dir, sentiment_spec, sentiment_split, model_config,
                                           reference_logits):
    d = sentiment_split[1]
    recorder = Recorder()
    out = tmp_path / "chunked.parquet"
    score(sentiment_spec, model_dir, d, out, model_config, ScoreConfig(chunk_rows=7, batch_size=3),
          callbacks=[recorder])
    table = read_table(out)
    assert table.column("example_id").to_pylist() == d.column("example_id").to_pylist()
    np.testing.assert_allclose(logits_of(table), reference_logits, atol=1e-5, rtol=1e-5)
    progress = [e[2] for e in recorder.events if e[0] == "progress"]
    assert progress == [7, 14, 21, 28, 32]
    assert recorder.events[0] == ("begin", "score g0-p1-s1", 32) and recorder.events[-1][0] == "end"


def test_score_from_parquet_file(tmp_path, model_dir, sentiment_spec, sentiment_split, model_config,
                                 reference_logits):
    src = write_table(sentiment_split[1], tmp_path / "d.parquet")
    out = tmp_path / "from-file.parquet"
    score(sentiment_spec, model_dir, src, out, model_config, ScoreConfig(chunk_rows=10, batch_size=4))
    table = read_table(out)
    assert table.column("example_id").to_pylist() == sentiment_split[1].column("example_id").to_pylist()
    np.testing.assert_allclose(logits_of(table), reference_logits, atol=1e-5, rtol=1e-5)


def test_length_sorted_batching_does_not_change_results(tmp_path, model_dir, sentiment_spec, sentiment_split,
                                                        model_config, reference_logits):
    shuffled = sentiment_split[1].take(pa.array(np.random.default_rng(0).permutation(32)))
    out = tmp_path / "b1.parquet"
    score(sentiment_spec, model_dir, shuffled, out, model_config, ScoreConfig(batch_size=1))
    table = read_table(out)
    order = {e: i for i, e in enumerate(sentiment_split[1].column("example_id").to_pylist())}
    ids = table.column("example_id").to_pylist()
    assert ids == shuffled.column("example_id").to_pylist()
    np.testing.assert_allclose(logits_of(table), reference_logits[[order[e] for e in ids]], atol=1e-5, rtol=1e-5)


def test_load_pattern_model_pattern_override(model_dir, sentiment_spec, model_config):
    model, record = load_pattern_model(sentiment_spec, model_dir, model_config)
    assert model.pvp.pattern_id == record["pattern"] == 1
    assert not model.mlm.model.training
    other, _ = load_pattern_model(sentiment_spec, model_dir, model_config, pattern=0)
    assert other.pvp.pattern_id == 0


def test_score_rejects_unfinished_model_dir(tmp_path, sentiment_spec, sentiment_split, model_config, tiny_mlm_dir):
    with pytest.raises(ArtifactError, match="has no train_record.json"):
        score(sentiment_spec, tiny_mlm_dir, sentiment_split[1], tmp_path / "x.parquet", model_config, ScoreConfig())
    assert not (tmp_path / "x.parquet").exists()


def truncated_parquet(table, path):
    write_table(table, path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def test_iter_chunks_truncated_file_raises_artifact_error(tmp_path, sentiment_split):
    path = truncated_parquet(sentiment_split[1], tmp_path / "cut.parquet")
    with pytest.raises(ArtifactError, match="cut.parquet"):
        list(iter_chunks(path, 10))


def test_score_truncated_input_raises_artifact_error(tmp_path, model_dir, sentiment_spec, sentiment_split,
                                                     model_config):
    path = truncated_parquet(sentiment_split[1], tmp_path / "cut.parquet")
    with pytest.raises(ArtifactError, match="cut.parquet"):
        score(sentiment_spec, model_dir, path, tmp_path / "out.parquet", model_config, ScoreConfig())


def test_failed_scoring_keeps_previous_output(tmp_path, model_dir, sentiment_spec, sentiment_split, model_config):
    out = tmp_path / "out.parquet"
    score(sentiment_spec, model_dir, sentiment_split[1].slice(0, 4), out, model_config, ScoreConfig())
    before = out.read_bytes()
    bad = sentiment_split[1].drop_columns(["a"])  # a table without text: scoring fails mid-stage
    with pytest.raises(KeyError):
        score(sentiment_spec, model_dir, bad, out, model_config, ScoreConfig())
    assert out.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.parquet"]


def test_count_rows(tmp_path, sentiment_split):
    d = sentiment_split[1]
    assert count_rows(d) == 32
    assert count_rows(write_table(d, tmp_path / "d.parquet")) == 32
    assert sum(b.num_rows for b in iter_chunks(tmp_path / "d.parquet", 5)) == 32
    assert [b.num_rows for b in iter_chunks(d, 10)] == [10, 10, 10, 2]
    assert pq.ParquetFile(tmp_path / "d.parquet").metadata.num_rows == 32


def test_score_empty_table(tmp_path, model_dir, sentiment_spec, sentiment_split, model_config):
    out = tmp_path / "empty.parquet"
    summary = score(sentiment_spec, model_dir, sentiment_split[1].slice(0, 0), out, model_config, ScoreConfig())
    assert summary["rows"] == 0
    assert read_table(out).num_rows == 0
