"""What the CLI prints after work: a run's summary and the label-word search's tables (rich)."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table


def print_summary(result: dict[str, Any], console: Console, errors: Console) -> None:
    """The metrics of a finished run: what PET bought, per generation, where the run lives."""
    from pet_core.metrics import SYSTEM_NAMES, SYSTEMS

    metrics = result["metrics"]
    data = metrics["data"]
    sizes = " / ".join(str(data[k]["rows"]) for k in ("labeled", "unlabeled", "test") if k in data)
    title = f"petflow run {metrics['name']} ({metrics['digest']}): |T| / |D|{' / |test|' if 'test' in data else ''} = {sizes}"
    compared = metrics.get("comparison") or {"rows": [], "warnings": []}
    table = Table("accuracy", *[SYSTEM_NAMES[s] for s in SYSTEMS], title=title, title_justify="left")
    for row in compared["rows"]:
        cells = ["–" if row[s] is None else f"{row[s]:.1%}" for s in SYSTEMS]
        cells[-1] = f"[bold]{cells[-1]}[/]"
        table.add_row(f"on {row['split']}", *cells)
    for g in metrics["generations"][:-1]:
        if g["ensemble_test"]:
            table.add_row(f"on test, generation {g['generation']}", "", f"{g['ensemble_test']['accuracy']:.1%}", "")
    console.print(table)
    for pattern, found in (metrics.get("words") or {}).items():
        chosen = ", ".join(f"{label}: {word}" for label, word in found["words"].items())
        cv = "" if found["cv_accuracy"] is None else f", cv accuracy on T {found['cv_accuracy']:.1%}"
        console.print(f"label words of pattern {pattern} (searched on T): {chosen}{cv}", highlight=False, soft_wrap=True)
    test = metrics["test"]
    if test:
        console.print(f"final classifier on test: macro-F1 {test['macro_f1']:.4f} (n = {test['n']})")
    else:
        console.print("final classifier: trained on D; no test set configured")
    for warning in compared["warnings"]:
        errors.print(f"[bold yellow]warning:[/] {warning}", highlight=False, soft_wrap=True)
    console.print(f"run directory: {result['run_dir']}", highlight=False, soft_wrap=True)
    console.print("see the recorded runs in the Prefect UI: petflow server  (then http://127.0.0.1:4200)",
                  highlight=False, soft_wrap=True)


def word_tables(pattern: str, template: str, result: Any, top: int) -> list[Any]:
    """The candidates per label, the ranked pairings and the choice of one searched pattern (``SearchResult``)."""
    candidates = Table("label", f"top {top} candidates (mean log-prob at the mask over T)",
                       title=f"pattern {pattern}: {template}", title_justify="left")
    for label, words in result.candidates.items():
        candidates.add_row(label, ", ".join(f"{w} ({s:.2f})" for w, s in words[:top]))
    pairings = Table("rank", *result.candidates, "cv accuracy", "accuracy on T",
                     title=f"pattern {pattern}: pairings ({result.folds}-fold cross-validation on T)"
                     if result.folds else f"pattern {pattern}: pairings (no cross-validation: a label has one "
                     "example in T)", title_justify="left")
    for rank, pairing in enumerate(result.pairings, 1):
        cv = "–" if pairing.cv_accuracy is None else f"{pairing.cv_accuracy:.1%}"
        pairings.add_row(str(rank), *pairing.words.values(), cv, f"{pairing.train_accuracy:.1%}")
    chosen = ", ".join(f"{label}: {word}" for label, word in result.pairings[0].words.items())
    return [candidates, pairings, f"pattern {pattern} chooses {chosen}"]
