"""pet_core.metrics: accuracy, macro-F1 and the confusion matrix on hand-computed cases."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pet_core.metrics import classification_metrics, confusion, confusion_markdown


def test_confusion_counts():
    gold = np.array([0, 0, 1, 1, 2, 2])
    pred = np.array([0, 1, 1, 1, 0, 2])
    assert confusion(gold, pred, 3).tolist() == [[1, 1, 0], [0, 2, 0], [1, 0, 1]]


def test_hand_computed_three_labels():
    # gold:  a a a b b c ; pred: a a b b c c
    gold = np.array([0, 0, 0, 1, 1, 2])
    pred = np.array([0, 0, 1, 1, 2, 2])
    m = classification_metrics(gold, pred, ["a", "b", "c"])
    assert m["n"] == 6
    assert m["accuracy"] == pytest.approx(4 / 6)
    # a: p=2/2 r=2/3 f=0.8 ; b: p=1/2 r=1/2 f=0.5 ; c: p=1/2 r=1/1 f=2/3
    assert m["per_class_f1"] == pytest.approx({"a": 0.8, "b": 0.5, "c": 2 / 3})
    assert m["macro_f1"] == pytest.approx((0.8 + 0.5 + 2 / 3) / 3)
    assert m["confusion"] == [[2, 1, 0], [0, 1, 1], [0, 0, 1]]
    assert m["labels"] == ["a", "b", "c"]


def test_label_never_seen_counts_as_zero_f1():
    gold = np.array([0, 0, 1, 1])
    pred = np.array([0, 0, 1, 1])
    m = classification_metrics(gold, pred, ["a", "b", "c"])
    assert m["accuracy"] == 1.0
    assert m["per_class_f1"] == {"a": 1.0, "b": 1.0, "c": 0.0}
    assert m["macro_f1"] == pytest.approx(2 / 3)


def test_all_wrong_binary():
    m = classification_metrics(np.array([0, 1, 0]), np.array([1, 0, 1]), ["neg", "pos"])
    assert m["accuracy"] == 0.0 and m["macro_f1"] == 0.0
    assert m["confusion"] == [[0, 2], [1, 0]]


def test_empty_input():
    m = classification_metrics(np.array([], dtype=int), np.array([], dtype=int), ["a", "b"])
    assert m["n"] == 0 and m["accuracy"] == 0.0 and m["macro_f1"] == 0.0
    assert m["confusion"] == [[0, 0], [0, 0]]


def test_confusion_markdown():
    m = classification_metrics(np.array([0, 1, 1]), np.array([0, 0, 1]), ["neg", "pos"])
    assert confusion_markdown(m) == (
        "| gold \\ pred | neg | pos |\n"
        "|---|---|---|\n"
        "| neg | 1 | 0 |\n"
        "| pos | 1 | 1 |"
    )


@settings(max_examples=100, deadline=None)
@given(pairs=st.lists(st.tuples(st.integers(0, 3), st.integers(0, 3)), min_size=1, max_size=60))
def test_metrics_agree_with_a_direct_computation(pairs):
    gold = np.array([g for g, _ in pairs])
    pred = np.array([p for _, p in pairs])
    names = ["a", "b", "c", "d"]
    m = classification_metrics(gold, pred, names)
    assert m["accuracy"] == pytest.approx(np.mean(gold == pred))
    assert np.array(m["confusion"]).sum() == len(pairs)
    f1s = []
    for k in range(4):
        tp = np.sum((gold == k) & (pred == k))
        fp = np.sum((gold != k) & (pred == k))
        fn = np.sum((gold == k) & (pred != k))
        f1s.append(2 * tp / (2 * tp + fp + fn) if tp else 0.0)
    assert m["per_class_f1"] == pytest.approx(dict(zip(names, f1s, strict=True)))
    assert m["macro_f1"] == pytest.approx(np.mean(f1s))


def test_comparison_warns_when_the_student_falls_below_its_teacher():
    from pet_core.metrics import comparison, comparison_markdown

    result = comparison({"T": {"baseline": 0.9, "ensemble": 1.0, "final": 1.0},
                         "test": {"baseline": 0.55, "ensemble": 0.80, "final": 0.70}})
    assert [r["split"] for r in result["rows"]] == ["T", "test"]
    assert len(result["warnings"]) == 1
    assert "70.0%" in result["warnings"][0] and "80.0%" in result["warnings"][0] and "test" in result["warnings"][0]
    table = comparison_markdown(result)
    assert "| test | 55.0% | 80.0% | 70.0% |" in table and "Warning" in table


def test_comparison_within_tolerance_or_missing_values_is_quiet():
    from pet_core.metrics import comparison

    assert comparison({"test": {"ensemble": 0.80, "final": 0.785}})["warnings"] == []
    assert comparison({"T": {"baseline": 0.7, "ensemble": None, "final": 0.5}})["warnings"] == []
