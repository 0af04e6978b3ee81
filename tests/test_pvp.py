"""pet_core.pvp: template parsing, verbalizer tokenization and encoding with truncation."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pet_core.pvp import PVP, Part, Verbalizer, VerbalizerError, parse_template, pattern_words, special_affixes
from pet_core.spec import TaskSpec

from _petcore_support import NEGATIVE, POSITIVE, SENTIMENT_SPEC

TASK_FILES = sorted((Path(__file__).resolve().parents[1] / "data" / "tasks").glob("*.yaml"))
TEXT_WORDS = sorted({w for s in POSITIVE + NEGATIVE for w in s.split() if w.isalpha()})


def fill(template: str, a: str, b: str | None, mask: str = "[MASK]") -> str:
    return template.replace("{a}", a).replace("{b}", b or "").replace("{mask}", mask)


# -- parse_template ---------------------------------------------------------------------------------------------
def test_parse_template_parts():
    assert parse_template("{a} It was {mask}.") == [
        Part("a"), Part("text", "It was", True), Part("mask", space_before=True), Part("text", ".")]
    assert parse_template("[ Category: {mask} ] {a} {b}") == [
        Part("text", "[ Category:"), Part("mask", space_before=True), Part("text", "]", True),
        Part("a", space_before=True), Part("b", space_before=True)]
    assert parse_template("{b}? {mask}, {a}") == [
        Part("b"), Part("text", "?"), Part("mask", space_before=True), Part("text", ","),
        Part("a", space_before=True)]
    assert parse_template("{a} {b} ({mask})") == [
        Part("a"), Part("b", space_before=True), Part("text", "(", True), Part("mask"), Part("text", ")")]


def test_parse_template_first_part_never_has_space():
    parts = parse_template("   Just {mask}! {a}")
    assert parts[0] == Part("text", "Just", False)
    assert parse_template("  {a} {mask}")[0] == Part("a", space_before=False)


def test_pattern_words():
    assert pattern_words("[ Category: {mask} ] {a} {b}") == ["[", "Category:", "]"]
    assert pattern_words("{a} All in all, it was {mask}.") == ["All", "in", "all,", "it", "was", "."]


# -- verbalizer ---------------------------------------------------------------------------------------------------
def test_special_affixes(tiny_tokenizer):
    assert special_affixes(tiny_tokenizer) == ([tiny_tokenizer.cls_token_id], [tiny_tokenizer.sep_token_id])


def test_verbalizer_single_token_ids(tiny_tokenizer, sentiment_spec):
    verb = Verbalizer.build(sentiment_spec.label_names, sentiment_spec.verbalizer(0), tiny_tokenizer, True)
    ids = tiny_tokenizer.convert_tokens_to_ids(["bad", "terrible", "good", "great"])
    assert verb.token_ids == {"negative": [[ids[0]], [ids[1]]], "positive": [[ids[2]], [ids[3]]]}
    assert verb.max_tokens == 1
    assert verb.single_token_ids() == (ids, [0, 0, 1, 1])


def test_verbalizer_word_that_splits_raises(tiny_tokenizer):
    data = copy.deepcopy(SENTIMENT_SPEC)
    data["labels"][1]["words"] = ["good", "zzgoodzz"]
    spec = TaskSpec.model_validate(data)
    pieces = tiny_tokenizer.tokenize("zzgoodzz")
    assert len(pieces) > 1
    with pytest.raises(VerbalizerError) as info:
        PVP(spec, 0, tiny_tokenizer, 64)
    message = str(info.value)
    assert "'zzgoodzz'" in message and "'positive'" in message
    assert str(pieces) in message
    assert "multi_token: true" in message


def test_multi_token_allowed_when_enabled(tiny_tokenizer):
    data = copy.deepcopy(SENTIMENT_SPEC)
    data["labels"][1]["words"] = ["good", "zzgoodzz"]
    data["multi_token"] = True
    pvp = PVP(TaskSpec.model_validate(data), 0, tiny_tokenizer, 64)
    n = len(tiny_tokenizer.tokenize("zzgoodzz"))
    assert pvp.verbalizer.max_tokens == n
    assert pvp.verbalizer.token_ids["positive"][1] == tiny_tokenizer("zzgoodzz", add_special_tokens=False)["input_ids"]
    enc = pvp.encode_texts(["a dull film"], [None], n_masks=n)[0]
    mask = tiny_tokenizer.mask_token_id
    assert [enc.input_ids[p] for p in enc.mask_positions] == [mask] * n
    assert enc.mask_positions == list(range(enc.mask_positions[0], enc.mask_positions[0] + n))
    assert enc.input_ids.count(mask) == n


def test_pattern_index_and_length_errors(tiny_tokenizer, sentiment_spec):
    with pytest.raises(IndexError, match="pattern 5 does not exist"):
        PVP(sentiment_spec, 5, tiny_tokenizer, 64)
    with pytest.raises(ValueError, match="max_seq_length is 5"):
        PVP(sentiment_spec, 0, tiny_tokenizer, 5)


def test_tokenizer_without_mask_token(tiny_tokenizer, sentiment_spec):
    tok = copy.deepcopy(tiny_tokenizer)
    tok.mask_token = None
    if tok.mask_token_id is not None:
        pytest.skip("this transformers version keeps a mask token id after unsetting it")
    with pytest.raises(ValueError, match="no mask token"):
        PVP(sentiment_spec, 0, tok, 64)


# -- encoding -----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("pattern", [0, 1])
def test_encoding_equals_tokenized_filled_template(tiny_tokenizer, topic_spec, topic_examples, pattern):
    pvp = PVP(topic_spec, pattern, tiny_tokenizer, 128)
    a, b = topic_examples.column("a").to_pylist(), topic_examples.column("b").to_pylist()
    for enc, ta, tb in zip(pvp.encode_texts(a, b), a, b, strict=True):
        expected = tiny_tokenizer(fill(topic_spec.patterns[pattern].template, ta, tb))["input_ids"]
        assert enc.input_ids == expected
        assert enc.truncated == 0
        assert len(enc.mask_positions) == 1
        assert enc.input_ids[enc.mask_positions[0]] == tiny_tokenizer.mask_token_id
        assert enc.input_ids.count(tiny_tokenizer.mask_token_id) == 1


@pytest.mark.parametrize("path", TASK_FILES, ids=lambda p: p.stem)
def test_task_yaml_patterns_encode(tiny_tokenizer, path):
    spec = TaskSpec.from_yaml(path)
    a, b = "the team wins the cup", ("fans cheered" if spec.fields.b else None)
    for pid, pattern in enumerate(spec.patterns):
        pvp = PVP(spec, pid, tiny_tokenizer, 64)
        enc = pvp.encode_texts([a], [b])[0]
        assert enc.input_ids == tiny_tokenizer(fill(pattern.template, a, b))["input_ids"], pattern.template
        assert enc.input_ids[enc.mask_positions[0]] == tiny_tokenizer.mask_token_id


def test_encoding_handles_missing_b(tiny_tokenizer, topic_spec):
    pvp = PVP(topic_spec, 0, tiny_tokenizer, 64)
    enc = pvp.encode_texts(["team wins the cup"], [None])[0]
    assert enc.input_ids == tiny_tokenizer("[ Category: [MASK] ] team wins the cup")["input_ids"]


def test_truncation_cuts_longest_slot_first(tiny_tokenizer, topic_spec):
    pvp = PVP(topic_spec, 0, tiny_tokenizer, 20)
    long_a = "leaders meet for peace talks in the capital on monday and the minister said talks will continue"
    short_b = "fans cheered"
    ta = tiny_tokenizer(long_a, add_special_tokens=False)["input_ids"]
    tb = tiny_tokenizer(short_b, add_special_tokens=False)["input_ids"]
    enc = pvp.encode_texts([long_a], [short_b])[0]
    head = tiny_tokenizer("[ Category: [MASK] ]")["input_ids"][:-1]
    keep_a = 20 - len(head) - len(tb) - 1
    assert keep_a > len(tb)
    assert enc.input_ids == head + ta[:keep_a] + tb + [tiny_tokenizer.sep_token_id]
    assert enc.truncated == len(head) + len(ta) + len(tb) + 1 - 20
    # the short slot is cut only once both are equally long
    enc = pvp.encode_texts([long_a], [long_a])[0]
    body = enc.input_ids[len(head):-1]
    assert len(enc.input_ids) == 20 and len(body) == 20 - len(head) - 1
    half, rest = len(body) // 2, len(body) - len(body) // 2
    assert body in (ta[:half] + ta[:rest], ta[:rest] + ta[:half])  # both slots cut to (nearly) equal length


def body_lengths(ids, open_id, close_id):
    """Split encoded ids of '{a} ( {mask} ) {b}' into (a tokens, literal+mask, b tokens)."""
    i, j = ids.index(open_id), ids.index(close_id)
    return ids[1:i], ids[i:j + 1], ids[j + 1:-1]


words = st.lists(st.sampled_from(TEXT_WORDS), min_size=1, max_size=60).map(" ".join)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(a=words, b=st.one_of(st.none(), words), max_length=st.integers(7, 90))
def test_truncation_properties(tiny_tokenizer, a, b, max_length):
    data = copy.deepcopy(SENTIMENT_SPEC)
    data["fields"] = {"a": "x", "b": "y"}
    data["patterns"] = ["{a} ( {mask} ) {b}"]
    pvp = PVP(TaskSpec.model_validate(data), 0, tiny_tokenizer, max_length)
    enc = pvp.encode_texts([a], [b])[0]
    ta = tiny_tokenizer(a, add_special_tokens=False)["input_ids"]
    tb = tiny_tokenizer(b or "", add_special_tokens=False)["input_ids"]
    full = len(ta) + len(tb) + 3 + 2
    ids = enc.input_ids
    assert len(ids) == min(full, max_length)
    assert enc.truncated == max(0, full - max_length)
    assert ids[0] == tiny_tokenizer.cls_token_id and ids[-1] == tiny_tokenizer.sep_token_id
    open_id, close_id = tiny_tokenizer.convert_tokens_to_ids(["(", ")"])
    ka, middle, kb = body_lengths(ids, open_id, close_id)
    # template words and the mask survive intact; the mask sits at mask_positions
    assert middle == [open_id, tiny_tokenizer.mask_token_id, close_id]
    assert enc.mask_positions == [ids.index(tiny_tokenizer.mask_token_id)]
    assert ids.count(tiny_tokenizer.mask_token_id) == 1
    # only the ends of the text slots are cut
    assert ka == ta[: len(ka)] and kb == tb[: len(kb)]
    # longest first: a slot is cut only while it is the longer one, so a cut slot ends at most one token
    # shorter than the other slot's kept length
    if len(ka) < len(ta):
        assert len(ka) >= len(kb) - 1
    if len(kb) < len(tb):
        assert len(kb) >= len(ka) - 1


def test_sentiment_patterns_on_fixture(tiny_tokenizer, sentiment_spec, sentiment_examples):
    a = sentiment_examples.column("a").to_pylist()
    b = sentiment_examples.column("b").to_pylist()
    for pid in range(2):
        pvp = PVP(sentiment_spec, pid, tiny_tokenizer, 16)
        for enc in pvp.encode_texts(a, b):
            assert len(enc.input_ids) <= 16
            assert enc.input_ids[enc.mask_positions[0]] == tiny_tokenizer.mask_token_id
        literal = tiny_tokenizer("just", add_special_tokens=False)["input_ids"]
        if pid == 1:  # 'Just {mask}! {a}': the template words come first and survive truncation
            assert all(enc.input_ids[1:1 + len(literal)] == literal for enc in pvp.encode_texts(a, b))

