"""Checks before any training: the same function backs ``petflow validate`` and the start of a run.

Every problem is reported with the file/row/field it concerns and what to do; long texts are
counted (they get truncated), not errors.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pet_core.data import DataError, DataSource, load_examples, resolve_path
from pet_core.sampling import draw, hold_out, label_counts
from pet_core.run_config import RunConfig
from pet_core.spec import has_soft_slots


class ValidationError(ValueError):
    """The run config, task spec, data or backbone cannot work; ``report`` lists every problem."""

    def __init__(self, report: ValidationReport):
        super().__init__("; ".join(report.errors))
        self.report = report


@dataclass
class ValidationReport:
    """Errors (fatal), warnings and facts found while validating a run."""

    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    facts: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """True when nothing fatal was found."""
        return not self.errors

    def raise_for_errors(self) -> ValidationReport:
        """Raise ValidationError if there were errors; else return self."""
        if self.errors:
            raise ValidationError(self)
        return self


def _check_backbone(config: RunConfig, report: ValidationReport) -> Any:
    from transformers import AutoConfig, AutoTokenizer

    from pet_core.backbone import BackboneError, hub_problem, resolve_backbone

    given = Path(config.model.backbone).expanduser()
    if given.is_file():
        report.errors.append(f"model.backbone: {given} is a file, not a model folder; give the folder that holds "
                             "config.json, the weights and the tokenizer files")
        return None
    try:
        name = resolve_backbone(config.model.backbone)
    except (BackboneError, ValueError) as err:
        report.errors.append(f"model.backbone: {err}")
        return None
    problem = hub_problem(name)
    if problem:
        report.errors.append(f"model.backbone: {problem}")
        return None
    keys: set[str] | None = set()
    if Path(name).is_dir():
        keys = _check_model_files(Path(name), report, config.model.allow_pickle_weights)
        if keys is None:
            return None
    try:
        tokenizer = AutoTokenizer.from_pretrained(name, trust_remote_code=config.model.trust_remote_code)
        model_config = AutoConfig.from_pretrained(name, trust_remote_code=config.model.trust_remote_code)
    except (OSError, ValueError) as err:
        report.errors.append(f"model.backbone {name!r}: cannot load tokenizer/config ({err})")
        return None
    users = masked_lm_users(config)
    if tokenizer.mask_token_id is None and users:
        report.errors.append(f"model.backbone {name!r}: tokenizer has no mask token; PET needs a masked LM "
                             f"(for {', '.join(users)})")
    if config.adapt is None and users and keys and not any(
            k.startswith(("cls.", "lm_head.", "generator_lm_head", "vocab_", "lm_predictions")) for k in keys):
        report.errors.append(f"model.backbone {name!r} has no MLM head weights (a sentence encoder?): "
                             "its label scores would be noise; add an `adapt:` section to learn one")
    report.facts["backbone"] = {"name": name, "model_type": model_config.model_type}
    return tokenizer


def masked_lm_users(config: RunConfig) -> list[str]:
    """What in the run reads the backbone as a masked LM: patterns of masked-LM kinds (not e.g. 't5'), the
    words stage (it scores the mask) and the adapt stage (it trains an MLM head)."""
    from pet_core.kinds import get_kind

    users = []
    for pattern in config.pattern_ids():
        kind = config.kind_for(pattern).kind
        if get_kind(kind).model_class().masked_lm:
            users.append(f"pattern {pattern}, kind {kind!r}")
    users += [section for section in ("adapt", "words") if getattr(config, section) is not None]
    return users


def _check_model_files(folder: Path, report: ValidationReport, allow_pickle: bool = False) -> set[str] | None:
    """The tensor names of a local backbone's safetensors files; None (and an error) when files are missing,
    a safetensors file is damaged (its header is read, not its tensors) or only pickled weights are there and
    ``model.allow_pickle_weights`` is off."""
    from safetensors import SafetensorError, safe_open

    names = sorted(p.name for p in folder.iterdir())
    missing = [] if "config.json" in names else ["config.json"]
    if not any(n.endswith(".safetensors") or (n.startswith("pytorch_model") and n.endswith(".bin")) for n in names):
        missing.append("the weights, model.safetensors or pytorch_model.bin")
    if missing:
        held = f"it holds only {', '.join(names)}" if names else "it is empty"
        report.errors.append(f"model.backbone {str(folder)!r}: cannot load a model from this folder: it lacks "
                             f"{' and '.join(missing)} ({held}); copy the whole model folder or re-download it")
        return None
    if not allow_pickle and not any(n.endswith(".safetensors") for n in names):
        report.errors.append(f"model.backbone {str(folder)!r} has only pickled weights (.bin), which torch.load "
                             "would run as code: convert them to safetensors, or set model.allow_pickle_weights: "
                             "true if you trust where they came from")
        return None
    keys: set[str] = set()
    for file in sorted(folder.glob("*.safetensors")):
        try:
            with safe_open(str(file), "pt") as handle:
                keys.update(handle.keys())
        except (SafetensorError, OSError) as err:
            report.errors.append(f"model.backbone: {file} is damaged or truncated ({err}); re-download or re-copy it")
            return None
    return keys


def _check_run_settings(config: RunConfig, n_patterns: int, report: ValidationReport) -> None:
    """What a run would hit after the data: no pattern selected, a device that is absent, an unusable folder."""
    if config.patterns is not None and not config.patterns:
        report.errors.append(f"patterns: [] selects no pattern (the task has {n_patterns}, ids 0-{n_patterns - 1}); "
                             "list the ids to train or remove `patterns:` to use all")
    device = config.model.device
    if device not in ("auto", "cpu"):
        from pet_core.backbone import BackboneError
        from pet_core.modeling import resolve_device  # imports torch: only for an explicit accelerator

        try:
            resolve_device(device)
        except (BackboneError, RuntimeError) as err:
            report.errors.append(f"model.device: {' '.join(str(err).split())}; set model.device to auto "
                                 "(CUDA when present, else CPU) or cpu")
    for key in ("store", "runs_dir"):
        problem = _folder_problem(Path(getattr(config, key)).expanduser().absolute())
        if problem:
            report.errors.append(f"{key}: {problem}")


def _check_words(config: RunConfig, spec: Any, report: ValidationReport) -> None:
    """The words stage's patterns: patterns of this run, of masked-LM kinds, and cloze templates (no {soft} slots)."""
    from pet_core.kinds import get_kind

    if config.words is None or config.words.patterns is None:
        for pattern in config.word_search_patterns():
            kind = config.kind_for(pattern).kind
            if not get_kind(kind).model_class().masked_lm:
                report.errors.append(f"words: pattern {pattern} is kind {kind!r}, whose label words the search "
                                     "cannot score (it reads a masked LM's mask); list the cloze patterns in "
                                     "words.patterns, or drop words: auto from that pattern")
        if config.word_search_patterns():
            report.facts["words"] = f"searched on T for patterns {config.word_search_patterns()}"
        return
    run_patterns = config.pattern_ids()
    unknown = [p for p in config.words.patterns if p not in run_patterns]
    if unknown:
        report.errors.append(f"words.patterns: {unknown} are not patterns of this run "
                             f"({', '.join(map(str, run_patterns))}); list some of those or leave it out for all")
        return
    for pattern in config.words.patterns:
        kind = config.kind_for(pattern).kind
        if not get_kind(kind).model_class().masked_lm:
            report.errors.append(f"words.patterns: pattern {pattern} is kind {kind!r}, whose label words the search "
                                 "cannot score (it reads a masked LM's mask); leave it out of words.patterns")
        elif has_soft_slots(spec.patterns[pattern].template):
            report.errors.append(f"words.patterns: pattern {pattern} has {{soft}} slots, which the label search "
                                 "cannot read (it scores the plain masked LM); leave it out of words.patterns")
    report.facts["words"] = f"searched on T for patterns {config.word_search_patterns()}"


