"""Task specs as data: labels, text fields, patterns and verbalizers, loaded from YAML.

A new task needs a YAML file, not code. A pattern id is an index into ``TaskSpec.patterns``.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

PLACEHOLDER = re.compile(r"\{([^{}]*)\}")
TEXT_SLOTS = ("a", "b")
SOFT_SLOT = re.compile(r"soft(?::(\d+))?")  # {soft} or {soft:N}: N learned prompt tokens (kinds that fill them)
MAX_SOFT_TOKENS = 64
DEMOS_SLOT = "demos"  # {demos}: one labelled example per label, the pattern filled with its label word (LM-BFF)


def soft_slot_size(slot: str) -> int | None:
    """Tokens of a ``{soft}`` / ``{soft:N}`` placeholder's content (None: not a soft slot)."""
    match = SOFT_SLOT.fullmatch(slot)
    if match is None:
        return None
    return int(match.group(1) or 1)


def has_demos(template: str) -> bool:
    """Whether a template holds the ``{demos}`` slot (demonstrations drawn from T)."""
    return DEMOS_SLOT in PLACEHOLDER.findall(template)


def has_soft_slots(template: str) -> bool:
    """Whether a template holds ``{soft}`` / ``{soft:N}`` slots (learned prompt tokens)."""
    return any(soft_slot_size(slot) is not None for slot in PLACEHOLDER.findall(template))


class LabelSpec(BaseModel):
    """One class: its name (used in every artifact), the raw values that map to it, its words."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, description="Label name as written in artifacts.")
    raw: list[str] = Field(default_factory=list, description="Raw values in the data mapping to this label.")
    words: list[str] = Field(min_length=1, description="Verbalizer words; several are averaged.")

    @field_validator("raw", mode="before")
    @classmethod
    def _raw_as_strings(cls, value: Any) -> list[str]:
        if value is None:
            return []
        if not isinstance(value, list):
            value = [value]
        return [str(v) for v in value]


class FieldsSpec(BaseModel):
    """Which input columns form text ``a`` and optional text ``b`` (several columns are joined)."""

    model_config = ConfigDict(extra="forbid")
    a: list[str] = Field(min_length=1)
    b: list[str] = Field(default_factory=list)
    label: str = Field(default="label", description="Input column holding the raw label.")
    id: str | None = Field(default=None, description="Input column with a stable example id, if any.")
    separator: str = " "

    @field_validator("a", "b", mode="before")
    @classmethod
    def _as_list(cls, value: Any) -> list[str]:
        if value is None:
            return []
        return [value] if isinstance(value, str) else list(value)


class PatternSpec(BaseModel):
    """A template such as ``'{a} All in all, it was {mask}.'`` with an optional own verbalizer.

    ``{soft}`` / ``{soft:N}`` mark learned prompt tokens; only kinds with learned prompts (ptuning,
    prompt_tuning) accept templates that hold them. ``{demos}`` marks where LM-BFF's demonstrations go: one
    example of T per label, written in the same pattern with the label's word in place of the mask."""

    model_config = ConfigDict(extra="forbid")
    template: str
    verbalizer: dict[str, list[str]] | None = Field(
        default=None, description="Label name -> words for this pattern only; else the labels' words."
    )
    words: Literal["auto"] | None = Field(
        default=None, description="'auto': the run's words stage searches this pattern's label words on T "
        "(LM-BFF), with the pattern's own verbalizer, if given, as seed words that lead the candidates.")

    @model_validator(mode="after")
    def _check_auto(self) -> PatternSpec:
        if self.words == "auto" and has_soft_slots(self.template):
            raise ValueError(f"pattern {self.template!r}: words: auto needs a plain cloze template; the label "
                             "search cannot read {soft} slots")
        return self

    @field_validator("template")
    @classmethod
    def _check_template(cls, template: str) -> str:
        slots = PLACEHOLDER.findall(template)
        unknown = sorted({s for s in slots
                          if s not in (*TEXT_SLOTS, "mask", DEMOS_SLOT) and soft_slot_size(s) is None})
        if unknown:
            raise ValueError(
                f"pattern {template!r}: unknown placeholder(s) {unknown}; use {{a}}, {{b}}, {{mask}}, {{demos}} "
                f"(demonstrations) and, for learned prompt tokens, {{soft}} or {{soft:N}}"
            )
        if slots.count(DEMOS_SLOT) > 1:
            raise ValueError(f"pattern {template!r}: at most one {{demos}} slot, found {slots.count(DEMOS_SLOT)}")
        sizes = [soft_slot_size(s) for s in slots if soft_slot_size(s) is not None]
        if any(not 1 <= n <= MAX_SOFT_TOKENS for n in sizes) or sum(sizes) > MAX_SOFT_TOKENS:
            raise ValueError(f"pattern {template!r}: {{soft:N}} slots need 1 <= N and at most {MAX_SOFT_TOKENS} "
                             f"soft tokens in all")
        if slots.count("mask") != 1:
            raise ValueError(f"pattern {template!r}: needs exactly one {{mask}}, found {slots.count('mask')}")
        if not any(s in TEXT_SLOTS for s in slots):
            raise ValueError(f"pattern {template!r}: uses no text ({{a}} or {{b}})")
        return template


