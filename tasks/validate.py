"""The checks that run before any training: `petflow validate` and the first task of every pipeline run.

The checks themselves are ``pet_core.validate`` (spec, data, T/D draw, holdout, test set apart from the pool,
iPET model count, backbone and MLM head, verbalizer words as single tokens); this module adds the config
loading with one-line errors and the Prefect task.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE
from pydantic import ValidationError

from pet_core.run_config import OverrideError, RunConfig
from pet_core.spec import YamlFileError
from pet_core.validate import validate as core_validate
from tasks.common import logger


class InvalidRun(ValueError):
    """The run config cannot work; the message names every problem found."""


@dataclass
class Check:
    """One line of a validation report: an error (``ok`` False), a warning, or a fact about the run."""

    name: str
    ok: bool
    detail: str


def describe_error(err: Exception) -> str:
    """A one-line description of a config or data error (pydantic errors by field path)."""
    if isinstance(err, ValidationError):
        parts = []
        for e in err.errors():
            where = ".".join(str(x) for x in e["loc"])
            msg = e["msg"].removeprefix("Value error, ")
            parts.append(f"{where}: {msg}" if where else msg)
        return f"{err.title}: " + "; ".join(parts)
    return " ".join(str(err).split()) or type(err).__name__


def load_config(path: str | Path, overrides: dict[str, Any] | None = None) -> RunConfig:
    """``RunConfig.from_yaml`` with errors turned into one-line ``InvalidRun`` messages."""
    try:
        return RunConfig.from_yaml(path, overrides)
    except (OverrideError, YamlFileError) as err:  # already one line naming the file or the --set key
        raise InvalidRun(describe_error(err)) from err
    except (ValidationError, FileNotFoundError, ValueError) as err:
        message = describe_error(err)
        if not message.startswith(f"run config {path}"):
            message = f"run config {path}: {message}"
        raise InvalidRun(message) from err


def check_run(config: RunConfig) -> list[Check]:
    """``pet_core.validate`` as check lines: errors, warnings, then facts about the run."""
    report = core_validate(config)
    checks = [Check("error", False, one_line(e)) for e in report.errors]
    checks += [Check("warning", True, one_line(w)) for w in report.warnings]
    if report.ok:
        spec = config.task_spec()
        models = len(config.pattern_ids()) * len(config.seeds)
        checks.append(Check("task", True, f"{spec.name}: labels {spec.label_names}, patterns {config.pattern_ids()}"))
        checks.append(Check("models", True, f"{models} per generation ({len(config.pattern_ids())} patterns × "
                            f"{len(config.seeds)} seeds)" + (", then iPET" if config.ipet else "")
                            + (", after adapting the backbone" if config.adapt else "")))
    checks += [Check(k, True, describe_fact(v)) for k, v in report.facts.items()]
    return checks


def one_line(message: str) -> str:
    """A validation message on one line, without pydantic's type/input/URL trailers."""
    message = re.sub(r"\s*\[type=[^\]]*\]", "", message)
    message = re.sub(r"\s*For further information visit \S+", "", message)
    return " ".join(message.split())


def describe_fact(value: Any) -> str:
    """A fact of the validation report as one short line."""
    if isinstance(value, dict):
        return ", ".join(f"{k}: {v}" for k, v in value.items())
    return str(value)


@task(name="validate", cache_policy=NO_CACHE)
def validate(config: RunConfig) -> list[dict[str, Any]]:
    """The same checks as ``petflow validate``; raises ``InvalidRun`` naming every failed check."""
    checks = check_run(config)
    for check in checks:
        level = "error" if not check.ok else "warning" if check.name == "warning" else "info"
        getattr(logger(), level)("%s: %s", check.name, check.detail)
    failed = [c for c in checks if not c.ok]
    if failed:
        raise InvalidRun("; ".join(c.detail for c in failed))
    return [asdict(c) for c in checks]
