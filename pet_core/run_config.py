"""The run config: task spec, data, backbone and one typed section per stage, loaded from YAML."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Self

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from pet_core.config import (
    AdaptConfig, DistillConfig, EnsembleConfig, IpetConfig, ModelConfig, ScoreConfig, StageConfig, TrainConfig,
    WordsConfig,
)
from pet_core.data import DataSource
from pet_core.kinds.registry import DEFAULT_KIND, KindConfig, get_kind
from pet_core.sources import SourceError, locate
from pet_core.spec import TaskSpec, has_demos, has_soft_slots, load_yaml_mapping


class OverrideError(ValueError):
    """A ``--set`` override (dotted key) that cannot apply; the message names the key."""


class DataConfig(StageConfig):
    """Where T, D and the test set come from and how T and D are drawn from the pool."""

    pool: DataSource = Field(description="Labelled pool from which T and D are sampled.")
    test: DataSource | None = Field(default=None, description="Labelled test set, never used for training.")
    unlabeled: DataSource | None = Field(default=None, description="Extra unlabelled text added to D.")
    n_labeled: int = Field(default=10, ge=0, description="|T|: total (stratified) or per label.")
    per_label: bool = Field(default=False, description="n_labeled is per label, not in total.")
    min_per_label: int = Field(default=0, ge=0, description="With a total n_labeled: at least this many examples "
                               "of every label (all it has, if fewer), the rest stratified; 0 = plain stratified.")
    n_unlabeled: int | None = Field(default=None, ge=0, description="|D| drawn from the pool; None = the rest.")
    n_test: int | None = Field(default=None, ge=1, description="Use only the first n test rows.")
    holdout: int | None = Field(default=None, ge=1, description="Without a test source: hold out this many "
                                "pool rows (stratified, seeded) as the test set, before T and D are drawn.")
    seed: int = Field(default=42, description="Seed of the T/D draw.")


    @model_validator(mode="after")
    def _check_test(self) -> Self:
        if self.per_label and self.min_per_label:
            raise ValueError("data.min_per_label applies to a total n_labeled; with per_label: true every label "
                             "already gets n_labeled examples: remove one of them")
        if self.test is not None and self.holdout is not None:
            raise ValueError("data.holdout is only for runs without data.test; set one of them")
        return self


class PatternChoice(BaseModel):
    """A pattern and the kind of model trained on it; the kind's own options sit beside ``kind``.

    In YAML: ``{pattern: 1, kind: cloze}``. The kind is looked up in the kind registry (plug-ins
    included), so a static union could not list them; validation dispatches on ``kind`` instead.
    """

    model_config = ConfigDict(extra="allow", frozen=True)

    pattern: int = Field(ge=0, description="Pattern id in the task spec.")
    kind: str = Field(default=DEFAULT_KIND, description="Pattern-model kind (pet_core.kinds); 'cloze' is PET's.")

    @model_validator(mode="after")
    def _check_kind(self) -> Self:
        self.kind_config()
        return self

    def kind_config(self) -> KindConfig:
        """The kind's validated section (ValueError names the kind and the bad option)."""
        entry = get_kind(self.kind)
        try:
            return entry.config(dict(self.model_extra or {}))
        except ValidationError as err:
            problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'kind'}: {e['msg']}" for e in err.errors())
            raise ValueError(f"pattern {self.pattern}, kind {self.kind!r}: {problems}") from None