def _folder_problem(path: Path) -> str | None:
    """Why ``path`` cannot be used (or created) as a writable folder, or None."""
    existing = next(p for p in (path, *path.parents) if p.exists())
    if not existing.is_dir():
        where = "" if existing == path else f" (on the way to {path})"
        return f"{existing}{where} is a file, not a folder; point it at a folder (it is created if missing)"
    if not os.access(existing, os.W_OK | os.X_OK):
        return f"{existing} is not writable; point it at a folder you can write to"
    return None


def _same_source(a: DataSource, b: DataSource) -> bool:
    try:
        return resolve_path(a.path).resolve() == resolve_path(b.path).resolve() and a.split == b.split
    except (DataError, FileNotFoundError, ValueError):
        return False  # the loader reports the bad path


def validate(config: RunConfig, check_backbone: bool = True) -> ValidationReport:
    """Validate spec, data, sampling, verbalizers against the tokenizer, and the backbone."""
    report = ValidationReport()
    try:
        spec = config.task_spec()
    except (ValueError, FileNotFoundError) as err:
        report.errors.append(f"task: {err}")
        return report
    _check_run_settings(config, len(spec.patterns), report)
    _check_words(config, spec, report)
    tables = {}
    for role in ("pool", "test", "unlabeled"):
        source = getattr(config.data, role)
        if source is None:
            continue
        try:
            tables[role] = load_examples(source, spec, labeled=(role != "unlabeled"))
        except (DataError, FileNotFoundError) as err:
            report.errors.append(f"data.{role}: {err}")
    test = config.data.test
    if test is not None and _same_source(test, config.data.pool):
        report.errors.append(f"data.test is the pool itself ({test.path}): T and D would overlap the test set; "
                             "give a separate test file or use data.holdout")
    if "test" in tables and tables["test"].num_rows == 0:
        report.errors.append(f"data.test ({config.data.test.path}): has no rows; give a test file with data "
                             "or remove data.test")
    n_models = len(config.pattern_ids()) * len(config.seeds)
    if config.ipet is not None and n_models < 2:
        report.errors.append(f"ipet needs at least 2 models per generation (patterns × seeds = {n_models}); "
                             "add patterns or seeds, or remove the ipet section")
    if "pool" in tables:
        pool = tables["pool"]
        try:
            _, pool = hold_out(pool, config.data)
        except DataError as err:
            report.errors.append(f"data.holdout: {err}")
        counts: dict[str, int] = {}
        for label in pool.column("label").to_pylist():
            counts[label] = counts.get(label, 0) + 1
        absent = [name for name in spec.label_names if counts.get(name, 0) == 0]
        if absent and config.data.n_labeled > 0:
            report.errors.append(f"data.pool ({config.data.pool.path}): label(s) {absent} have no examples")
        try:
            labeled, unlabeled = draw(pool, config.data)
            seen = {label for label in labeled.column("label").to_pylist()}
            missing = [n for n in spec.label_names if n not in seen]
            if config.word_search_patterns() and labeled.num_rows == 0:
                report.errors.append(f"words: patterns {config.word_search_patterns()} search their label words "
                                     "on T, which is empty (n_labeled=0): give labelled examples or hand-picked "
                                     "words (remove words: auto / the words: section)")
            elif missing and config.word_search_patterns():
                report.errors.append(f"words: the label search needs an example of every label in T; T has none of "
                                     f"{missing} (n_labeled={config.data.n_labeled}): set data.min_per_label: 1 "
                                     "or raise n_labeled")
            elif missing and config.data.n_labeled > 0:
                report.warnings.append(f"T has no example of {missing} (n_labeled={config.data.n_labeled}); "
                                       "set data.min_per_label: 1, raise n_labeled or use per_label: true")
            if config.demo_patterns() and labeled.num_rows == 0:
                report.errors.append(f"patterns {config.demo_patterns()} have {{demos}}, drawn from T, which is "
                                     "empty (n_labeled=0): give labelled examples or remove {demos}")
            elif missing and config.demo_patterns():
                report.warnings.append(f"patterns {config.demo_patterns()} have {{demos}}, but T has no example of "
                                       f"{missing}: those labels get no demonstration")
            if config.demo_patterns():
                report.facts["demonstrations"] = (f"patterns {config.demo_patterns()}: one example of T per label, "
                                                  "drawn per step; sets averaged at inference")
            report.facts["labeled"], report.facts["unlabeled"] = labeled.num_rows, unlabeled.num_rows
            report.facts["T labels"] = label_counts(labeled) or "none (zero-shot)"
            if unlabeled.num_rows == 0 and config.data.unlabeled is None:
                report.errors.append("data: D is empty (n_unlabeled=0 or the pool is used up by T): the final "
                                     "classifier is distilled from D; give n_unlabeled > 0 or data.unlabeled")
        except DataError as err:
            report.errors.append(f"data: {err}")
    tokenizer = _check_backbone(config, report) if check_backbone else None
    if tokenizer is not None:
        _check_patterns(config, spec, tokenizer, tables.get("pool"), report)
    return report