class TaskSpec(BaseModel):
    """Everything PET needs to know about a task, and nothing about models or data files."""

    model_config = ConfigDict(extra="forbid")
    name: str
    labels: list[LabelSpec] = Field(min_length=2)
    fields: FieldsSpec
    patterns: list[PatternSpec] = Field(min_length=1)
    multi_token: bool = Field(default=False, description="Allow verbalizer words of several tokens.")

    @field_validator("patterns", mode="before")
    @classmethod
    def _patterns_from_strings(cls, value: Any) -> Any:
        if isinstance(value, list):
            return [{"template": v} if isinstance(v, str) else v for v in value]
        return value

    @model_validator(mode="after")
    def _check_consistency(self) -> TaskSpec:
        names = [label.name for label in self.labels]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"task {self.name!r}: duplicate label names {dupes}")
        seen: dict[str, str] = {}
        for label in self.labels:
            for raw in label.raw or [label.name]:
                if raw in seen:
                    raise ValueError(f"raw value {raw!r} maps to both {seen[raw]!r} and {label.name!r}")
                seen[raw] = label.name
        for pid, pattern in enumerate(self.patterns):
            if "{b}" in pattern.template and not self.fields.b:
                raise ValueError(f"pattern {pid} uses {{b}} but fields.b is empty")
            self._check_words(self.verbalizer(pid), f"pattern {pid}")
        return self

    def _check_words(self, words: dict[str, list[str]], where: str) -> None:
        names = self.label_names
        if sorted(words) != sorted(names):
            raise ValueError(f"{where}: verbalizer labels {sorted(words)} differ from task labels {sorted(names)}")
        owner: dict[str, str] = {}
        for label, label_words in words.items():
            if not label_words:
                raise ValueError(f"{where}: label {label!r} has no verbalizer words")
            for word in label_words:
                key = word.strip().lower()
                if key in owner and owner[key] != label:
                    raise ValueError(f"{where}: verbalizer word {word!r} is used by {owner[key]!r} and {label!r}")
                owner[key] = label

    @property
    def label_names(self) -> list[str]:
        """Label names in the spec's order: the order of every logits vector."""
        return [label.name for label in self.labels]

    def auto_words(self) -> list[int]:
        """Patterns whose label words are searched on T (``words: auto``) and not yet found."""
        return [pid for pid, pattern in enumerate(self.patterns) if pattern.words == "auto"]

    def verbalizer(self, pattern_id: int) -> dict[str, list[str]]:
        """Label name -> words for one pattern (its own verbalizer, else the labels' words)."""
        own = self.patterns[pattern_id].verbalizer
        return dict(own) if own is not None else {label.name: list(label.words) for label in self.labels}

    def raw_to_label(self) -> dict[str, str]:
        """Raw value (as string) -> label name; a label without ``raw`` maps its own name."""
        return {raw: label.name for label in self.labels for raw in (label.raw or [label.name])}

    @classmethod
    def from_yaml(cls, path: str | Path) -> TaskSpec:
        """Load and validate a task spec file."""
        path = Path(path)
        raw = load_yaml_mapping(path, "task spec", "name:, labels:, fields:, patterns:")
        try:
            return cls.model_validate(raw)
        except ValidationError as err:
            raise ValueError(f"task spec {path}: {err}") from err


class YamlFileError(ValueError):
    """A YAML file that is not a readable mapping; the message names the file (and line/column)."""


def yaml_problem(err: yaml.YAMLError) -> str:
    """``err`` on one line: where (1-based line/column) and what is wrong, without PyYAML's snippet."""
    problem = getattr(err, "problem", None) or str(err).splitlines()[0]
    mark = getattr(err, "problem_mark", None)
    where = f"at line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
    context, start = getattr(err, "context", None), getattr(err, "context_mark", None)
    if context and start is not None:
        problem += f" ({context} that starts at line {start.line + 1}, column {start.column + 1})"
    if "'\\t'" in problem:
        problem += "; indent with spaces, not tabs"
    return where + problem


def load_yaml_mapping(path: Path, what: str, keys: str) -> dict[str, Any]:
    """The top-level mapping of the YAML file ``path`` ({} when empty).

    Raises FileNotFoundError when it is missing and YamlFileError (one line naming ``what`` and the file)
    when it is a folder, not UTF-8, not YAML, or its top level is not a mapping (``keys`` shows the expected ones).
    """
    if path.is_dir():
        raise YamlFileError(f"{what} {path} is a folder, not a YAML file; pass the YAML file itself")
    if not path.is_file():
        raise FileNotFoundError(f"{what} {path} does not exist")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as err:
        raise YamlFileError(f"{what} {path}: not UTF-8 text (byte {err.start}); save it as UTF-8") from err
    except yaml.YAMLError as err:
        raise YamlFileError(f"{what} {path}: invalid YAML {yaml_problem(err)}") from err
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        kind = "a list" if isinstance(raw, list) else f"the single value {str(raw)[:40]!r}"
        raise YamlFileError(f"{what} {path}: the top level is {kind}, not a mapping; write `key: value` lines "
                            f"({keys} …)")
    return raw
