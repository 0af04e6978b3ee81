"""pet_core.data: reading raw tables, validating them into example tables, and sampling T and D."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pet_core.artifacts import EXAMPLES_SCHEMA
from pet_core.data import DataError, DataFormat, DataSource, load_examples, read_raw, resolve_path, to_examples
from pet_core.sampling import describe, label_counts, sample_split
from pet_core.spec import TaskSpec

from _petcore_support import NEGATIVE, POSITIVE, SENTIMENT_SPEC, topic_frame


def write_csv(path, rows, sep=","):
    pd.DataFrame(rows).to_csv(path, sep=sep, index=False)
    return path


REVIEWS = ([{"sentence": s, "summary": "liked it", "label": "1"} for s in POSITIVE[:3]]
           + [{"sentence": s, "summary": "did not like it", "label": "0"} for s in NEGATIVE[:3]])

# The format tests use a two-text spec: single-text specs hit the to_examples bug tested below.
PAIR_SPEC = TaskSpec.model_validate({
    **SENTIMENT_SPEC, "name": "pair", "fields": {"a": "sentence", "b": "summary", "label": "label"},
    "patterns": ["{a} {b} It was {mask}."],
})

def write_frame(path, fmt):
    frame = pd.DataFrame(REVIEWS)
    if fmt == "csv":
        frame.to_csv(path, index=False)
    elif fmt == "tsv":
        frame.to_csv(path, sep="\t", index=False)
    elif fmt == "jsonl":
        path.write_text("".join(json.dumps({**r, "label": int(r["label"])}) + "\n" for r in REVIEWS),
                        encoding="utf-8")
    else:
        frame.assign(label=frame.label.astype(int)).to_parquet(path)
    return path


# -- reading formats ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("fmt", ["csv", "tsv", "jsonl", "parquet"])
def test_load_each_format(tmp_path, fmt):
    path = write_frame(tmp_path / f"reviews.{fmt}", fmt)
    table = load_examples(DataSource(path=str(path)), PAIR_SPEC)
    assert table.schema == EXAMPLES_SCHEMA
    assert table.column("a").to_pylist() == [r["sentence"] for r in REVIEWS]
    assert table.column("b").to_pylist() == [r["summary"] for r in REVIEWS]
    assert table.column("label").to_pylist() == ["positive"] * 3 + ["negative"] * 3
    assert table.column("example_id").to_pylist() == [f"r{i}" for i in range(6)]


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_single_text_task_loads(tmp_path, sentiment_spec, fmt):
    path = write_frame(tmp_path / f"reviews.{fmt}", fmt)
    table = load_examples(DataSource(path=str(path)), sentiment_spec)
    assert table.column("b").to_pylist() == [None] * 6
    assert table.column("label").to_pylist() == ["positive"] * 3 + ["negative"] * 3


def test_single_text_task_to_examples(sentiment_spec):
    frame = pd.DataFrame({"sentence": ["good fun", "bad fun"], "label": ["1", "0"]})
    table = to_examples(frame, sentiment_spec, origin="x")
    assert table.column("b").null_count == 2


def test_real_sst2_via_load_examples(sst2_train_path):
    spec = TaskSpec.from_yaml(Path(__file__).resolve().parents[1] / "data" / "tasks" / "sst2.yaml")
    table = load_examples(DataSource(path=str(sst2_train_path), limit=50), spec)
    assert table.num_rows == 50


def test_explicit_format_overrides_suffix(tmp_path):
    path = tmp_path / "reviews.txt"
    pd.DataFrame(REVIEWS).to_csv(path, sep="\t", index=False)
    with pytest.raises(DataError, match=r"unknown file format '\.txt'"):
        read_raw(DataSource(path=str(path)))
    table = load_examples(DataSource(path=str(path), format=DataFormat.tsv), PAIR_SPEC)
    assert table.num_rows == 6


def test_tsv_keeps_quotes_literally(tmp_path):
    path = tmp_path / "q.tsv"
    path.write_text('sentence\tsummary\tlabel\n"quoted" start and "end\tok\t1\nit \'s fine\tok\t0\n',
                    encoding="utf-8")
    table = load_examples(DataSource(path=str(path)), PAIR_SPEC)
    assert table.column("a").to_pylist() == ['"quoted" start and "end', "it 's fine"]


def test_limit_reads_first_rows(tmp_path):
    for fmt in ("csv", "jsonl", "parquet"):
        path = write_frame(tmp_path / f"r.{fmt}", fmt)
        table = load_examples(DataSource(path=str(path), limit=2), PAIR_SPEC)
        assert table.column("a").to_pylist() == [REVIEWS[0]["sentence"], REVIEWS[1]["sentence"]], fmt


def test_folders_format(tmp_path):
    root = tmp_path / "bbc"
    for label, texts in {"business": ["Shares rise\nProfit was up.\nMore  text."], "sports": ["Team wins\nA goal."]}.items():
        (root / label).mkdir(parents=True)
        for i, text in enumerate(texts):
            (root / label / f"{i:03d}.txt").write_text(text, encoding="utf-8")
    (root / "_ignored").mkdir()
    (root / "_ignored" / "x.txt").write_text("nope", encoding="utf-8")
    frame = read_raw(DataSource(path=str(root)))
    assert frame.to_dict("records") == [
        {"id": "business/000", "title": "Shares rise", "body": "Profit was up. More text.", "label": "business"},
        {"id": "sports/000", "title": "Team wins", "body": "A goal.", "label": "sports"},
    ]
    spec = TaskSpec.model_validate({
        "name": "bbc", "fields": {"a": "title", "b": "body", "label": "label", "id": "id"},
        "labels": [{"name": "business", "words": ["business"]}, {"name": "sport", "raw": ["sports"], "words": ["sports"]}],
        "patterns": ["{mask}: {a} {b}"],
    })
    table = load_examples(DataSource(path=str(root)), spec)
    assert table.column("example_id").to_pylist() == ["business/000", "sports/000"]
    assert table.column("label").to_pylist() == ["business", "sport"]
    assert table.column("b").to_pylist() == ["Profit was up. More text.", "A goal."]


def test_empty_folder_root(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no <label>/\\*.txt files"):
        read_raw(DataSource(path=str(tmp_path / "empty")))


def test_hf_saved_dataset(tmp_path):
    datasets = pytest.importorskip("datasets")
    rows = [{"sentence": "good fun", "summary": "s1", "label": 1}, {"sentence": "bad fun", "summary": "s2", "label": 0}]
    datasets.DatasetDict({"train": datasets.Dataset.from_list(rows)}).save_to_disk(str(tmp_path / "hf"))
    table = load_examples(DataSource(path=str(tmp_path / "hf")), PAIR_SPEC)
    assert table.column("label").to_pylist() == ["positive", "negative"]
    with pytest.raises(DataError, match="no split 'test'"):
        read_raw(DataSource(path=str(tmp_path / "hf"), split="test"))


def test_missing_file(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        read_raw(DataSource(path=str(tmp_path / "missing.csv")))


def test_resolve_path_pkg():
    path = resolve_path("pkg:pet_core/spec.py")
    assert path.is_file() and path.name == "spec.py"
    with pytest.raises(DataError, match="not installed"):
        resolve_path("pkg:no_such_package_xyz/a.csv")


# -- validation errors name file, row and field ---------------------------------------------------------------
def test_multi_column_fields_are_joined(topic_spec):
    frame = topic_frame().head(2).rename(columns={"title": "head"})
    spec = TaskSpec.model_validate({**topic_spec.model_dump(), "fields": {
        "a": ["head", "id"], "b": "description", "label": "topic", "separator": " | "}})
    table = to_examples(frame, spec, origin="x")
    assert table.column("a").to_pylist()[0] == f"{frame['head'][0]} | {frame['id'][0]}"


def test_empty_text_names_row_and_field(tmp_path, sentiment_spec):
    rows = list(REVIEWS)
    rows[4] = {"sentence": "   ", "label": "0"}
    path = write_csv(tmp_path / "bad.csv", rows)
    with pytest.raises(DataError) as info:
        load_examples(DataSource(path=str(path)), sentiment_spec)
    message = str(info.value)
    assert str(path) in message and "row 4" in message and "field 'a' (sentence)" in message
    rows[4] = {"sentence": "", "label": "0"}
    with pytest.raises(DataError, match="row 4: field 'a'"):
        load_examples(DataSource(path=str(write_csv(tmp_path / "bad2.csv", rows))), sentiment_spec)


def test_unknown_label_names_row_and_value(tmp_path, sentiment_spec):
    rows = list(REVIEWS)
    rows[2] = {"sentence": "meh", "label": "7"}
    path = write_csv(tmp_path / "bad.csv", rows)
    with pytest.raises(DataError) as info:
        load_examples(DataSource(path=str(path)), sentiment_spec)
    message = str(info.value)
    assert "row 2" in message and "label '7' is not in the task spec" in message and str(path) in message


def test_empty_label_names_row(tmp_path, sentiment_spec):
    rows = list(REVIEWS)
    rows[1] = {"sentence": "meh", "label": ""}
    path = write_csv(tmp_path / "bad.csv", rows)
    with pytest.raises(DataError, match="row 1: label column 'label' is empty"):
        load_examples(DataSource(path=str(path)), sentiment_spec)


def test_missing_column_names_it(tmp_path, sentiment_spec):
    path = write_csv(tmp_path / "bad.csv", [{"text": "x", "label": "1"}])
    with pytest.raises(DataError) as info:
        load_examples(DataSource(path=str(path)), sentiment_spec)
    message = str(info.value)
    assert "missing column(s) ['sentence']" in message and "'text'" in message and str(path) in message


def test_unlabeled_does_not_need_label_column():
    frame = pd.DataFrame({"sentence": ["a", "b"], "summary": ["c", None]})
    table = to_examples(frame, PAIR_SPEC, origin="d", labeled=False)
    assert table.column("b").to_pylist() == ["c", ""]
    assert table.column("label").to_pylist() == [None, None]


def test_duplicate_id(topic_spec):
    frame = topic_frame()
    frame.loc[5, "id"] = frame.loc[2, "id"]
    with pytest.raises(DataError, match=r"topics.csv: duplicate example id 'world-2' \(column 'id'\)"):
        to_examples(frame, topic_spec, origin="topics.csv")


@pytest.mark.parametrize("suffix", ["csv", "tsv", "jsonl"])
def test_non_utf8_bytes(tmp_path, sentiment_spec, suffix):
    path = tmp_path / f"latin1.{suffix}"
    if suffix == "jsonl":
        body = '{"sentence": "caf\xe9 cr\xe8me", "label": 1}\n'
    else:
        sep = "," if suffix == "csv" else "\t"
        body = f"sentence{sep}label\ncaf\xe9 cr\xe8me{sep}1\n"
    path.write_bytes(body.encode("latin-1"))
    with pytest.raises(DataError) as info:
        load_examples(DataSource(path=str(path)), sentiment_spec)
    assert str(path) in str(info.value)
    if suffix != "jsonl":
        assert "not UTF-8" in str(info.value)


def test_unparseable_jsonl(tmp_path, sentiment_spec):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"sentence": "x", "label": 1}\n{not json\n', encoding="utf-8")
    with pytest.raises(DataError, match="cannot parse as jsonl"):
        load_examples(DataSource(path=str(path)), sentiment_spec)


def test_label_mapping_of_numbers():
    frame = pd.DataFrame({"sentence": ["x", "y", "z"], "summary": "s", "label": [1, 0, 1]})
    table = to_examples(frame, PAIR_SPEC, origin="ints")
    assert table.column("label").to_pylist() == ["positive", "negative", "positive"]
    frame = pd.DataFrame({"sentence": ["x", "y"], "summary": "s", "label": [" 1 ", "0"]})
    assert to_examples(frame, PAIR_SPEC, origin="s").column("label").to_pylist() == ["positive", "negative"]


# -- real data -----------------------------------------------------------------------------------------------
def test_real_sst2_loads(sst2_examples):
    spec, table = sst2_examples
    assert table.num_rows == 200
    assert set(table.column("label").to_pylist()) == {"negative", "positive"}
    assert all(text.strip() for text in table.column("a").to_pylist())


def test_real_ag_news_loads(ag_news_examples):
    spec, table = ag_news_examples
    assert table.num_rows == 200
    assert set(table.column("label").to_pylist()) <= set(spec.label_names)
    assert table.column("b").null_count == 0


# -- sampling T and D ---------------------------------------------------------------------------------------
def make_pool(counts: dict[str, int]) -> pa.Table:
    labels = [name for name, n in counts.items() for _ in range(n)]
    return pa.table({"example_id": [f"e{i}" for i in range(len(labels))],
                     "a": [f"text {i}" for i in range(len(labels))],
                     "b": pa.nulls(len(labels), pa.string()), "label": labels}, schema=EXAMPLES_SCHEMA)


def test_sample_split_is_seeded():
    pool = make_pool({"negative": 30, "positive": 20})
    t1, d1 = sample_split(pool, 10, 20, seed=3)
    t2, d2 = sample_split(pool, 10, 20, seed=3)
    assert t1.equals(t2) and d1.equals(d2)
    t3, _ = sample_split(pool, 10, 20, seed=4)
    assert t3.column("example_id").to_pylist() != t1.column("example_id").to_pylist()


def test_sample_split_disjoint_and_unlabeled():
    pool = make_pool({"negative": 30, "positive": 20})
    t, d = sample_split(pool, 10, None, seed=0)
    t_ids, d_ids = set(t.column("example_id").to_pylist()), set(d.column("example_id").to_pylist())
    assert not t_ids & d_ids
    assert t_ids | d_ids == set(pool.column("example_id").to_pylist())
    assert d.column("label").null_count == d.num_rows == 40
    assert t.column("label").null_count == 0
    assert t.schema.names == d.schema.names == EXAMPLES_SCHEMA.names


def test_sample_split_stratified_counts():
    pool = make_pool({"a": 60, "b": 30, "c": 10})
    t, d = sample_split(pool, 20, 50, seed=1)
    assert label_counts(t) == {"a": 12, "b": 6, "c": 2}
    assert d.num_rows == 50
    assert describe(t) == {"rows": 20, "labels": {"a": 12, "b": 6, "c": 2}}


def test_sample_split_per_label():
    pool = make_pool({"a": 60, "b": 30, "c": 10})
    t, _ = sample_split(pool, 5, 10, seed=1, per_label=True)
    assert label_counts(t) == {"a": 5, "b": 5, "c": 5}
    with pytest.raises(DataError, match=r"per label but the pool has only \{'c': 10\}"):
        sample_split(pool, 11, None, seed=1, per_label=True)


def test_min_per_label_gives_a_rare_label_its_example_within_the_total():
    pool = make_pool({"a": 60, "b": 39, "c": 1})  # shares 6, 3.9, 0.1 of a T of 10
    assert label_counts(sample_split(pool, 10, None, seed=0)[0]) == {"a": 6, "b": 4}
    t, d = sample_split(pool, 10, 20, seed=0, min_per_label=1)
    assert label_counts(t) == {"a": 5, "b": 4, "c": 1} and t.num_rows == 10 and d.num_rows == 20
    skewed = make_pool({"a": 80, "b": 19, "c": 1})  # shares 8, 1.9, 0.1: stratified gives a 8, b 2
    assert label_counts(sample_split(skewed, 10, None, seed=0, min_per_label=3)[0]) == {"a": 6, "b": 3, "c": 1}
    with pytest.raises(DataError, match=r"min_per_label=4 over 3 labels needs 9 examples but n_labeled=8"):
        sample_split(pool, 8, None, seed=0, min_per_label=4)


@settings(max_examples=40, deadline=None)
@given(counts=st.lists(st.integers(1, 40), min_size=2, max_size=5), floor=st.integers(0, 3),
       extra=st.integers(0, 20), seed=st.integers(0, 2**31 - 1))
def test_min_per_label_keeps_the_total_and_the_floor(counts, floor, extra, seed):
    names = [f"l{i}" for i in range(len(counts))]
    pool = make_pool(dict(zip(names, counts, strict=True)))
    n = min(pool.num_rows, sum(min(floor, c) for c in counts) + extra)
    got = Counter(sample_split(pool, n, None, seed=seed, min_per_label=floor)[0].column("label").to_pylist())
    assert sum(got.values()) == n
    assert all(got[name] >= min(floor, count) for name, count in zip(names, counts, strict=True))


def test_sample_split_errors():
    pool = make_pool({"a": 6, "b": 4})
    with pytest.raises(DataError, match="larger than the pool"):
        sample_split(pool, 11, None, seed=0)
    with pytest.raises(DataError, match="n_unlabeled=9 but only 5"):
        sample_split(pool, 5, 9, seed=0)
    unlabeled = pool.set_column(3, "label", pa.nulls(10, pa.string()))
    with pytest.raises(DataError, match="must be labelled"):
        sample_split(unlabeled, 2, None, seed=0)


@settings(max_examples=60, deadline=None)
@given(counts=st.lists(st.integers(1, 40), min_size=2, max_size=4), frac=st.floats(0.0, 1.0),
       seed=st.integers(0, 2**31 - 1))
def test_sample_split_stratified_property(counts, frac, seed):
    names = [f"l{i}" for i in range(len(counts))]
    pool = make_pool(dict(zip(names, counts, strict=True)))
    n = int(round(frac * pool.num_rows))
    t, d = sample_split(pool, n, None, seed=seed)
    assert t.num_rows == n
    assert t.num_rows + d.num_rows == pool.num_rows
    got = Counter(t.column("label").to_pylist())
    total = sum(counts)
    for name, count in zip(names, counts, strict=True):
        assert got[name] <= count
        assert abs(got[name] - n * count / total) < 1 + 1e-9  # largest remainder: within one of the exact share
    # T keeps pool order, D too
    for table in (t, d):
        idx = [int(e[1:]) for e in table.column("example_id").to_pylist()]
        assert idx == sorted(idx)


def test_sample_split_on_real_sst2(sst2_examples):
    _, table = sst2_examples
    t, d = sample_split(table, 20, 100, seed=0)
    pool_counts = label_counts(table)
    t_counts = label_counts(t)
    for name, count in pool_counts.items():
        assert abs(t_counts.get(name, 0) - 20 * count / table.num_rows) < 1
    assert d.num_rows == 100 and d.column("label").null_count == 100
    assert np.intersect1d(t.column("example_id").to_numpy(), d.column("example_id").to_numpy()).size == 0



def test_join_skips_empty_columns():
    spec = TaskSpec.model_validate({**SENTIMENT_SPEC, "fields": {"a": ["title", "body"], "b": "extra",
                                                                 "separator": " | "},
                                    "patterns": ["{a} {b} It was {mask}."]})
    frame = pd.DataFrame({"title": ["T", None], "body": [None, "B"], "extra": ["x", "y"], "label": ["1", "0"]})
    assert to_examples(frame, spec, origin="o").column("a").to_pylist() == ["T", "B"]


def test_all_empty_columns_are_an_empty_text():
    spec = TaskSpec.model_validate({**SENTIMENT_SPEC, "fields": {"a": ["title", "body"], "b": "extra",
                                                                 "separator": " | "},
                                    "patterns": ["{a} {b} It was {mask}."]})
    frame = pd.DataFrame({"title": ["T", ""], "body": ["B", "  "], "extra": ["x", "y"], "label": ["1", "0"]})
    with pytest.raises(DataError, match="row 1: field 'a'"):
        to_examples(frame, spec, origin="o")


def test_join_with_default_separator():
    spec = TaskSpec.model_validate({**SENTIMENT_SPEC, "fields": {"a": ["title", "body"], "b": "extra"},
                                    "patterns": ["{a} {b} It was {mask}."]})
    frame = pd.DataFrame({"title": ["T", None, ""], "body": [None, "B", ""], "extra": "x", "label": ["1", "0", "1"]})
    with pytest.raises(DataError, match="row 2: field 'a' \\(title\\+body\\) is empty"):
        to_examples(frame, spec, origin="o")
    assert to_examples(frame.head(2), spec, origin="o").column("a").to_pylist() == ["T", "B"]
