"""Issue 5: bad inputs fail early with an error that names the file, the row or field, and what to do.

``CASES`` is the matrix: each case builds a broken input, names the exception type it must raise and
the fragments the message must contain (file path, row number, field, the offending value, the fix).
Inputs that look odd but are fine (extra columns, over-long texts, |T| = 0, one label in T, 20 labels)
are tested below the matrix.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
import torch
import yaml
from pydantic import ValidationError as PydanticError

from pet_core import pipeline, stages
from pet_core.artifacts import ArtifactError, logits_of, logits_table, read_json, read_table, write_table
from pet_core.config import (
    AdaptConfig, DistillConfig, EnsembleConfig, IpetConfig, ModelConfig, ScoreConfig, TrainConfig,
)
from pet_core.data import DataError, DataSource, load_examples
from pet_core.modeling import BackboneError, MaskedLM
from pet_core.optim import NumericalError
from pet_core.pvp import PVP, VerbalizerError
from pet_core.run_config import RunConfig
from pet_core.spec import TaskSpec
from pet_core.store import ArtifactStore, Ref
from pet_core.validate import ValidationError, validate

from _petcore_support import SENTIMENT_SPEC, TOPIC_SPEC, sentiment_frame
from _run_support import spec_with, tiny_model_config, tiny_model_dict, tiny_run_config, tiny_run_dict
from reliability._pipeline_support import spy_stages

FAST_TRAIN = TrainConfig(max_steps=2, batch_size=4, grad_accumulation=1, learning_rate=1e-3, score_batch_size=16)


@dataclass
class Ctx:
    """What a case needs: a scratch folder, the tiny backbones and the toy data."""

    tmp: Path
    request: Any

    def fixture(self, name: str) -> Any:
        return self.request.getfixturevalue(name)

    @property
    def mlm(self) -> Path:
        return Path(self.fixture("tiny_mlm_dir"))

    def model(self, backbone: Path | None = None, **kw) -> ModelConfig:
        return tiny_model_config(backbone or self.mlm, **kw)

    def write(self, name: str, content: str | bytes) -> Path:
        path = self.tmp / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8")
        return path

    def tokenizer(self):
        return self.fixture("tiny_tokenizer")


def sentiment(**changes) -> dict:
    return spec_with(SENTIMENT_SPEC, **changes)


def load(path: Path, spec: dict | None = None, **source) -> Callable[[], Any]:
    return lambda: load_examples(DataSource(path=str(path), **source), TaskSpec.model_validate(spec or SENTIMENT_SPEC))


def csv(*rows: str, header: str = "sentence,label") -> str:
    return "\n".join([header, *rows]) + "\n"


GOOD_ROWS = ["a wonderful film,1", "a dull mess,0", "great acting,1", "terrible plot,0", "good fun,1"]

CASES: list[Any] = []


def case(name: str, exc: type[BaseException], *marks: Any) -> Callable:
    """Register ``fn(ctx) -> (action, [fragments the message must contain])`` as a matrix case."""

    def register(fn: Callable) -> Callable:
        CASES.append(pytest.param(fn, exc, id=name, marks=list(marks)))
        return fn

    return register


def cases(exc: type[BaseException] | None, build: Callable, table: list[tuple]) -> None:
    """Register one matrix case per row ``(id, *args)`` of ``table`` (``(id, exc, *args)`` if ``exc`` is None).

    The case is ``ctx -> build(ctx, *args)``, which returns ``(action, fragments)`` like a ``@case`` function.
    """
    for name, *args in table:
        row_exc = args.pop(0) if exc is None else exc
        case(name, row_exc)(lambda ctx, args=tuple(args): build(ctx, *args))


# -- data files ---------------------------------------------------------------------------------------------------
def jsonl(*records: dict) -> str:
    return "".join(json.dumps(x) + "\n" for x in records)


def good_rows_but(index: int, row: str) -> str:
    """GOOD_ROWS as a sentence,label CSV with row ``index`` replaced by ``row``."""
    rows = list(GOOD_ROWS)
    rows[index] = row
    return csv(*rows)


# (case id, file name, content, task spec or None for SENTIMENT_SPEC, fragments after the file path)
FILE_CASES = [
    ("missing-column", "pool.csv", csv("good,1", header="text,label"), None,
     ["missing column(s) ['sentence']", "found ['text', 'label']", "fields.a"]),
    ("empty-text", "pool.csv", good_rows_but(3, ",0"), None,
     ["row 3", "field 'a' (sentence)", "empty or whitespace", "drop or fill"]),
    ("whitespace-only-text", "pool.csv", good_rows_but(1, '"  \t ",0'), None,
     ["row 1", "field 'a'", "whitespace"]),
    ("whitespace-only-text-jsonl", "pool.jsonl",
     jsonl({"sentence": "fine", "label": 1}, {"sentence": "ok", "label": 0}, {"sentence": "   ", "label": 1}), None,
     ["row 2", "field 'a'"]),
    ("nan-label-csv", "pool.csv", good_rows_but(2, "great acting,"), None,
     ["row 2", "label column 'label' is empty"]),
    ("none-label-jsonl", "pool.jsonl",
     jsonl({"sentence": "a good film", "label": 1}, {"sentence": "a bad film", "label": None}), None,
     ["row 1", "label column 'label' is empty"]),
    ("label-not-in-spec", "pool.csv", good_rows_but(4, "good fun,7"), None,
     ["row 4", "label '7' is not in the task spec", "known raw values: ['0', '1']"]),
    ("duplicate-example-ids", "topics.csv",
     csv("x1,Peace talks,Leaders met.,world", "x2,Cup final,Team won.,sports", "x1,Shares rise,Profit up.,business",
         header="id,title,description,topic"), TOPIC_SPEC,
     ["duplicate example id 'x1'", "column 'id'", "must be unique"]),
    ("unknown-file-format", "pool.xlsx", b"PK\x03\x04 not really a spreadsheet", None,
     ["unknown file format '.xlsx'", ".csv"]),
    ("non-utf8-bytes", "pool.csv", "sentence,label\na caf\xe9 film,1\n".encode("latin-1"), None,
     ["not UTF-8", "re-encode the file as UTF-8"]),
    ("malformed-csv-unterminated-quote", "pool.csv", 'sentence,label\n"a good film,1\nbad,0\n', None,
     ["cannot parse as csv", "EOF inside string"]),
    ("malformed-csv-too-many-fields", "pool.csv", csv("a good film,1", "bad,0,3,4"), None,
     ["cannot parse as csv", "line 3"]),
    ("malformed-jsonl", "pool.jsonl", '{"sentence": "good", "label": 1}\n{"sentence": \n', None,
     ["cannot parse as jsonl"]),
    ("empty-file", "pool.csv", "", None, ["cannot parse as csv"]),
]


def file_case(ctx, name: str, content: str | bytes, spec: dict | None, fragments: list[str]):
    path = ctx.write(name, content)
    return load(path, spec), [str(path), *fragments]


cases(DataError, file_case, FILE_CASES)


@case("missing-data-file", DataError)
def _(ctx):
    path = ctx.tmp / "nowhere" / "pool.csv"
    return load(path), [str(path), "does not exist"]


@case("folder-without-text-files", DataError)
def _(ctx):
    (ctx.tmp / "corpus" / "positive").mkdir(parents=True)
    return load(ctx.tmp / "corpus"), [str(ctx.tmp / "corpus"), "no <label>/*.txt files found"]


# -- drawing T and D -----------------------------------------------------------------------------------------------
def prepare_action(ctx, **data) -> Callable[[], Any]:
    pool = ctx.fixture("sentiment_data") / "pool.csv"
    config = tiny_run_config(ctx.fixture("sentiment_data"), ctx.mlm, ctx.tmp / "store",
                             data={"pool": {"path": str(pool)}, "test": None, **data})
    return lambda: stages.prepare(ArtifactStore(ctx.tmp / "store"), config.task_spec(), config.data)


cases(DataError, lambda ctx, data, fragments: (prepare_action(ctx, **data), fragments), [
    ("n-labeled-larger-than-pool", {"n_labeled": 50}, ["n_labeled=50", "larger than the pool (40 rows)"]),
    ("n-unlabeled-larger-than-rest", {"n_labeled": 8, "n_unlabeled": 100},
     ["n_unlabeled=100", "only 32 pool rows remain after T"]),
    ("per-label-more-than-available", {"n_labeled": 25, "per_label": True},
     ["n_labeled=25 per label", "'negative': 20"]),
])


@case("label-with-zero-examples-in-pool", ValidationError)
def _(ctx):
    import pandas as pd

    frame = pd.read_csv(ctx.fixture("topic_data") / "pool.csv", dtype=str)
    path = ctx.tmp / "pool.csv"
    frame[frame.topic != "sports"].to_csv(path, index=False)
    config = tiny_run_config(ctx.fixture("topic_data"), ctx.mlm, ctx.tmp / "store", data={"pool": {"path": str(path)}})
    return (lambda: validate(config, check_backbone=False).raise_for_errors()), [
        "data.pool", str(path), "label(s) ['Sports'] have no examples"]


@case("single-label-present-in-pool", ValidationError)
def _(ctx):
    frame = sentiment_frame()
    path = ctx.tmp / "pool.csv"
    frame[frame.label == "0"].to_csv(path, index=False)
    config = tiny_run_config(ctx.fixture("sentiment_data"), ctx.mlm, ctx.tmp / "store",
                             data={"pool": {"path": str(path)}, "test": None, "n_labeled": 4})
    return (lambda: validate(config, check_backbone=False).raise_for_errors()), [
        str(path), "label(s) ['positive'] have no examples"]


# -- task spec: patterns and verbalizers ---------------------------------------------------------------------------
def labels(negative: list[str], positive: list[str], negative_raw: list[Any] | None = None) -> list[dict]:
    """The two sentiment labels with the given verbalizer words."""
    return [{"name": "negative", "raw": negative_raw or [0], "words": negative},
            {"name": "positive", "raw": [1], "words": positive}]


# (case id, changes to SENTIMENT_SPEC, fragments)
SPEC_CASES = [
    ("pattern-without-mask", {"patterns": ["{a} It was {mask}.", "{a} It was great."]},
     ["patterns.1.template", "needs exactly one {mask}, found 0"]),
    ("pattern-with-two-masks", {"patterns": ["{a} It was {mask} and {mask}."]}, ["patterns.0.template", "found 2"]),
    ("pattern-unknown-placeholder", {"patterns": ["{a} It was {mask}. {c}"]},
     ["patterns.0.template", "unknown placeholder(s) ['c']",
      "use {a}, {b}, {mask}, {demos} (demonstrations) and, for learned prompt tokens, {soft} or {soft:N}"]),
    ("pattern-without-text", {"patterns": ["It was {mask}."]}, ["patterns.0.template", "uses no text"]),
    ("b-without-fields-b", {"patterns": ["{a} {b} It was {mask}."]}, ["pattern 0 uses {b} but fields.b is empty"]),
    ("duplicate-verbalizer-words", {"labels": labels(["bad", "good"], ["good", "great"])},
     ["pattern 0", "verbalizer word 'good' is used by 'negative' and 'positive'"]),
    ("verbalizer-labels-mismatch",
     {"patterns": ["{a} It was {mask}.", {"template": "Just {mask}! {a}",
                                          "verbalizer": {"negative": ["bad"], "neutral": ["fine"]}}]},
     ["pattern 1", "verbalizer labels ['negative', 'neutral'] differ from task labels ['negative', 'positive']"]),
    ("single-label-spec", {"labels": [{"name": "positive", "raw": [1], "words": ["good"]}]},
     ["labels", "at least 2 items"]),
    ("duplicate-label-names", {"labels": [{"name": "positive", "raw": [0], "words": ["bad"]},
                                          {"name": "positive", "raw": [1], "words": ["good"]}]},
     ["duplicate label names ['positive']"]),
    ("raw-value-of-two-labels", {"labels": labels(["bad"], ["good"], negative_raw=[0, 1])},
     ["raw value '1' maps to both 'negative' and 'positive'"]),
    ("label-without-words", {"labels": labels([], ["good"])}, ["labels.0.words", "at least 1 item"]),
    ("unknown-spec-key", {"verbalizers": {"negative": ["bad"]}}, ["verbalizers", "Extra inputs are not permitted"]),
]


def spec_case(ctx, changes: dict, fragments: list[str]):
    return (lambda: TaskSpec.model_validate(sentiment(**changes))), fragments


cases(PydanticError, spec_case, SPEC_CASES)


@case("spec-file-error-names-the-file", ValueError)
def _(ctx):
    path = ctx.write("tasks/broken.yaml", yaml.safe_dump(sentiment(patterns=["{a} It was great."])))
    return (lambda: TaskSpec.from_yaml(path)), [str(path), "needs exactly one {mask}"]


def pvp_case(ctx, changes: dict, pattern: int, max_seq_length: int, fragments: list[str]):
    spec = TaskSpec.model_validate(sentiment(**changes))
    return (lambda: PVP(spec, pattern, ctx.tokenizer(), max_seq_length)), fragments


# (case id, exception, changes to SENTIMENT_SPEC, pattern id, max_seq_length, fragments)
cases(None, pvp_case, [
    ("verbalizer-word-not-one-token", VerbalizerError, {"labels": labels(["bad"], ["good", "wonderfulness"])}, 0, 64,
     ["'wonderfulness'", "label 'positive'", "not one token", "splits into ['wonderful', '##n', '##ess']",
      "multi_token: true"]),
    ("verbalizer-word-that-tokenizes-to-nothing", VerbalizerError, {"labels": labels(["bad"], ["  "])}, 0, 64,
     ["label 'positive'", "tokenizes to nothing"]),
    ("multi-token-pattern-too-long-for-max-seq-length", ValueError,
     {"labels": labels(["bad"], ["wonderfulness"]), "multi_token": True,
      "patterns": ["{a} all in all , it was {mask} , in summary ."]}, 0, 12,
     ["pattern 0", "tokens without any text", "max_seq_length is 12"]),
    ("pattern-id-out-of-range", IndexError, {}, 5, 64, ["pattern 5 does not exist", "has 2"]),
])


@case("run-config-pattern-id-out-of-range", ValueError)
def _(ctx):
    config = tiny_run_config(ctx.fixture("topic_data"), ctx.mlm, ctx.tmp / "store", patterns=[0, 3])
    return config.task_spec, ["patterns [3] do not exist", "'tiny_topics' has 2"]


# -- backbone ------------------------------------------------------------------------------------------------------
@case("backbone-path-does-not-exist", BackboneError)
def _(ctx):
    path = ctx.tmp / "models" / "missing"
    return (lambda: MaskedLM.load(ctx.model(path))), [str(path), "does not exist"]


@case("backbone-folder-without-model", BackboneError)
def _(ctx):
    (ctx.tmp / "empty-model").mkdir()
    return (lambda: MaskedLM.load(ctx.model(ctx.tmp / "empty-model"))), [
        "cannot load masked LM", str(ctx.tmp / "empty-model")]


@case("backbone-without-mlm-head", BackboneError)
def _(ctx):
    path = ctx.fixture("headless_backbone")
    return (lambda: MaskedLM.load(ctx.model(path))), [str(path), "no trained MLM head", "cls.predictions",
                                                      "adapt it first"]


@case("backbone-without-mlm-head-validate", ValidationError)
def _(ctx):
    path = ctx.fixture("headless_backbone")
    config = tiny_run_config(ctx.fixture("topic_data"), path, ctx.tmp / "store")
    return (lambda: validate(config).raise_for_errors()), ["model.backbone", str(path), "no MLM head",
                                                          "add an `adapt:` section"]


@case("cuda-device-unavailable", BackboneError,
      pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA"))
def _(ctx):
    return (lambda: MaskedLM.load(ctx.model(device="cuda"))), ["'cuda'", "CUDA is not available"]


# -- numbers in the run config -------------------------------------------------------------------------------------
def config_action(ctx, **sections) -> Callable[[], Any]:
    raw = tiny_run_dict(ctx.fixture("topic_data"), ctx.mlm, ctx.tmp / "store", **sections)
    return lambda: RunConfig.model_validate(raw)


# (case id, sections replaced or merged into tiny_run_dict, fragments)
cases(PydanticError, lambda ctx, sections, fragments: (config_action(ctx, **sections), fragments), [
    ("negative-train-steps", {"train": {"max_steps": -10}}, ["train.max_steps", "greater than or equal to 1"]),
    ("zero-distill-steps", {"distill": {"max_steps": 0}}, ["distill.max_steps", "greater than or equal to 1"]),
    ("ensemble-temperature-zero", {"ensemble": {"temperature": 0}}, ["ensemble.temperature", "greater than 0"]),
    ("distill-temperature-negative", {"distill": {"temperature": -2.0}}, ["distill.temperature", "greater than 0"]),
    ("lambda-zero", {"ipet": {"labeller_fraction": 0.0}}, ["ipet.labeller_fraction", "greater than 0"]),
    ("lambda-above-one", {"ipet": {"labeller_fraction": 1.01}}, ["ipet.labeller_fraction", "less than or equal to 1"]),
    ("duplicate-seeds", {"seeds": [3, 1, 3]}, ["seeds must be distinct", "[3, 1, 3]"]),
    ("unknown-config-key", {"trian": {"max_steps": 3}}, ["trian", "Extra inputs are not permitted"]),
])


# -- artifacts -----------------------------------------------------------------------------------------------------
def small_table() -> pa.Table:
    return pa.table({"example_id": [f"r{i}" for i in range(200)], "a": ["some text"] * 200})


@case("truncated-parquet", ArtifactError)
def _(ctx):
    path = write_table(small_table(), ctx.tmp / "unlabeled.parquet")
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    return (lambda: read_table(path)), [str(path), "not a readable Parquet file", "rerun the stage"]


@case("artifact-hash-mismatch", ArtifactError)
def _(ctx):
    path = write_table(small_table(), ctx.tmp / "logits.parquet")
    ref = Ref.of(path)
    write_table(small_table().slice(1), path)
    return ref.verify, [str(path), "does not match its record", "rerun its stage"]


@case("artifact-deleted", ArtifactError)
def _(ctx):
    path = write_table(small_table(), ctx.tmp / "labeled.parquet")
    ref = Ref.of(path)
    path.unlink()
    return ref.verify, [str(path), "does not exist"]


@case("corrupt-json-artifact", ArtifactError)
def _(ctx):
    path = ctx.write("metrics.json", '{"accuracy": 0.5')
    return (lambda: read_json(path)), [str(path), "cannot read JSON artifact"]


@case("model-dir-without-train-record", ArtifactError)
def _(ctx):
    from pet_core.kinds.base import load_pattern_model

    return (lambda: load_pattern_model(TaskSpec.model_validate(SENTIMENT_SPEC), ctx.mlm, ctx.model())), [
        str(ctx.mlm), "train_record.json", "not a finished pattern model"]


@case("nan-logits", ArtifactError)
def _(ctx):
    from pet_core.ensemble import merge

    good = write_table(logits_table(["a", "b"], np.zeros((2, 2)), model_id="m0"), ctx.tmp / "m0.parquet")
    bad = write_table(logits_table(["a", "b"], np.array([[0.0, np.nan], [1.0, 2.0]]), model_id="m1"),
                      ctx.tmp / "m1.parquet")
    return (lambda: merge([good, bad], [0.5, 0.5], ["negative", "positive"], EnsembleConfig())), [
        str(bad), "NaN/inf", "rescore that model"]


@case("logits-of-different-examples", ArtifactError)
def _(ctx):
    from pet_core.ensemble import merge

    one = write_table(logits_table(["a", "b"], np.zeros((2, 2)), model_id="m0"), ctx.tmp / "m0.parquet")
    two = write_table(logits_table(["a", "c"], np.zeros((2, 2)), model_id="m1"), ctx.tmp / "m1.parquet")
    return (lambda: merge([one, two], [0.5, 0.5], ["negative", "positive"], EnsembleConfig())), [
        str(two), "example ids differ", str(one)]


# -- numerics ------------------------------------------------------------------------------------------------------
def train_action(ctx, backbone: Path, config: TrainConfig) -> Callable[[], Any]:
    examples = ctx.fixture("sentiment_examples")
    store = ArtifactStore(ctx.tmp / "store")
    labeled = Ref.of(write_table(examples.slice(0, 8), ctx.tmp / "t.parquet"))

    def action():
        try:
            stages.train(store, TaskSpec.model_validate(SENTIMENT_SPEC), ctx.model(backbone), config, 0, 1, 0,
                         labeled, None)
        finally:  # a failed stage commits nothing
            assert [p for p in (store.root / "train").iterdir()] == []

    return action


@case("nan-weights-nan-loss", NumericalError)
def _(ctx):
    return train_action(ctx, ctx.fixture("nan_backbone"), FAST_TRAIN), [
        "train g0-p0-s1 step 0", "loss is nan", "lower the learning rate"]


@case("huge-learning-rate-nan-loss", NumericalError)
def _(ctx):
    return train_action(ctx, ctx.mlm, FAST_TRAIN.model_copy(update={"learning_rate": 1e30, "max_steps": 6})), [
        "train g0-p0-s1 step", "loss is", "lower the learning rate"]


# -- empty D, too few models ---------------------------------------------------------------------------------------
@case("empty-d-score-merge-then-distill", ValueError)
def _(ctx):
    spec = TaskSpec.model_validate(SENTIMENT_SPEC)
    model = ctx.model()
    trained = ctx.fixture("trained_models")
    store = ArtifactStore(ctx.tmp / "store")
    empty = Ref.of(write_table(ctx.fixture("sentiment_examples").slice(0, 0), ctx.tmp / "empty.parquet"))

    def action():
        logits = []
        for result in trained:
            scored = stages.score(store, spec, model, ScoreConfig(batch_size=8), Ref.of(result.model_dir), empty)
            assert read_table(scored.out("logits").path).num_rows == 0 and scored.info["rows"] == 0
            logits.append(scored.out("logits"))
        soft = stages.merge(store, spec, EnsembleConfig(), logits, [0.5, 0.5])
        assert read_table(soft.out("soft_labels").path).num_rows == 0 and soft.info["rows"] == 0
        stages.distill(store, spec, model, DistillConfig(max_steps=1), empty, soft.out("soft_labels"))

    return action, ["distillation needs at least one training example", "D is empty"]


@case("adapt-on-empty-d", ValueError)
def _(ctx):
    empty = ctx.fixture("sentiment_examples").slice(0, 0)
    from pet_core.adapt import adapt_backbone

    return (lambda: adapt_backbone(ctx.model(), AdaptConfig(max_steps=1), empty, ctx.tmp / "adapted")), [
        "unlabelled text", "D is empty"]


@case("ipet-with-one-model", ValueError)
def _(ctx):
    from pet_core.ipet import next_generation

    examples = ctx.fixture("sentiment_examples")
    logits = write_table(logits_table(examples.column("example_id").to_pylist(), np.zeros((40, 2)), model_id="m"),
                         ctx.tmp / "m.parquet")
    return (lambda: next_generation(examples.slice(0, 4), examples, [logits], [1.0], 1, IpetConfig(),
                                    ["negative", "positive"], 0)), [
        "iPET needs at least 2 models per generation", "got 1"]


# -- the matrix ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("make", "exc"), CASES)
def test_bad_input_fails_with_a_clear_error(make, exc, tmp_path, request):
    action, fragments = make(Ctx(tmp_path, request))
    with pytest.raises(exc) as err:
        action()
    message = str(err.value)
    missing = [f for f in fragments if f not in message]
    assert not missing, f"message lacks {missing}:\n{message}"


def test_the_matrix_has_at_least_30_cases():
    assert len(CASES) >= 30


def test_empty_test_file_is_reported_before_training(topic_data, tiny_mlm_dir, tmp_path):
    empty = tmp_path / "test.csv"
    empty.write_text("id,title,description,topic\n", encoding="utf-8")
    config = tiny_run_config(topic_data, Path(tiny_mlm_dir), tmp_path / "store",
                             data={"test": {"path": str(empty)}})
    spec = config.task_spec()
    test = Ref.of(write_table(load_examples(config.data.test, spec), tmp_path / "test.parquet"))
    logits = write_table(logits_table([], np.zeros((0, 3)), model_id="m"), tmp_path / "m.parquet")
    metrics = stages.logits_metrics(spec, [Ref.of(logits)], [None], test, EnsembleConfig())
    assert metrics["ensemble"]["n"] == 0, "an empty test set gives empty metrics, not a crash"
    errors = validate(config, check_backbone=False).errors
    assert any("data.test" in e and str(empty) in e for e in errors), errors


# -- odd but fine --------------------------------------------------------------------------------------------------
def test_extra_columns_are_ignored(tmp_path):
    path = tmp_path / "pool.csv"
    path.write_text(csv("a good film,1,x,2020", "a bad film,0,y,2021", header="sentence,label,source,year"),
                    encoding="utf-8")
    table = load(path)()
    assert table.column_names == ["example_id", "a", "b", "label"]
    assert table.column("a").to_pylist() == ["a good film", "a bad film"]
    assert table.column("label").to_pylist() == ["positive", "negative"]


def test_texts_longer_than_max_seq_length_are_a_counted_warning(topic_data, tiny_mlm_dir, tmp_path):
    config = tiny_run_config(topic_data, Path(tiny_mlm_dir), tmp_path / "store", model={"max_seq_length": 14})
    report = validate(config)
    assert report.ok, report.errors
    warnings = [w for w in report.warnings if "exceed max_seq_length=14" in w]
    assert len(warnings) == 2 and all("will be truncated" in w for w in warnings)
    counts = [int(w.split(": ")[1].split(" of ")[0]) for w in warnings]
    assert all(0 < c <= 21 for c in counts)


def test_long_texts_train_and_score_truncated(sentiment_spec, sentiment_examples, tiny_mlm_dir, tmp_path):
    long = sentiment_examples.slice(0, 8)
    long = long.set_column(1, "a", pa.array([" ".join([t] * 30) for t in long.column("a").to_pylist()], pa.string()))
    model = tiny_model_config(tiny_mlm_dir, max_seq_length=16)
    store = ArtifactStore(tmp_path / "store")
    t = Ref.of(write_table(long, tmp_path / "t.parquet"))
    trained = stages.train(store, sentiment_spec, model, FAST_TRAIN, 0, 1, 0, t, None)
    scored = stages.score(store, sentiment_spec, model, ScoreConfig(), trained.out("model"), t)
    assert read_table(scored.out("logits").path).num_rows == 8


# -- zero-shot |T| = 0: iPET's first generation picks the top k per label ------------------------------------------
@pytest.fixture(scope="module")
def zero_shot(topic_data, tiny_mlm_dir, tmp_path_factory):
    config = tiny_run_config(topic_data, Path(tiny_mlm_dir), tmp_path_factory.mktemp("zero-shot") / "store",
                             data={"n_labeled": 0}, ipet={"generations": 1, "zero_shot_top_k": 3})
    with spy_stages() as calls:
        result = pipeline.run(config)
    return {"config": config, "result": result, "calls": calls}


def test_zero_shot_pipeline_runs(zero_shot):
    result = zero_shot["result"]
    assert result.prepared.info["labeled"]["rows"] == 0
    gen0, gen1 = result.generations
    assert [t.info["n_labeled"] for t in gen0.trained] == [0, 0]
    assert all(t.info["pre_train_accuracy"] is None and t.info["steps"] == 0 for t in gen0.trained)
    assert all(t.info["n_labeled"] > 0 and t.info["steps"] > 0 for t in gen1.trained), "generation 1 trains"
    summary = result.summary(zero_shot["config"].task_spec(), zero_shot["config"])
    assert summary["final"]["n"] == 9 and len(summary["generations"]) == 2


def test_zero_shot_first_generation_is_top_k_per_label(zero_shot):
    result = zero_shot["result"]
    sets = next(r for r in result.records if r.stage == "ipet")
    d = read_table(result.prepared.out("unlabeled").path)
    for i, report in enumerate(sets.info["sets"]):
        assert report["requested"] == {"World": 3, "Sports": 3, "Business": 3}
        table = read_table(sets.out(f"train_{i}").path)
        assert table.num_rows == report["rows"] == sum(report["added"].values()) <= 9
        assert all(count <= 3 for count in report["added"].values())
        assert set(table.column("example_id").to_pylist()) <= set(d.column("example_id").to_pylist())
        assert table.column("label").null_count == 0
        assert result.generations[1].trained[i].info["n_labeled"] == table.num_rows


def test_zero_shot_shortfall_is_reported(zero_shot, tmp_path):
    from pet_core.ipet import next_generation

    result = zero_shot["result"]
    gen0 = result.generations[0]
    d = read_table(result.prepared.out("unlabeled").path)
    sets = next_generation(read_table(result.prepared.out("labeled").path), d,
                           [r.path for r in gen0.unlabeled_logits], gen0.accuracies, 1,
                           IpetConfig(zero_shot_top_k=100), ["World", "Sports", "Business"], 0)
    for built in sets:  # 100 per label requested, |D| = 21 rows: every label falls short
        report = built.report()
        for label, wanted in report["requested"].items():
            assert report["shortfall"].get(label, 0) == wanted - report["added"].get(label, 0)


# -- 2 vs 20 labels ------------------------------------------------------------------------------------------------
def many_labels_spec(tokenizer, n: int) -> TaskSpec:
    """n labels whose words are distinct whole-word tokens of the tiny vocabulary."""
    vocab = sorted(t for t in tokenizer.get_vocab() if t.isalpha() and len(t) >= 4)
    words = [w for w in vocab if tokenizer.tokenize(" " + w) == [w]][:n]
    assert len(words) == n
    return TaskSpec.model_validate({
        "name": f"labels{n}", "fields": {"a": "sentence", "label": "label"},
        "labels": [{"name": f"L{i:02d}", "raw": [str(i)], "words": [w]} for i, w in enumerate(words)],
        "patterns": ["{a} It was {mask}.", "Just {mask}! {a}"],
    })


@pytest.mark.parametrize("n_labels", [2, 20])
def test_two_and_twenty_labels(n_labels, tiny_tokenizer, sentiment_examples, tiny_mlm_dir, tmp_path):
    spec = many_labels_spec(tiny_tokenizer, n_labels)
    names = spec.label_names
    table = sentiment_examples.set_column(3, "label", pa.array([names[i % n_labels] for i in range(40)],
                                                               pa.string()))
    model = tiny_model_config(tiny_mlm_dir)
    store = ArtifactStore(tmp_path / "store")
    t = Ref.of(write_table(table.slice(0, n_labels), tmp_path / "t.parquet"))  # one example per label
    d = Ref.of(write_table(table.slice(n_labels).set_column(3, "label", pa.nulls(40 - n_labels, pa.string())),
                           tmp_path / "d.parquet"))
    trained = [stages.train(store, spec, model, FAST_TRAIN, p, 1, 0, t, d) for p in (0, 1)]
    logits = [stages.score(store, spec, model, ScoreConfig(), r.out("model"), d).out("logits") for r in trained]
    for ref in logits:
        assert read_table(ref.path).schema.field("logits").type == pa.list_(pa.float32(), n_labels)
    soft = stages.merge(store, spec, EnsembleConfig(), logits, [r.info["pre_train_accuracy"] for r in trained])
    probs = read_table(soft.out("soft_labels").path)
    assert probs.schema.field("soft_labels").type.list_size == n_labels
    assert set(probs.column("label").to_pylist()) <= set(names)
    metrics = stages.logits_metrics(spec, logits, [None, None], _labelled(tmp_path, table, d), EnsembleConfig())
    assert len(metrics["ensemble"]["per_class_f1"]) == n_labels


def _labelled(tmp_path: Path, table: pa.Table, d: Ref) -> Ref:
    """D with its (hidden) gold labels, for logits_metrics."""
    ids = set(read_table(d.path).column("example_id").to_pylist())
    mask = pa.array([e in ids for e in table.column("example_id").to_pylist()])
    return Ref.of(write_table(table.filter(mask), tmp_path / "d_gold.parquet"))


# -- the CLI: one `error:` line on stderr, exit 2, no traceback, nothing written (issue 18) -------------------------
def cli_error(args: list[str], *fragments: str, work: Path | None = None) -> str:
    """Run ``petflow ARGS``; assert it fails with one `error:` line holding ``fragments``; return that line.

    ``work``: the folder of the run's store and runs dir, which must stay absent.
    """
    from typer.testing import CliRunner

    from flows.cli import app

    result = CliRunner().invoke(app, [str(a) for a in args])
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.exit_code == 2, (result.exit_code, result.stdout, result.stderr, result.exception)
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    missing = [f for f in fragments if f not in lines[0]]
    assert not missing, f"{lines[0]!r} lacks {missing}"
    if work is not None:
        assert not (work / "store").exists() and not (work / "runs").exists(), "a failed command wrote to the store"
    return lines[0]


@pytest.fixture
def run_yaml(topic_data, tiny_mlm_dir, tmp_path):
    """``run_yaml(**sections)`` -> a tiny run config YAML on the topic data; store and runs dir under tmp_path.

    A dict in ``sections`` is merged into its section (as in tiny_run_dict), anything else replaces the key.
    """
    from _run_support import write_yaml

    def write(name: str = "run.yaml", **sections: Any) -> Path:
        config = tiny_run_dict(topic_data, Path(tiny_mlm_dir), tmp_path / "store",
                               **{k: v for k, v in sections.items() if k != "store"})
        config.update({k: v for k, v in sections.items() if k == "store"})
        return write_yaml(config, tmp_path / name)

    return write


# (case id, YAML text, fragments after the file path)
BAD_YAML = [
    ("unclosed-bracket", "name: x\nseeds: [1, 2\ntrain:\n  max_steps: 3\n",
     ["invalid YAML at line 3, column 6", "expected ',' or ']'", "starts at line 2, column 8"]),
    ("tab-indent", "name: x\ntrain:\n\tmax_steps: 3\n", ["invalid YAML at line 3, column 1", "not tabs"]),
    ("top-level-list", "- name: x\n- seeds: [1]\n", ["the top level is a list, not a mapping", "key: value"]),
    ("top-level-scalar", "just some words\n", ["the top level is the single value 'just some words'"]),
]


@pytest.mark.parametrize(("text", "fragments"), [pytest.param(t, f, id=i) for i, t, f in BAD_YAML])
def test_malformed_run_config_yaml_is_one_line(text, fragments, tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text(text, encoding="utf-8")
    line = cli_error(["validate", path], f"run config {path}", *fragments, work=tmp_path)
    assert "<unicode string>" not in line


def test_malformed_task_spec_yaml_names_the_spec_file(run_yaml, tmp_path):
    task = tmp_path / "task.yaml"
    task.write_text("name: x\nlabels: [\n", encoding="utf-8")
    cli_error(["validate", run_yaml(task=str(task))], f"task spec {task}: invalid YAML at line 3", work=tmp_path)


@pytest.mark.parametrize(("pair", "fragments"), [
    ("seeds=[1,2", ["--set seeds=[1,2", "not valid YAML at column 5", "expected ',' or ']'"]),
    ("train.max_steps.x=1", ["--set train.max_steps.x", "train.max_steps is not a section", "it holds 3",
                             "--set train.max_steps=VALUE"]),
    ("train.max_steps=abc", ["--set train.max_steps=abc", "valid integer"]),
    ("seeds=[2, 2]", ["--set seeds=[2, 2]", "seeds must be distinct"]),
], ids=["unparsable-value", "key-through-a-value", "type-error", "invalid-value"])
def test_bad_set_override_is_blamed_on_the_set_key(pair, fragments, run_yaml, tmp_path):
    line = cli_error(["validate", run_yaml(), "--set", pair], *fragments, work=tmp_path)
    assert "run config" not in line, "a --set mistake is not the config file's"


def test_validate_rejects_an_empty_pattern_list(run_yaml, tmp_path):
    cli_error(["validate", run_yaml(patterns=[])], "patterns: [] selects no pattern", "the task has 2",
              "remove `patterns:`", work=tmp_path)


@pytest.mark.parametrize("command", ["validate", "run"])
def test_an_unknown_pattern_model_kind_is_one_line_listing_the_known_kinds(command, run_yaml, tmp_path):
    cli_error([command, run_yaml(patterns=[0, {"pattern": 1, "kind": "gpt"}])], "run config",
              "patterns[1]: unknown pattern-model kind 'gpt'; known kinds: cloze, prefix_tuning, prompt_tuning, "
              "ptuning, t5", work=tmp_path)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_validate_rejects_cuda_on_a_machine_without_it(run_yaml, tmp_path):
    cli_error(["validate", run_yaml(model={"device": "cuda"})], "model.device", "CUDA is not available",
              "auto", work=tmp_path)


@pytest.mark.parametrize("key", ["store", "runs_dir"])
def test_validate_rejects_a_store_path_that_is_a_file(key, run_yaml, tmp_path):
    blocker = tmp_path / "blocker"
    blocker.write_text("not a folder", encoding="utf-8")
    cli_error(["validate", run_yaml(**{key: str(blocker)})], f"{key}: {blocker} is a file, not a folder")
    cli_error(["validate", run_yaml(**{key: str(blocker / "sub")})], f"{key}: {blocker} (on the way to")
    assert blocker.read_text(encoding="utf-8") == "not a folder"


def test_validate_rejects_a_backbone_folder_with_only_config_json(run_yaml, tiny_mlm_dir, tmp_path):
    folder = tmp_path / "backbone"
    folder.mkdir()
    shutil.copy(Path(tiny_mlm_dir) / "config.json", folder)
    cli_error(["validate", run_yaml(model=tiny_model_dict(folder))], f"model.backbone '{folder}'",
              "lacks the weights, model.safetensors or pytorch_model.bin", "it holds only config.json", work=tmp_path)


def test_validate_reports_a_truncated_safetensors_file(run_yaml, tiny_mlm_dir, tmp_path):
    folder = tmp_path / "backbone"
    shutil.copytree(tiny_mlm_dir, folder)
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    for adapt in (None, {"max_steps": 2}):  # the header is read with or without an adapt section
        cli_error(["validate", run_yaml(model=tiny_model_dict(folder), adapt=adapt)], f"model.backbone: {weights}",
                  "truncated", "re-download or re-copy it", work=tmp_path)


def test_pickled_backbone_weights_load_only_when_allowed(run_yaml, tiny_mlm_dir, tmp_path):
    from transformers import AutoModelForMaskedLM

    from pet_core.keys import model_key

    folder = tmp_path / "backbone"
    shutil.copytree(tiny_mlm_dir, folder)
    torch.save(AutoModelForMaskedLM.from_pretrained(folder).state_dict(), folder / "pytorch_model.bin")
    (folder / "model.safetensors").unlink()
    cli_error(["validate", run_yaml(model=tiny_model_dict(folder))], f"model.backbone '{folder}'",
              "only pickled weights (.bin)", "model.allow_pickle_weights: true", work=tmp_path)
    with pytest.raises(BackboneError, match="cannot load masked LM"):  # run refuses it too, not only validate
        MaskedLM.load(ModelConfig(**tiny_model_dict(folder)))
    allowed = ModelConfig(**tiny_model_dict(folder), allow_pickle_weights=True)
    assert MaskedLM.load(allowed).model.num_parameters() > 0
    assert model_key(allowed) == model_key(ModelConfig(**tiny_model_dict(folder)))  # same keys either way


def test_backbone_path_that_is_a_file_is_not_called_missing(run_yaml, tmp_path):
    file = tmp_path / "model.safetensors"
    file.write_bytes(b"\0" * 16)
    line = cli_error(["validate", run_yaml(model=tiny_model_dict(file))], f"model.backbone: {file} is a file",
                     "not a model folder", work=tmp_path)
    assert "does not exist" not in line


def test_config_path_that_is_a_folder_is_not_called_missing(tmp_path):
    line = cli_error(["validate", tmp_path], f"run config {tmp_path} is a folder, not a YAML file")
    assert "does not exist" not in line


def test_run_rejects_zero_workers(run_yaml, tmp_path):
    cli_error(["run", run_yaml(), "--workers", "0"], "--workers must be ≥ 1", work=tmp_path)


# -- predict ------------------------------------------------------------------------------------------------------
def test_predict_on_a_pvp_model_names_the_classifier_to_pass(trained_models, sentiment_data, tmp_path):
    out = tmp_path / "preds.parquet"
    pvp = trained_models[0].model_dir
    cli_error(["predict", pvp, sentiment_data / "pool.csv", "--out", out, "--task", sentiment_data / "task.yaml"],
              f"{pvp} is a PVP model (masked LM)", "pass the classifier: .petflow/runs/<run>/links/classifier")
    assert not out.exists()


@pytest.fixture(scope="module")
def sentiment_classifier(sentiment_examples, tiny_mlm_dir, tmp_path_factory) -> Path:
    """A sequence classifier of the sentiment task, distilled for two steps from gold labels."""
    from pet_core.distill import GoldLabels, distill

    names = ["negative", "positive"]
    train = sentiment_examples.slice(0, 8)
    targets = np.array([names.index(x) for x in train.column("label").to_pylist()])
    out = tmp_path_factory.mktemp("classifier") / "classifier"
    distill(train, targets, names, tiny_model_config(tiny_mlm_dir), DistillConfig(max_steps=2, batch_size=4),
            out, objective=GoldLabels())
    return out


def test_predict_with_a_label_outside_the_spec_predicts_every_row(sentiment_classifier, sentiment_data, tmp_path):
    from typer.testing import CliRunner

    from flows.cli import app

    rows = (sentiment_data / "pool.csv").read_text(encoding="utf-8").splitlines()
    rows[5] = rows[5].rsplit(",", 1)[0] + ",7"  # data row 4: a label the spec does not know
    data = tmp_path / "input.csv"
    data.write_text("\n".join(rows[:11]) + "\n", encoding="utf-8")
    out = tmp_path / "preds.parquet"
    result = CliRunner().invoke(app, ["predict", str(sentiment_classifier), str(data), "--out", str(out),
                                      "--task", str(sentiment_data / "task.yaml")])
    assert result.exit_code == 0, result.stdout + result.stderr
    assert read_table(out).num_rows == 10
    assert "wrote 10 predictions" in result.stdout and "accuracy against the input's labels" in result.stdout
    warnings = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(warnings) == 1 and warnings[0].startswith("warning: 1 row(s)"), result.stderr
    assert "row 4, '7'" in warnings[0] and "left out of the accuracy" in warnings[0]


def test_predict_uses_the_max_seq_length_the_classifier_was_trained_with(sentiment_examples, sentiment_data,
                                                                          tiny_mlm_dir, tmp_path):
    """A classifier distilled at max_seq_length 9 predicts with 9, so `predict` gives the run's own logits."""
    from pet_core.distill import GoldLabels, distill, evaluate
    from tasks.predict import predict_file

    names = ["negative", "positive"]
    train = sentiment_examples.slice(0, 8)
    short = tiny_model_config(tiny_mlm_dir).model_copy(update={"max_seq_length": 9})
    out = tmp_path / "classifier"
    distill(train, np.array([names.index(x) for x in train.column("label").to_pylist()]), names, short,
            DistillConfig(max_steps=2, batch_size=4), out, objective=GoldLabels())
    preds = tmp_path / "preds.parquet"
    predict_file(out, sentiment_data / "pool.csv", preds, sentiment_data / "task.yaml")
    run_own = logits_of(evaluate(out, sentiment_examples, short.model_copy(update={"backbone": str(out)}))[1])
    longer = logits_of(evaluate(out, sentiment_examples, short.model_copy(
        update={"backbone": str(out), "max_seq_length": 256}))[1])
    assert not np.allclose(run_own, longer), "the texts must be longer than 9 tokens for this test to mean anything"
    np.testing.assert_array_equal(logits_of(read_table(preds)), run_own)