TRUNCATION_SAMPLE = 200  # texts per pattern tokenized to count truncation: a share, not a census


def _check_patterns(config: RunConfig, spec: Any, tokenizer: Any, pool: Any, report: ValidationReport) -> None:
    from pet_core.kinds import get_kind
    from pet_core.kinds.footprint import human_count

    sample = pool.slice(0, min(pool.num_rows, TRUNCATION_SAMPLE)) if pool is not None else None
    a = sample.column("a").to_pylist() if sample is not None else []
    b = sample.column("b").to_pylist() if sample is not None else []
    for pattern in config.pattern_ids():
        kind = config.kind_for(pattern)
        try:
            found = get_kind(kind.kind).model_class().check(spec, pattern, tokenizer, config.model, kind, a, b)
        except ValueError as err:
            named = str(err).startswith(f"pattern {pattern} ")
            report.errors.append(str(err) if named else f"pattern {pattern}: {err}")
            continue
        report.warnings.extend(f"pattern {pattern}: {note}" for note in found.notes)
        report.facts.setdefault("kinds", {})[f"pattern {pattern}"] = (
            f"{kind.kind} ({human_count(found.trainable)} trainable parameters)")
        report.facts.setdefault("word tokens", {}).update({w: " ".join(t) for w, t in found.words.items()})
        if found.truncated:
            report.warnings.append(f"pattern {pattern}: {found.truncated} of {found.sampled} sampled texts exceed "
                                   f"max_seq_length={config.model.max_seq_length} and will be truncated")