class RunConfig(StageConfig):
    """A whole PET/iPET run. Relative paths written in the YAML are resolved against its folder; ``--set`` paths
    and the defaults of ``store`` / ``runs_dir`` (``.petflow/`` in the working directory) against the working
    directory."""

    name: str = Field(default="petflow", pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    task: str | TaskSpec = Field(description="Path to a task spec YAML, or the spec inline.")
    data: DataConfig
    model: ModelConfig
    patterns: list[int | PatternChoice] | None = Field(
        default=None, description="Patterns to use (ids, or {pattern: id, kind: ...} to pick the pattern-model "
        "kind); None = all, as PET's cloze kind.")
    seeds: list[int] = Field(default=[1, 2, 3], min_length=1, description="One model per pattern and seed.")
    adapt: AdaptConfig | None = Field(default=None, description="Adapt the backbone (MLM) on D first.")
    words: WordsConfig | None = Field(default=None, description="Search label words on T first (LM-BFF); the "
                                      "searched patterns train with the best pairing found. `words: {}` = defaults.")
    train: TrainConfig = TrainConfig()
    score: ScoreConfig = ScoreConfig()
    ensemble: EnsembleConfig = EnsembleConfig()
    ipet: IpetConfig | None = Field(default=None, description="Set to run iPET generations after PET.")
    distill: DistillConfig = DistillConfig()
    baseline: bool = Field(default=True, description="Also train the supervised baseline (the same classifier on "
                           "T's gold labels only, with the distill section's settings) and report it beside PET.")
    store: str = Field(default=".petflow/store", description="Content-addressed artifact store.")
    runs_dir: str = Field(default=".petflow/runs", description="Per-run readable indexes and reports.")

    @field_validator("patterns", mode="before")
    @classmethod
    def _pattern_choices(cls, value: Any) -> Any:
        """Mappings become PatternChoice here, so that a bad kind is one message, not one per union member."""
        if not isinstance(value, list):
            return value
        choices = []
        for i, item in enumerate(value):
            if isinstance(item, dict):
                try:
                    item = PatternChoice.model_validate(item)
                except ValidationError as err:
                    problems = "; ".join(
                        ".".join(map(str, e["loc"])) + ": " * bool(e["loc"]) + e["msg"].removeprefix("Value error, ")
                        for e in err.errors())
                    raise ValueError(f"patterns[{i}]: {problems}") from None
            choices.append(item)
        return choices

    @model_validator(mode="after")
    def _check_seeds(self) -> Self:
        if len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"seeds must be distinct, got {self.seeds}")
        ids = [p if isinstance(p, int) else p.pattern for p in self.patterns or []]
        if len(set(ids)) != len(ids):
            raise ValueError(f"patterns must be distinct, got ids {ids}")
        return self

    def task_spec(self) -> TaskSpec:
        """The validated task spec."""
        spec = self.task if isinstance(self.task, TaskSpec) else TaskSpec.from_yaml(self.task)
        if self.patterns is not None:
            bad = [p for p in self.pattern_ids() if not 0 <= p < len(spec.patterns)]
            if bad:
                raise ValueError(f"patterns {bad} do not exist; task {spec.name!r} has {len(spec.patterns)}")
        return spec

    def pattern_ids(self) -> list[int]:
        """The pattern ids this run trains."""
        if self.patterns is None:
            return list(range(len(self.task_spec().patterns)))
        return [p if isinstance(p, int) else p.pattern for p in self.patterns]

    def demo_patterns(self) -> list[int]:
        """The run's patterns whose template has ``{demos}`` (LM-BFF demonstrations drawn from T)."""
        spec = self.task_spec()
        return [p for p in self.pattern_ids() if has_demos(spec.patterns[p].template)]

    def word_search_patterns(self) -> list[int]:
        """The patterns whose label words the words stage searches: the run's patterns marked ``words: auto`` in
        the task spec, plus those of a ``words:`` section (its ``patterns``, else every cloze template)."""
        spec = self.task_spec()
        run_patterns = self.pattern_ids()
        auto = [p for p in spec.auto_words() if p in run_patterns]
        if self.words is None:
            return auto
        if self.words.patterns is not None:
            return sorted({*self.words.patterns, *auto})
        return [p for p in run_patterns if not has_soft_slots(spec.patterns[p].template)]

    def word_settings(self) -> WordsConfig:
        """The words stage's settings: the ``words:`` section, or its defaults for ``words: auto`` patterns."""
        return self.words or WordsConfig()

    def kind_for(self, pattern: int) -> KindConfig:
        """The kind section of the model trained on ``pattern`` (PET's cloze kind unless chosen)."""
        for choice in self.patterns or []:
            if isinstance(choice, PatternChoice) and choice.pattern == pattern:
                return choice.kind_config()
        return get_kind(DEFAULT_KIND).config()

    def with_updates(self, updates: dict[str, Any]) -> RunConfig:
        """A copy with dotted-key overrides applied, e.g. {'train.max_steps': 10}.

        Raises OverrideError (one line naming the ``--set`` key) when a key goes through a value that is not
        a section or the result does not validate.
        """
        data = self.to_dict()
        for dotted, value in updates.items():
            node = data
            *parents, leaf = dotted.split(".")
            for depth, part in enumerate(parents):
                if node.get(part) is None:
                    node[part] = {}
                node = node[part]
                if not isinstance(node, dict):
                    section = ".".join(parents[: depth + 1])
                    raise OverrideError(f"--set {dotted}: {section} is not a section (it holds {_shown(node)}); "
                                        f"set it as a whole: --set {section}=VALUE")
            node[leaf] = value
        try:
            return RunConfig.model_validate(data)
        except ValidationError as err:
            raise OverrideError(_blame_overrides(err, updates)) from err

    def digest(self) -> str:
        """Short hash of what the run computes (names run directories): every section except where the store
        and the run folders live, so moving the store does not rename the run."""
        return hashlib.sha256(self.model_dump_json(exclude={"store", "runs_dir"}).encode()).hexdigest()[:10]

    @classmethod
    def from_yaml(cls, path: str | Path, overrides: dict[str, Any] | None = None) -> RunConfig:
        """Load a run config, resolving relative file paths against the YAML's folder."""
        path = Path(path)
        raw = load_yaml_mapping(path, "run config", "name:, task:, data:, model:")
        base = path.resolve().parent
        _resolve_paths(raw, base)
        config = cls.model_validate(raw)
        return config.with_updates(overrides) if overrides else config