def _backbone_with(tiny_mlm_dir: Path, tmp_path: Path, damage: str) -> Path:
    """A copy of the tiny backbone with only config.json, truncated weights or only pickled weights."""
    folder = tmp_path / f"backbone-{damage}"
    if damage == "config-only":
        folder.mkdir()
        shutil.copy(Path(tiny_mlm_dir) / "config.json", folder)
        return folder
    shutil.copytree(tiny_mlm_dir, folder)
    weights = folder / "model.safetensors"
    if damage == "truncated":
        weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    else:
        torch.save({}, folder / "pytorch_model.bin")
        weights.unlink()
    return folder


# Run-time failures validate must catch: (id, sections of the tiny run config, fragment of the one error line)
RUN_TIME_FAILURES = [
    ("no-patterns", lambda d, t: {"patterns": []}, "patterns: [] selects no pattern"),
    ("store-is-a-file", lambda d, t: {"store": str(t / "blocker")}, "is a file, not a folder"),
    ("backbone-config-only", lambda d, t: {"model": tiny_model_dict(_backbone_with(d, t, "config-only"))},
     "lacks the weights"),
    ("backbone-truncated", lambda d, t: {"model": tiny_model_dict(_backbone_with(d, t, "truncated"))}, "truncated"),
    ("backbone-pickled", lambda d, t: {"model": tiny_model_dict(_backbone_with(d, t, "pickled"))},
     "only pickled weights"),
    ("words-unknown-pattern", lambda d, t: {"words": {"patterns": [7]}}, "words.patterns: [7] are not patterns"),
    ("words-label-missing-in-T", lambda d, t: {"words": {}, "data": {"n_labeled": 2}},
     "the label search needs an example of every label in T"),
]


@pytest.mark.parametrize("command", ["validate", "run"])
@pytest.mark.parametrize(("sections", "fragment"), [pytest.param(s, f, id=i) for i, s, f in RUN_TIME_FAILURES])
def test_run_refuses_exactly_what_validate_refuses(command, sections, fragment, run_yaml, tiny_mlm_dir, tmp_path,
                                                  monkeypatch):
    """`petflow run` runs validate's checks before Prefect starts: each failure that used to surface mid-pipeline
    is the same one line from both commands, and nothing is written."""
    import flows.cli

    # no early ephemeral server: its thread would log into the stream of a CliRunner call already closed
    monkeypatch.setattr(flows.cli, "start_ephemeral_server", lambda: None)
    (tmp_path / "blocker").write_text("not a folder", encoding="utf-8")
    line = cli_error([command, run_yaml(**sections(tiny_mlm_dir, tmp_path))], fragment)
    assert line.startswith("error: invalid run config: "), line
    assert not (tmp_path / "store").exists()
