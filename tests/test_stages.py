"""pet_core.stages: each stage over the artifact store (refs in, one pet_core call, refs out), on the tiny BERT."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from pet_core import keys, stages
from pet_core.artifacts import EXAMPLES_SCHEMA, ArtifactError, logits_of, read_table, write_json
from pet_core.config import DistillConfig, EnsembleConfig, IpetConfig, ScoreConfig, TrainConfig
from pet_core.data import DataSource
from pet_core.run_config import DataConfig
from pet_core.spec import TaskSpec
from pet_core.store import ArtifactStore, Ref
from pet_core.training import TRAIN_RECORD

from _petcore_support import SENTIMENT_SPEC, Recorder

TRAIN = TrainConfig(max_steps=3, batch_size=4, grad_accumulation=1, learning_rate=1e-3, score_batch_size=16)
SCORE = ScoreConfig(batch_size=16, chunk_rows=7)  # several chunks per table
DISTILL = DistillConfig(max_steps=3, batch_size=4, learning_rate=1e-3, eval_batch_size=16, include_labeled=False)
GRID = ((0, 1), (1, 1))


@pytest.fixture(scope="module")
def data_config(sentiment_data) -> DataConfig:
    """40 pool rows: 8 held out as test, T = 8 (stratified), D = 16."""
    return DataConfig(pool=DataSource(path=str(sentiment_data / "pool.csv")), n_labeled=8, n_unlabeled=16, holdout=8,
                      seed=3)


@pytest.fixture(scope="module")
def run(tmp_path_factory, sentiment_spec, model_config, data_config):
    """Every stage once, by hand, into one store."""
    store = ArtifactStore(tmp_path_factory.mktemp("stages") / "store")
    recorder = Recorder()
    prepared = stages.prepare(store, sentiment_spec, data_config)
    labeled, unlabeled, test = (prepared.out(k) for k in ("labeled", "unlabeled", "test"))
    trained = [stages.train(store, sentiment_spec, model_config, TRAIN, p, s, 0, labeled, unlabeled, [recorder])
               for p, s in GRID]
    d_logits = [stages.score(store, sentiment_spec, model_config, SCORE, t.out("model"), unlabeled).out("logits")
                for t in trained]
    test_logits = [stages.score(store, sentiment_spec, model_config, SCORE, t.out("model"), test).out("logits")
                   for t in trained]
    accuracies = [t.info["pre_train_accuracy"] for t in trained]
    soft = stages.merge(store, sentiment_spec, EnsembleConfig(), d_logits, accuracies)
    sets = stages.next_generation(store, sentiment_spec, IpetConfig(), labeled, unlabeled, d_logits, accuracies,
                                  1, 3)
    classifier = stages.distill(store, sentiment_spec, model_config, DISTILL, unlabeled, soft.out("soft_labels"),
                                labeled, seed=3)
    baseline = stages.supervised(store, sentiment_spec, model_config, DISTILL, labeled, seed=3)
    evaluation = stages.evaluate(store, sentiment_spec, model_config, classifier.out("classifier"), test, 16)
    return {"store": store, "prepared": prepared, "trained": trained, "d_logits": d_logits,
            "test_logits": test_logits, "accuracies": accuracies, "soft": soft, "sets": sets,
            "classifier": classifier, "baseline": baseline, "evaluation": evaluation, "recorder": recorder}


# -- prepare ----------------------------------------------------------------------------------------------------
def test_prepare_writes_disjoint_labeled_unlabeled_and_test(run, sentiment_spec):
    prepared = run["prepared"]
    assert prepared.stage == "prepare" and not prepared.cached
    t, d, test = (read_table(prepared.out(k).path) for k in ("labeled", "unlabeled", "test"))
    for tab in (t, d, test):
        assert tab.schema.equals(EXAMPLES_SCHEMA)
    assert (t.num_rows, d.num_rows, test.num_rows) == (8, 16, 8)
    ids = [set(tab.column("example_id").to_pylist()) for tab in (t, d, test)]
    assert not (ids[0] & ids[1]) and not (ids[0] & ids[2]) and not (ids[1] & ids[2])
    assert d.column("label").null_count == 16, "D's labels must be hidden"
    assert sorted(t.column("label").to_pylist()) == ["negative"] * 4 + ["positive"] * 4
    assert set(test.column("label").to_pylist()) <= set(sentiment_spec.label_names)
    assert prepared.info["labeled"] == {"rows": 8, "labels": {"negative": 4, "positive": 4}}
    assert prepared.info["unlabeled"]["rows"] == 16 and prepared.info["test"]["rows"] == 8


def test_prepare_is_cached_and_reseeding_draws_another_split(run, sentiment_spec, data_config):
    store = run["store"]
    again = stages.prepare(store, sentiment_spec, data_config)
    assert again.cached and again.to_dict() == run["prepared"].to_dict()
    other = stages.prepare(store, sentiment_spec, data_config.model_copy(update={"seed": 4}))
    assert not other.cached and other.key != again.key
    assert (read_table(other.out("labeled").path).column("example_id").to_pylist()
            != read_table(again.out("labeled").path).column("example_id").to_pylist())


def test_prepare_key_follows_the_pool_content(run, sentiment_spec, data_config, tmp_path):
    pool = tmp_path / "pool.csv"
    shutil.copy(data_config.pool.path, pool)
    with open(pool, "a", encoding="utf-8") as handle:
        handle.write("an extra review that is good,1\n")
    changed = stages.prepare(run["store"], sentiment_spec,
                             data_config.model_copy(update={"pool": DataSource(path=str(pool))}))
    assert changed.key != run["prepared"].key


def test_prepare_key_does_not_depend_on_paths(run, sentiment_spec, data_config, tmp_path):
    copy = tmp_path / "elsewhere" / "renamed.csv"
    copy.parent.mkdir()
    shutil.copy(data_config.pool.path, copy)
    moved = stages.prepare(run["store"], sentiment_spec,
                           data_config.model_copy(update={"pool": DataSource(path=str(copy))}))
    assert moved.key == run["prepared"].key and moved.cached


def _split_pool(data_dir: Path, out: Path) -> None:
    import pandas as pd

    pool = pd.read_csv(data_dir / "pool.csv", dtype=str)
    pool.iloc[:30].to_csv(out / "pool.csv", index=False)
    pool.iloc[30:].to_csv(out / "test.csv", index=False)
    pool.iloc[30:35][["sentence"]].to_csv(out / "extra.csv", index=False)


def test_prepare_with_a_test_source(tmp_path, sentiment_spec, sentiment_data):
    _split_pool(sentiment_data, tmp_path)
    config = DataConfig(pool=DataSource(path=str(tmp_path / "pool.csv")),
                        test=DataSource(path=str(tmp_path / "test.csv")), n_labeled=4, n_test=6, seed=0)
    prepared = stages.prepare(ArtifactStore(tmp_path / "store"), sentiment_spec, config)
    assert read_table(prepared.out("labeled").path).num_rows == 4
    assert read_table(prepared.out("unlabeled").path).num_rows == 26  # n_unlabeled=None: the rest of the pool
    test = read_table(prepared.out("test").path)
    assert test.num_rows == 6 and test.column("label").null_count == 0


def test_prepare_without_test_writes_no_test_output(tmp_path, sentiment_spec, sentiment_data):
    config = DataConfig(pool=DataSource(path=str(sentiment_data / "pool.csv")), n_labeled=4, seed=0)
    prepared = stages.prepare(ArtifactStore(tmp_path / "store"), sentiment_spec, config)
    assert sorted(prepared.outputs) == ["labeled", "unlabeled"] and "test" not in prepared.info


def test_prepare_adds_extra_unlabeled_text(tmp_path, sentiment_spec, sentiment_data):
    _split_pool(sentiment_data, tmp_path)
    config = DataConfig(pool=DataSource(path=str(tmp_path / "pool.csv")),
                        unlabeled=DataSource(path=str(tmp_path / "extra.csv")), n_labeled=4, n_unlabeled=10, seed=0)
    prepared = stages.prepare(ArtifactStore(tmp_path / "store"), sentiment_spec, config)
    d = read_table(prepared.out("unlabeled").path)
    assert d.num_rows == 15 and d.column("label").null_count == 15
    assert d.schema.equals(EXAMPLES_SCHEMA)
    extra_ids = [e for e in d.column("example_id").to_pylist() if e.startswith("u-")]
    assert len(extra_ids) == 5, "extra unlabelled rows get their own id namespace"


# -- train / score -----------------------------------------------------------------------------------------------
def test_train_outputs_a_model_dir_and_its_result(run, sentiment_spec):
    for (pattern, seed), record in zip(GRID, run["trained"], strict=True):
        model_dir = Path(record.out("model").path)
        assert (model_dir / "model.safetensors").is_file() and (model_dir / TRAIN_RECORD).is_file()
        assert record.info["model_id"] == f"g0-p{pattern}-s{seed}"
        assert record.info["pattern"] == pattern and record.info["generation"] == 0
        assert record.info["seed"] == keys.model_seed(seed, pattern, 0), "the explicit torch seed is recorded"
        assert record.info["n_labeled"] == 8 and record.info["steps"] == TRAIN.max_steps
        assert 0.0 <= record.info["pre_train_accuracy"] <= 1.0
        assert record.config["spec"] == keys.spec_hash(sentiment_spec)
    assert run["trained"][0].key != run["trained"][1].key
    losses = [e for e in run["recorder"].events if e[0] == "progress"]
    assert len(losses) == 2 * TRAIN.max_steps, "callbacks reach the training loop"


def test_model_seed_is_explicit_and_distinct():
    seeds = {keys.model_seed(s, p, g) for s in (1, 2) for p in (0, 1) for g in (0, 1)}
    assert len(seeds) == 8 and keys.model_seed(1, 0, 0) == keys.model_seed(1, 0, 0)


def test_train_cache_hit_and_key_sensitivity(run, sentiment_spec, model_config):
    store, prepared = run["store"], run["prepared"]
    labeled, unlabeled = prepared.out("labeled"), prepared.out("unlabeled")
    hit = stages.train(store, sentiment_spec, model_config, TRAIN, 0, 1, 0, labeled, unlabeled)
    assert hit.cached and hit.to_dict() == run["trained"][0].to_dict()
    # the device is not part of the key; the backbone is keyed by content, not by path
    assert keys.model_key(model_config.model_copy(update={"device": "auto"})) == keys.model_key(model_config)
    assert keys.model_key(model_config)["backbone"] == keys.backbone_fingerprint(model_config.backbone)
    assert keys.model_key(model_config)["backbone"] != model_config.backbone
    other = store.key("train", {**hit.config, "train": TRAIN.model_copy(update={"max_steps": 4}).to_dict()},
                      hit.inputs)
    assert other != hit.key


def test_backbone_fingerprint_ignores_the_directory_name(tiny_mlm_dir, tmp_path):
    copy = tmp_path / "some" / "other-name"
    shutil.copytree(tiny_mlm_dir, copy)
    assert keys.backbone_fingerprint(str(copy)) == keys.backbone_fingerprint(str(tiny_mlm_dir))
    assert keys.backbone_fingerprint("org/hub-model") == "org/hub-model"


def test_train_record_names_no_temp_path(run):
    record = run["trained"][0]
    committed = Path(record.out("model").path)
    assert committed.is_dir() and "model_dir" not in record.info, "the model is found through its output ref"
    in_dir = json.loads((committed / TRAIN_RECORD).read_text())
    assert "model_dir" not in in_dir and "wall_s" not in in_dir, "the model dir holds no run-specific values"


def test_score_writes_logits_in_the_spec_label_order(run, sentiment_spec, model_config):
    prepared = run["prepared"]
    d = read_table(prepared.out("unlabeled").path)
    for (pattern, seed), ref in zip(GRID, run["d_logits"], strict=True):
        logits = read_table(ref.path)
        assert logits.schema.field("example_id").type == pa.string()
        assert logits.schema.field("logits").type == pa.list_(pa.float32(), len(sentiment_spec.labels))
        assert logits.column_names == ["example_id", "logits", "model_id", "pattern", "seed", "generation"]
        assert sorted(logits.column("example_id").to_pylist()) == sorted(d.column("example_id").to_pylist())
        assert set(logits.column("model_id").to_pylist()) == {f"g0-p{pattern}-s{seed}"}
        assert np.isfinite(logits_of(logits)).all()
    # scoring the same model on the same table again is a cache hit
    again = stages.score(run["store"], sentiment_spec, model_config, SCORE, run["trained"][0].out("model"),
                         prepared.out("unlabeled"))
    assert again.cached and again.out("logits") == run["d_logits"][0]


def test_score_key_ignores_batch_size(run, sentiment_spec, model_config):
    bigger = stages.score(run["store"], sentiment_spec, model_config, SCORE.model_copy(update={"batch_size": 3}),
                          run["trained"][1].out("model"), run["prepared"].out("test"))
    assert bigger.cached and bigger.out("logits") == run["test_logits"][1]


# -- merge / next generation ----------------------------------------------------------------------------------
def test_merge_soft_labels(run, sentiment_spec):
    soft = read_table(run["soft"].out("soft_labels").path)
    assert soft.num_rows == 16 and run["soft"].info["rows"] == 16
    probs = logits_of(soft, "soft_labels")
    assert probs.shape == (16, 2) and np.allclose(probs.sum(1), 1.0, atol=1e-5)
    assert soft.column("label").to_pylist() == [sentiment_spec.label_names[i] for i in probs.argmax(1)]
    assert sum(run["soft"].info["predicted"].values()) == 16
    again = stages.merge(run["store"], sentiment_spec, EnsembleConfig(), run["d_logits"], run["accuracies"])
    assert again.cached
    hotter = stages.merge(run["store"], sentiment_spec, EnsembleConfig(temperature=5.0), run["d_logits"],
                          run["accuracies"])
    assert not hotter.cached and hotter.key != again.key


def test_merge_key_includes_the_label_names(run):
    renamed = TaskSpec.model_validate({**SENTIMENT_SPEC, "labels": [
        {**label, "name": label["name"].upper()} for label in SENTIMENT_SPEC["labels"]]})
    soft = stages.merge(run["store"], renamed, EnsembleConfig(), run["d_logits"], run["accuracies"])
    assert set(read_table(soft.out("soft_labels").path).column("label").to_pylist()) <= {"NEGATIVE", "POSITIVE"}


def test_next_generation_grows_each_training_set(run, sentiment_spec):
    sets = run["sets"]
    t = read_table(run["prepared"].out("labeled").path)
    t_ids = set(t.column("example_id").to_pylist())
    assert sorted(sets.outputs) == ["train_0", "train_1"]
    for i, name in enumerate(["train_0", "train_1"]):
        table = read_table(sets.out(name).path)
        assert table.num_rows > t.num_rows
        assert t_ids <= set(table.column("example_id").to_pylist())
        assert table.column("label").null_count == 0
        assert set(table.column("label").to_pylist()) <= set(sentiment_spec.label_names)
        report = sets.info["sets"][i]
        assert report["rows"] == table.num_rows and report["labellers"] == [f"g0-p{1 - i}-s1"]
    assert sets.info["generation"] == 1


# -- distill / supervised / evaluate ----------------------------------------------------------------------------
def test_distill_supervised_and_evaluate(run, sentiment_spec):
    for record in (run["classifier"], run["baseline"]):
        clf = Path(record.out("classifier").path)
        assert (clf / "model.safetensors").is_file() and (clf / "config.json").is_file()
        assert record.info["steps"] == DISTILL.max_steps and record.info["labels"] == sentiment_spec.label_names
    assert run["classifier"].info["n_train"] == 16, "include_labeled=False: D only"
    assert run["classifier"].info["stage"] == "distill" and run["baseline"].info["stage"] == "supervised"
    assert run["baseline"].info["n_train"] == 8
    evaluation = run["evaluation"]
    metrics = stages.read_json_output(evaluation, "metrics")
    assert metrics["n"] == 8 and 0.0 <= metrics["accuracy"] <= 1.0
    assert metrics["labels"] == sentiment_spec.label_names
    assert evaluation.info == {"accuracy": metrics["accuracy"], "macro_f1": metrics["macro_f1"]}
    predictions = read_table(evaluation.out("predictions").path)
    assert predictions.num_rows == 8 and set(predictions.column("label").to_pylist()) <= {"negative", "positive"}


def test_distill_key_follows_its_config(run, sentiment_spec, model_config):
    prepared = run["prepared"]
    again = stages.distill(run["store"], sentiment_spec, model_config, DISTILL, prepared.out("unlabeled"),
                           run["soft"].out("soft_labels"), prepared.out("labeled"), seed=3)
    assert again.cached
    key = run["store"].key("distill", {**again.config, "distill": DISTILL.model_copy(
        update={"max_steps": 5}).to_dict()}, again.inputs)
    assert key != again.key
    assert again.inputs["labeled"] is None, "T only enters the key when include_labeled is set"


def test_distill_include_labeled_trains_on_t_and_d(run, sentiment_spec, model_config):
    prepared = run["prepared"]
    record = stages.distill(run["store"], sentiment_spec, model_config,
                            DISTILL.model_copy(update={"include_labeled": True, "max_steps": 1}),
                            prepared.out("unlabeled"), run["soft"].out("soft_labels"), prepared.out("labeled"), seed=3)
    assert record.info["n_train"] == 24 and record.inputs["labeled"] == prepared.out("labeled").sha256


def test_logits_metrics_per_model_and_ensemble(run, sentiment_spec):
    metrics = stages.logits_metrics(sentiment_spec, run["test_logits"], run["accuracies"],
                                    run["prepared"].out("test"), EnsembleConfig())
    assert sorted(metrics["models"]) == ["g0-p0-s1", "g0-p1-s1"]
    assert all(0.0 <= v <= 1.0 for v in metrics["models"].values())
    assert metrics["ensemble"]["n"] == 8 and 0.0 <= metrics["ensemble"]["accuracy"] <= 1.0


def test_read_json_output_verifies_the_hash(run, sentiment_spec, model_config, tmp_path):
    # a private copy of the evaluation, so the shared store stays intact
    store = ArtifactStore(tmp_path / "store")
    evaluation = stages.evaluate(store, sentiment_spec, model_config, run["classifier"].out("classifier"),
                                 run["prepared"].out("test"), 16)
    assert not evaluation.cached
    path = Path(evaluation.out("metrics").path)
    metrics = json.loads(path.read_text())
    write_json({**metrics, "accuracy": 1.0}, path)
    with pytest.raises(ArtifactError, match="does not match its record"):
        stages.read_json_output(evaluation, "metrics")
    # and the stage reruns instead of serving the tampered file
    rerun = stages.evaluate(store, sentiment_spec, model_config, run["classifier"].out("classifier"),
                            run["prepared"].out("test"), 16)
    assert not rerun.cached and stages.read_json_output(rerun, "metrics") == metrics


def test_stage_inputs_are_verified_before_use(run, sentiment_spec, model_config, tmp_path):
    """A stage given a reference whose file changed refuses to run on it."""
    labeled = run["prepared"].out("labeled")
    copy = tmp_path / "labeled.parquet"
    shutil.copy(labeled.path, copy)
    ref = Ref(str(copy), labeled.sha256)
    copy.write_bytes(copy.read_bytes()[:-20])
    with pytest.raises(ArtifactError, match=str(copy)):
        stages.supervised(ArtifactStore(tmp_path / "store"), sentiment_spec, model_config, DISTILL, ref)
    assert not any((tmp_path / "store" / "supervised").iterdir())