def _local(value: str, base: Path) -> str:
    """A path written relative to the config's folder made absolute; anything else as written."""
    try:
        where = locate(value, base)
    except SourceError:
        return value  # a missing package: validation names it
    return str(where.path.resolve()) if where.relative else value


def _resolve_paths(raw: dict[str, Any], base: Path) -> None:
    """Make relative paths absolute in place; sections of the wrong type are left to validation."""
    if isinstance(raw.get("task"), str):
        raw["task"] = _local(raw["task"], base)
    data = raw.get("data")
    for key in ("pool", "test", "unlabeled") if isinstance(data, dict) else ():
        source = data.get(key)
        if isinstance(source, dict) and isinstance(source.get("path"), str):
            source["path"] = _local(source["path"], base)
        elif isinstance(source, str):
            data[key] = {"path": _local(source, base)}
    model = raw.get("model")
    if isinstance(model, dict) and isinstance(model.get("backbone"), str):
        model["backbone"] = _local(model["backbone"], base)
    for key in ("store", "runs_dir"):  # folders petflow writes: relative means under the config's folder
        folder = raw.get(key)
        if isinstance(folder, str) and "://" not in folder and not folder.startswith(("/", "~")):
            raw[key] = str((base / folder).resolve())


def _shown(value: Any) -> str:
    """A value as the user would write it after ``--set key=`` (YAML/JSON flow style)."""
    return value if isinstance(value, str) else json.dumps(value, default=str)


def _blame_overrides(err: ValidationError, updates: dict[str, Any]) -> str:
    """Pydantic errors after overrides, each blamed on the ``--set`` key whose path it concerns."""
    parts = []
    for error in err.errors():
        loc = [str(x) for x in error["loc"]]
        msg = error["msg"].removeprefix("Value error, ")
        keys = [k for k in updates if loc and (loc[: len(k.split("."))] == k.split(".")
                                                or k.split(".")[: len(loc)] == loc)] or list(updates)
        where = ".".join(loc)
        blamed = ", ".join(f"--set {k}={_shown(updates[k])}" for k in keys)
        parts.append(f"{blamed}: {where + ': ' if where and where not in keys else ''}{msg}")
    return "; ".join(parts)
