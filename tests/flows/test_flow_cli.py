"""The petflow CLI: validate, run's fail-fast path, predict, and serve's deployment."""

from __future__ import annotations

import os
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml
from _run_support import drop_mlm_head
from typer.testing import CliRunner

from flows import cli
from flows.cli import app, build_deployment, parse_overrides

runner = CliRunner()


def output(result) -> str:
    return " ".join((result.stdout + result.stderr).split())


def test_validate_accepts_the_tiny_config(tmp_path, make_config):
    result = runner.invoke(app, ["validate", str(make_config(tmp_path, "tiny-ok"))])
    assert result.exit_code == 0, output(result)
    assert "valid" in result.stdout and "FAIL" not in result.stdout


def test_validate_names_a_pattern_without_mask(tmp_path, make_config, topic_data):
    spec = yaml.safe_load((topic_data / "task.yaml").read_text())
    spec["patterns"][1] = "{a} {b}"
    (tmp_path / "broken.yaml").write_text(yaml.safe_dump(spec))
    config = make_config(tmp_path, "tiny-broken", task=str(tmp_path / "broken.yaml"))
    for command in ("validate", "run"):  # run fails the same way, before any Prefect run starts
        result = runner.invoke(app, [command, str(config)])
        assert result.exit_code != 0
        text = output(result)
        assert "patterns.1.template" in text and "needs exactly one {mask}" in text, text


def test_validate_rejects_a_test_set_equal_to_the_pool(tmp_path, make_config, topic_data):
    pool = str(topic_data / "pool.csv")
    config = make_config(tmp_path, "tiny-leak", data={"pool": pool, "test": pool, "n_labeled": 6})
    result = runner.invoke(app, ["validate", str(config)])
    assert result.exit_code != 0 and "is the pool itself" in output(result)


def test_validate_requires_an_mlm_head_or_adapt(tmp_path, make_config, tiny_mlm_dir):
    headless = drop_mlm_head(tiny_mlm_dir, tmp_path / "headless")
    model = {"backbone": str(headless), "max_seq_length": 64, "device": "cpu"}
    result = runner.invoke(app, ["validate", str(make_config(tmp_path, "tiny-headless", model=model))])
    assert result.exit_code != 0 and "MLM head" in output(result)
    adapted = make_config(tmp_path, "tiny-headless-adapt", model=model, adapt={"max_steps": 2})
    assert runner.invoke(app, ["validate", str(adapted)]).exit_code == 0


def test_predict_writes_parquet(tmp_path, pet_run, topic_data):
    classifier = Path(pet_run[1]["run_dir"]) / "links" / "classifier"
    out = tmp_path / "preds.parquet"
    result = runner.invoke(app, ["predict", str(classifier), str(topic_data / "test.csv"), "--out", str(out),
                                 "--task", str(topic_data / "task.yaml")])
    assert result.exit_code == 0, output(result)
    table = pq.read_table(out)
    assert table.num_rows == 9 and table.column_names == ["example_id", "logits", "label"]
    assert set(table.column("label").to_pylist()) <= {"World", "Sports", "Business"}
    assert "accuracy" in result.stdout

    plain = tmp_path / "plain.jsonl"
    plain.write_text('{"text": "Team wins the cup final"}\n{"text": "Bank cuts interest rates"}\n')
    result = runner.invoke(app, ["predict", str(classifier), str(plain), "--out", str(tmp_path / "p2.parquet")])
    assert result.exit_code == 0, output(result)
    assert pq.read_table(tmp_path / "p2.parquet").column("example_id").to_pylist() == ["r0", "r1"]


def test_overrides_are_parsed_as_yaml():
    assert parse_overrides(["train.max_steps=10", "seeds=[1, 2]", "data.test=null", "name=x=y"]) == {
        "train.max_steps": 10, "seeds": [1, 2], "data.test": None, "name": "x=y"}


def test_serve_builds_a_cron_deployment(tmp_path, make_config, monkeypatch):
    config = make_config(tmp_path, "tiny-cron")
    deployment = build_deployment(config, "0 2 * * *", {"train.max_steps": 2})
    assert deployment.schedules[0].schedule.cron == "0 2 * * *"
    assert deployment.parameters == {"config_path": str(config.resolve()), "overrides": {"train.max_steps": 2}}
    assert deployment.name == "tiny-cron"

    import prefect

    served = []
    monkeypatch.setattr(prefect, "serve", lambda *deployments, **kw: served.extend(deployments))
    result = runner.invoke(app, ["serve", str(config), "--cron", "*/5 * * * *", "--name", "every-5"])
    assert result.exit_code == 0, output(result)
    assert served[0].name == "every-5" and served[0].schedules[0].schedule.cron == "*/5 * * * *"


def test_cli_turns_prefect_telemetry_off_by_default():
    assert cli.os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] in ("false", os.environ.get(
        "PREFECT_SERVER_ANALYTICS_ENABLED"))


@pytest.mark.slow
@pytest.mark.skipif(os.environ.get("PETFLOW_SLOW") != "1", reason="set PETFLOW_SLOW=1 (starts a server, waits for cron)")
def test_served_cron_deployment_runs(tmp_path, make_config):
    from _flow_support import serve_and_wait_for_scheduled_run

    config = make_config(tmp_path, "tiny-served")
    run = serve_and_wait_for_scheduled_run(config, tmp_path, timeout_s=150)
    assert run["state_type"] == "COMPLETED", run
    assert list((tmp_path / "runs").glob("tiny-served-*/metrics.json"))


@pytest.mark.parametrize("host,exposed", [("127.0.0.1", False), ("localhost", False), ("::1", False),
                                          ("127.0.0.2", False), ("0.0.0.0", True), ("::", True),
                                          ("10.1.2.3", True), ("ci-runner.internal", True)])
def test_server_warns_when_it_binds_beyond_loopback(host, exposed, monkeypatch):
    started = []
    monkeypatch.setattr(cli.os, "execvpe", lambda exe, args, env: started.append(env))  # do not start a server
    result = runner.invoke(app, ["server", "--host", host, "--port", "4321"])
    assert result.exit_code == 0, output(result)
    assert started and started[0]["PREFECT_SERVER_API_HOST"] == host
    assert ("without authentication" in output(result)) is exposed


def test_run_console_logs_leave_tracebacks_to_the_ui(monkeypatch):
    """A failed stage is one console line per event; the record keeps its traceback for the API log handler."""
    import io
    import logging

    from prefect.logging.handlers import PrefectConsoleHandler

    from flows.logs import console_without_tracebacks

    stream = io.StringIO()
    console = PrefectConsoleHandler(stream=stream)
    console.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    kept: list[logging.LogRecord] = []
    api_like = logging.Handler()
    api_like.emit = kept.append
    logger = logging.getLogger("prefect.task_runs.petflow-test")
    monkeypatch.setattr(logger, "handlers", [console, api_like])
    monkeypatch.setattr(logger, "propagate", False)
    console_without_tracebacks()
    console_without_tracebacks()  # idempotent
    try:
        raise ValueError("train g0-p0-s5 step 1: loss is nan")
    except ValueError:
        logger.exception("Task run failed with exception")
    printed = stream.getvalue()
    assert "Task run failed with exception" in printed and "Traceback" not in printed
    assert kept and kept[0].exc_info is not None, "the UI's handler must still get the traceback"
