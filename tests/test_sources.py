"""pet_core.sources: one decision of where a name points (local, pkg:, URL, hub), used by data, keys, backbones and
config paths; data behind an fsspec URL is read and content-keyed without a local copy."""

from __future__ import annotations

import fsspec
import pandas as pd
import pytest

from pet_core.backbone import BackboneError, resolve_backbone
from pet_core.data import DataError, DataSource, load_examples
from pet_core.keys import source_hash
from pet_core.sources import SourceError, Where, locate
from pet_core.spec import TaskSpec
from tests._petcore_support import SENTIMENT_SPEC


def test_locate_decides_once_for_every_kind_of_name(tmp_path):
    (tmp_path / "pool.csv").write_text("x\n")
    assert locate("s3://bucket/pool.csv").where is Where.url
    assert locate("memory://pool.csv").where is Where.url
    local = locate(f"file://{tmp_path}/pool.csv")
    assert local.where is Where.local and local.path == tmp_path / "pool.csv" and not local.relative
    relative = locate("pool.csv", base=tmp_path)
    assert relative.where is Where.local and relative.relative and relative.path == tmp_path / "pool.csv"
    assert locate("./not-there.csv").where is Where.local
    assert locate("org/some-model").where is Where.hub
    assert locate("pkg:json/decoder.py").path.name == "decoder.py"
    with pytest.raises(SourceError, match=r"pkg:no_such_pkg/x: package 'no_such_pkg' is not installed"):
        locate("pkg:no_such_pkg/x")


def test_a_pool_behind_an_fsspec_url_is_read_and_keyed_by_its_content():
    fs = fsspec.filesystem("memory")
    spec = TaskSpec.model_validate(SENTIMENT_SPEC)
    frame = pd.DataFrame({"sentence": ["good film", "bad film", "great", "awful"], "label": [1, 0, 1, 0]})
    with fs.open("/petflow-test/pool.csv", "w") as f:
        frame.to_csv(f, index=False)
    source = DataSource(path="memory://petflow-test/pool.csv")
    table = load_examples(source, spec)
    assert table.column("a").to_pylist() == frame["sentence"].tolist()
    assert table.column("label").to_pylist() == ["positive", "negative", "positive", "negative"]
    first = source_hash(source)
    assert first == source_hash(source) and first != source.path
    with fs.open("/petflow-test/pool.csv", "w") as f:
        frame.iloc[:3].to_csv(f, index=False)
    assert source_hash(source) != first, "a changed object must change the key"
    fs.rm("/petflow-test", recursive=True)


def test_an_unreadable_url_is_one_data_error_naming_it():
    spec = TaskSpec.model_validate(SENTIMENT_SPEC)
    with pytest.raises(DataError, match=r"^memory://petflow-none/x.csv: cannot read it \(FileNotFoundError"):
        load_examples(DataSource(path="memory://petflow-none/x.csv"), spec)
    with pytest.raises(DataError, match=r"^https://127.0.0.1:9/x.csv: cannot read it .*check the URL"):
        load_examples(DataSource(path="https://127.0.0.1:9/x.csv"), spec)


def test_urls_without_a_known_suffix_or_as_backbones_are_one_clear_error():
    with pytest.raises(DataError, match=r"memory://x/pool: unknown file format; a URL must end in one of"):
        load_examples(DataSource(path="memory://x/pool"), TaskSpec.model_validate(SENTIMENT_SPEC))
    with pytest.raises(BackboneError, match=r"a URL cannot be loaded as a model; copy the model folder"):
        resolve_backbone("s3://models/minilm")
    with pytest.raises(BackboneError, match=r"package 'no_such_pkg' is not installed"):
        resolve_backbone("pkg:no_such_pkg/model")
