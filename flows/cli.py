"""The petflow command line: run, validate, words, predict, serve (cron) and a local Prefect server.

Every default lives in the pydantic configs (pet_core.config / pet_core.run_config); options here that
are left out leave the config's value alone.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from pathlib import Path
from typing import Annotated, Any

# Before Prefect reads its settings: no telemetry from this process unless the user asked for it, and
# model loading quiet (Prefect logs carry the progress).
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
# A fresh ephemeral database takes 10-20 s to migrate on a small or busy machine; Prefect's default
# startup timeout (20 s) made first runs fail there.
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import typer
import yaml
from rich.console import Console
from rich.table import Table

app = typer.Typer(help="Semi-supervised PET/iPET text classification as Prefect pipelines.",
                  no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)
console = Console()
errors = Console(stderr=True)

ConfigArg = Annotated[Path, typer.Argument(help="Run config YAML.", exists=False)]
SetOpt = Annotated[list[str] | None, typer.Option(
    "--set", help="Override a config value: dotted.key=value (value parsed as YAML), repeatable.")]


def fail(message: str, code: int = 2) -> None:
    """Print a one-line error and exit non-zero."""
    errors.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def parse_overrides(pairs: list[str] | None) -> dict[str, Any]:
    """``["train.max_steps=10", "seeds=[1,2]"]`` -> {"train.max_steps": 10, "seeds": [1, 2]}."""
    overrides = {}
    for pair in pairs or []:
        key, sep, raw = pair.partition("=")
        if not sep or not key.strip():
            fail(f"--set expects dotted.key=value, got {pair!r}")
        try:
            overrides[key.strip()] = yaml.safe_load(raw)
        except yaml.YAMLError as err:
            from pet_core.spec import yaml_problem

            fail(f"--set {pair}: the value is not valid YAML {yaml_problem(err).replace('at line 1, ', 'at ')}; "
                 "fix it (close brackets and quotes) or quote the whole value to pass it as text")
    return overrides


def checked_config(path: Path, overrides: dict[str, Any], show: bool):
    """Load the config and run the pre-training checks; exit with a one-line error when any fails."""
    from tasks.validate import InvalidRun, check_run, load_config

    try:
        config = load_config(path, overrides or None)
    except InvalidRun as err:
        fail(str(err))
    checks = check_run(config)
    if show:
        table = Table("", "detail", title=f"petflow validate {path}", title_justify="left", show_header=False)
        for check in checks:
            kind = "[red]error[/]" if not check.ok else "[yellow]warning[/]" if check.name == "warning" else check.name
            table.add_row(kind, check.detail)
        console.print(table)
    else:  # petflow run skips the flow's validate task (see flows.pipeline): its warnings are shown here
        for check in checks:
            if check.name == "warning" and check.ok:
                errors.print(f"[bold yellow]warning:[/] {check.detail}", highlight=False, soft_wrap=True)
    failed = [" ".join(c.detail.split()) for c in checks if not c.ok]
    if failed:
        fail("invalid run config: " + "; ".join(failed))
    return config


@app.command()
def validate(config: ConfigArg, set_: SetOpt = None) -> None:
    """Check a run config without training: spec, data, T/D draw, backbone and verbalizer tokens."""
    checked_config(config, parse_overrides(set_), show=True)
    console.print("[green]valid[/]: ready to run")


@app.command()
def run(config: ConfigArg, set_: SetOpt = None,
        workers: Annotated[int | None, typer.Option(
            help="Concurrent model stages (threads); default $PETFLOW_WORKERS or 1. Raise it on GPUs.")] = None,
        debug: Annotated[bool, typer.Option(
            "--debug", help="Print the tracebacks of failed task and flow runs here too (they are always in "
            "the run's logs in the UI).")] = False,
        ) -> None:
    """Run the whole pipeline: validate, prepare, adapt (if configured), PET, iPET (if configured), distill, evaluate."""
    if workers is not None and workers < 1:
        fail(f"--workers must be ≥ 1 (got {workers}); leave it out for 1")
    overrides = parse_overrides(set_)
    server = start_ephemeral_server()
    checked_config(config, overrides, show=False)
    # Imported while the server starts (it runs in a subprocess) rather than after it. Model code (torch
    # models, transformers' model classes) is imported only by a stage that is not in the store.
    from flows.pipeline import pipeline
    from tasks.validate import describe_error

    if not debug:
        from flows.logs import console_without_tracebacks

        console_without_tracebacks()  # after the import above: it is what sets up Prefect's logging
    if server is not None:
        server.join()
    if workers is not None:
        from flows.pet import WORKERS_ENV

        os.environ[WORKERS_ENV] = str(workers)

    try:
        result = pipeline(str(config), overrides or None, checked=True)
    except Exception as err:  # noqa: BLE001 - the flow run's log has the traceback
        fail(f"run failed: {describe_error(err)}", code=1)
    from flows.summary import print_summary

    print_summary(result, console, errors)


@app.command()
def words(config: ConfigArg, set_: SetOpt = None,
          top: Annotated[int, typer.Option(help="Candidate words shown per label.")] = 10) -> None:
    """LM-BFF label-word search on T: per pattern, each label's candidates and the pairings ranked by
    cross-validated accuracy. Uses the config's `words:` section (its defaults if it has none); the result is
    stored, so a run with the same section takes it."""
    from pet_core.config import WordsConfig
    from flows.summary import word_tables
    from pet_core.label_search import SearchResult
    from pet_core.pipeline import search_words
    from tasks.validate import describe_error

    run_config = checked_config(config, parse_overrides(set_), show=False)
    if not run_config.word_search_patterns():  # neither words: nor words: auto: the defaults on every pattern
        run_config = run_config.model_copy(update={"words": WordsConfig()})
    try:
        found = search_words(run_config)
    except Exception as err:  # noqa: BLE001 - one line, as every other command
        fail(f"label search failed: {describe_error(err)}", code=1)
    for pattern, data in found.items():
        template = run_config.task_spec().patterns[int(pattern)].template
        for printable in word_tables(pattern, template, SearchResult.from_dict(data), top):
            console.print(printable, highlight=False, soft_wrap=True)


def start_ephemeral_server() -> threading.Thread | None:
    """Start Prefect's ephemeral API server in the background (ephemeral mode only).

    Its start (~6 s with an existing database) then overlaps the imports and the config checks instead of
    following them; the flow call reuses the same server (Prefect keeps one per process). Join the thread
    before the first flow call.
    """
    from prefect.settings import PREFECT_API_URL, PREFECT_SERVER_EPHEMERAL_ENABLED

    if PREFECT_API_URL.value() or not PREFECT_SERVER_EPHEMERAL_ENABLED.value():
        return None

    def start() -> None:
        from prefect.server.api.server import SubprocessASGIServer

        try:
            SubprocessASGIServer().start()
        except Exception as err:  # noqa: BLE001 - the flow call starts it again and reports the error
            logging.getLogger("petflow.cli").debug("early ephemeral server start failed: %s", err)

    thread = threading.Thread(target=start, name="prefect-ephemeral-start", daemon=True)
    thread.start()
    return thread


@app.command()
def predict(model_dir: Annotated[Path, typer.Argument(help="A distilled classifier directory.")],
            input: Annotated[Path, typer.Argument(help="CSV, TSV, JSONL or Parquet file.")],
            out: Annotated[Path, typer.Option("--out", help="Predictions Parquet to write.")],
            task: Annotated[Path | None, typer.Option(
                "--task", help="Task spec mapping the input's columns; without it the input needs a column "
                "`a` (or `text`), optionally `b` and `example_id`.")] = None,
            device: Annotated[str | None, typer.Option(help="Override ModelConfig.device.")] = None,
            ) -> None:
    """Predict labels with a distilled classifier; writes example_id, logits, label (Parquet, atomic)."""
    from tasks.predict import predict_file
    from tasks.validate import describe_error

    try:
        summary = predict_file(model_dir, input, out, task, {"device": device} if device else None)
    except (ValueError, FileNotFoundError) as err:  # a wrong folder, file, spec or label set: the user's to fix
        fail(describe_error(err))
    except Exception as err:  # noqa: BLE001 - any other failure becomes one line too
        fail(describe_error(err), code=1)
    line = f"wrote {summary['rows']} predictions to {out} ({summary['labels']})"
    if summary.get("accuracy") is not None:
        line += f"; accuracy against the input's labels {summary['accuracy']:.4f}"
    console.print(line, highlight=False, soft_wrap=True)
    if summary.get("skipped"):
        row, value = summary["first_skipped"]
        errors.print(f"[bold yellow]warning:[/] {summary['skipped']} row(s) of {input} have a label outside the task "
                     f"spec or none (first: row {row}, {value!r}); they were predicted but left out of the accuracy",
                     highlight=False, soft_wrap=True)


def build_deployment(config: Path, cron: str, overrides: dict[str, Any] | None = None, name: str | None = None,
                     timezone: str | None = None):
    """A deployment of the pipeline for ``config`` on a cron schedule (served by ``petflow serve``)."""
    from prefect.schedules import Cron

    from flows.pipeline import pipeline
    from tasks.validate import load_config

    run_config = load_config(config, overrides)
    schedule = Cron(cron, timezone=timezone) if timezone else Cron(cron)
    return pipeline.to_deployment(name=name or run_config.name, schedule=schedule, tags=["petflow"],
                                  parameters={"config_path": str(config.resolve()), "overrides": overrides or None})


@app.command()
def serve(config: ConfigArg, cron: Annotated[str, typer.Option(help='Cron schedule, e.g. "0 2 * * *".')],
          set_: SetOpt = None, name: Annotated[str | None, typer.Option(help="Deployment name (default: the config's name).")] = None,
          timezone: Annotated[str | None, typer.Option(help="IANA timezone of the cron (default UTC).")] = None,
          ) -> None:
    """Serve the pipeline for CONFIG on a cron schedule (long-running; stop with Ctrl-C / SIGTERM)."""
    from prefect import serve as prefect_serve

    overrides = parse_overrides(set_)
    checked_config(config, overrides, show=False)
    prefect_serve(build_deployment(config, cron, overrides, name, timezone))


@app.command()
def server(port: Annotated[int, typer.Option(help="Port of the API and UI.")] = 4200,
           host: Annotated[str, typer.Option(help="Interface to bind; 127.0.0.1 keeps it local.")] = "127.0.0.1",
           ) -> None:
    """Start a Prefect server (UI + API) bound to HOST:PORT; runs keep their history in $PREFECT_HOME."""
    warning = exposure_warning(host)
    if warning:
        errors.print(f"[bold yellow]warning:[/] {warning}", highlight=False, soft_wrap=True)
    env = {**os.environ, "PREFECT_SERVER_API_HOST": host, "PREFECT_SERVER_API_PORT": str(port)}
    console.print(f"Prefect UI on http://{host}:{port}  -  point runs at it with "
                  f"[bold]export PREFECT_API_URL=http://{host}:{port}/api[/]", highlight=False)
    os.execvpe(sys.executable, [sys.executable, "-m", "prefect", "server", "start"], env)


def exposure_warning(host: str) -> str | None:
    """A warning when HOST is not a loopback address: Prefect's open-source API has no authentication."""
    import ipaddress

    if host.strip().lower() == "localhost":
        return None
    try:
        if ipaddress.ip_address(host.strip("[]")).is_loopback:
            return None
    except ValueError:
        pass  # a host name: it may resolve to any interface
    return (f"--host {host} serves the API and UI beyond this machine without authentication: anyone who "
            "reaches it can read runs and their parameters and start or cancel flows; keep 127.0.0.1 or put "
            "an authenticating proxy in front")


if __name__ == "__main__":
    app()
