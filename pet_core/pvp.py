"""Pattern-verbalizer pairs: templates parsed once into parts, verbalizer words into token ids.

``Template`` turns an example into token ids with exact mask positions, truncating only the
shortenable text parts (longest first). ``Verbalizer`` maps labels to token ids. ``PVP`` composes
both for one tokenizer, and encodes whole tables at once with the fast tokenizer.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from transformers import PreTrainedTokenizerBase

from pet_core.spec import PLACEHOLDER, TaskSpec, soft_slot_size


class VerbalizerError(ValueError):
    """A verbalizer word does not fit the tokenizer (message names the word and its tokens)."""


@dataclass(frozen=True)
class Part:
    """One piece of a template: literal text, a text slot (``a``/``b``), the mask, ``count`` soft tokens or the
    demonstrations."""

    kind: str  # "text", "a", "b", "mask", "soft", "demos"
    text: str = ""
    space_before: bool = False
    count: int = 1


def parse_template(template: str) -> list[Part]:
    """Split a template into parts; whitespace before a part is kept as ``space_before``."""
    parts: list[Part] = []
    pos = 0
    pending_space = False

    def literal(chunk: str) -> None:
        nonlocal pending_space
        if not chunk:
            return
        lead = chunk[:1].isspace()
        body = chunk.strip()
        if body:
            parts.append(Part("text", body, space_before=bool(parts) and (pending_space or lead)))
            pending_space = chunk[-1:].isspace()
        else:
            pending_space = True

    for match in PLACEHOLDER.finditer(template):
        literal(template[pos : match.start()])
        soft = soft_slot_size(match.group(1))
        parts.append(Part("soft" if soft else match.group(1), space_before=bool(parts) and pending_space,
                          count=soft or 1))
        pending_space = False
        pos = match.end()
    literal(template[pos:])
    return parts


@dataclass
class Encoded:
    """Token ids of one example, the mask positions, how many text tokens were cut, and where the learned
    prompt tokens sit (their ids are placeholders a kind replaces by its prompt vectors)."""

    input_ids: list[int]
    mask_positions: list[int]
    truncated: int = 0
    soft_positions: list[int] = field(default_factory=list)


def _word_ids(tokenizer: PreTrainedTokenizerBase, word: str, space: bool) -> list[int]:
    text = (" " + word) if space else word
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def special_affixes(tokenizer: PreTrainedTokenizerBase) -> tuple[list[int], list[int]]:
    """The special tokens a tokenizer puts before and after a single sequence ([CLS] … [SEP], <s> … </s>)."""
    plain = tokenizer("hello", add_special_tokens=False)["input_ids"]
    full = tokenizer("hello", add_special_tokens=True)["input_ids"]
    for start in range(len(full) - len(plain) + 1):
        if full[start : start + len(plain)] == plain:
            return full[:start], full[start + len(plain) :]
    raise ValueError(f"cannot locate the special tokens of {type(tokenizer).__name__}")


@dataclass
class Verbalizer:
    """Label -> token ids of each word, for one tokenizer and one mask context."""

    label_names: list[str]
    words: dict[str, list[str]]
    token_ids: dict[str, list[list[int]]] = field(default_factory=dict)

    @classmethod
    def build(
        cls,
        label_names: list[str],
        words: dict[str, list[str]],
        tokenizer: PreTrainedTokenizerBase,
        space_before: bool,
        multi_token: bool = False,
    ) -> Verbalizer:
        """Tokenize every word; single-token mode raises naming a word that splits."""
        token_ids: dict[str, list[list[int]]] = {}
        for label in label_names:
            token_ids[label] = []
            for word in words[label]:
                ids = _word_ids(tokenizer, word, space_before)
                if not ids:
                    raise VerbalizerError(f"verbalizer word {word!r} (label {label!r}) tokenizes to nothing")
                if len(ids) > 1 and not multi_token:
                    pieces = tokenizer.convert_ids_to_tokens(ids)
                    raise VerbalizerError(
                        f"verbalizer word {word!r} (label {label!r}) is not one token: it splits into {pieces}; "
                        f"pick a word that is one token, or set multi_token: true in the task spec"
                    )
                token_ids[label].append(ids)
        return cls(label_names, words, token_ids)

    @property
    def max_tokens(self) -> int:
        """Longest verbalization in tokens (1 for single-token verbalizers)."""
        return max(len(ids) for per_label in self.token_ids.values() for ids in per_label)

    def single_token_ids(self) -> tuple[list[int], list[int]]:
        """Flat word token ids and, for each, the index of its label (single-token mode)."""
        flat, owner = [], []
        for li, label in enumerate(self.label_names):
            for ids in self.token_ids[label]:
                flat.append(ids[0])
                owner.append(li)
        return flat, owner


class PVP:
    """A pattern and its verbalizer, bound to one tokenizer and a maximum length.

    ``prepend`` soft tokens go right after the tokenizer's leading special tokens, before the template's
    own ``{soft}`` slots; ``n_soft`` counts both. ``mask_id`` is the token written for ``{mask}`` (default the
    tokenizer's mask token; a T5 pattern writes its sentinel ``<extra_id_0>``)."""

    def __init__(self, spec: TaskSpec, pattern_id: int, tokenizer: PreTrainedTokenizerBase, max_length: int,
                 prepend: int = 0, mask_id: int | None = None):
        if not 0 <= pattern_id < len(spec.patterns):
            raise IndexError(f"pattern {pattern_id} does not exist; task {spec.name!r} has {len(spec.patterns)}")
        self.spec = spec
        self.pattern_id = pattern_id
        self.template = spec.patterns[pattern_id].template
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.parts = parse_template(self.template)
        self.prepend = prepend
        self.n_soft = prepend + sum(p.count for p in self.parts if p.kind == "soft")
        self._soft_id = next(i for i in (tokenizer.unk_token_id, tokenizer.pad_token_id, 0) if i is not None)
        self.mask_id = tokenizer.mask_token_id if mask_id is None else mask_id
        if self.mask_id is None:
            raise ValueError("the tokenizer has no mask token: PET needs a masked language model")
        mask_part = next(p for p in self.parts if p.kind == "mask")
        self.verbalizer = Verbalizer.build(
            spec.label_names, spec.verbalizer(pattern_id), tokenizer,
            space_before=mask_part.space_before, multi_token=spec.multi_token,
        )
        self._literal_ids = {i: _word_ids(tokenizer, p.text, p.space_before)
                             for i, p in enumerate(self.parts) if p.kind == "text"}
        self._prefix_ids, self._suffix_ids = special_affixes(tokenizer)
        self._prefix = len(self._prefix_ids)
        self._n_special = len(self._prefix_ids) + len(self._suffix_ids)
        self._sep = [tokenizer.sep_token_id] if tokenizer.sep_token_id is not None else []
        fixed = (sum(len(v) for v in self._literal_ids.values()) + self.verbalizer.max_tokens + self._n_special
                 + self.n_soft)
        demos = sum(self._demo_fixed(label) for label in range(len(spec.labels))) if self.has_demos else 0
        if fixed + demos >= max_length:
            with_demos = f" and {demos} more for one demonstration per label" if demos else ""
            raise ValueError(
                f"pattern {pattern_id} ({self.template!r}) needs {fixed} tokens without any text{with_demos}, "
                f"but max_seq_length is {max_length}"
            )

    def slot_ids(self, a: list[str], b: list[str | None]) -> list[dict[int, list[int]]]:
        """Token ids of each example's text slots, keyed by part index (one batched call per slot)."""
        slot_ids: dict[int, list[list[int]]] = {}
        for i, part in enumerate(self.parts):
            if part.kind in ("a", "b"):
                texts = a if part.kind == "a" else [t or "" for t in b]
                prefixed = [(" " + t) if part.space_before else t for t in texts]
                slot_ids[i] = self.tokenizer(prefixed, add_special_tokens=False)["input_ids"]
        return [{i: ids[k] for i, ids in slot_ids.items()} for k in range(len(a))]

    def encode_texts(self, a: list[str], b: list[str | None], n_masks: int = 1) -> list[Encoded]:
        """Encode many examples (a ``{demos}`` slot stays empty; kinds with demonstrations use ``assemble``)."""
        return [self.assemble(slots, n_masks) for slots in self.slot_ids(a, b)]

    @property
    def has_demos(self) -> bool:
        """Whether the template has a ``{demos}`` slot."""
        return any(p.kind == "demos" for p in self.parts)

    def _demo_fixed(self, label: int) -> int:
        """Tokens of one demonstration of ``label`` besides its text: separator, literals, the label word."""
        word = self.verbalizer.token_ids[self.verbalizer.label_names[label]][0]
        return len(self._sep) + sum(len(v) for v in self._literal_ids.values()) + len(word)

    def assemble(self, slots: dict[int, list[int]], n_masks: int = 1,
                 demos: Sequence[tuple[int, dict[int, list[int]]]] = ()) -> Encoded:
        """One example from its text-slot ids; ``demos`` are (label index, text-slot ids) written at ``{demos}``.

        Over ``max_length``, demonstration texts are shortened first (longest first), then the query's."""
        slots = {i: list(ids) for i, ids in slots.items()}
        demo_slots = {(k, i): list(ids) for k, (_, d) in enumerate(demos) for i, ids in d.items()}
        fixed = (sum(len(v) for v in self._literal_ids.values()) + n_masks + self._n_special + self.n_soft
                 + sum(self._demo_fixed(label) for label, _ in demos))
        excess = (fixed + sum(len(v) for v in slots.values()) + sum(len(v) for v in demo_slots.values())
                  - self.max_length)
        excess = _shorten(demo_slots, excess)
        truncated = max(excess, 0)
        _shorten(slots, excess)
        body: list[int] = [self._soft_id] * self.prepend
        masks: list[int] = []
        soft: list[int] = list(range(self.prepend))
        for i, part in enumerate(self.parts):
            if part.kind == "mask":
                masks.extend(range(len(body), len(body) + n_masks))
                body.extend([self.mask_id] * n_masks)
            elif part.kind == "text":
                body.extend(self._literal_ids[i])
            elif part.kind == "soft":
                soft.extend(range(len(body), len(body) + part.count))
                body.extend([self._soft_id] * part.count)
            elif part.kind == "demos":
                for k, (label, _) in enumerate(demos):
                    body.extend(self._demonstration(label, {j: demo_slots[(k, j)] for j in slots}))
            else:
                body.extend(slots[i])
        ids = self._prefix_ids + body + self._suffix_ids
        return Encoded(ids, [m + self._prefix for m in masks], truncated, [s + self._prefix for s in soft])

    def _demonstration(self, label: int, slots: dict[int, list[int]]) -> list[int]:
        """A separator, then the pattern with this example's texts and ``label``'s first word at the mask
        (learned-prompt slots and the ``{demos}`` slot are left out)."""
        word = self.verbalizer.token_ids[self.verbalizer.label_names[label]][0]
        out = list(self._sep)
        for i, part in enumerate(self.parts):
            if part.kind == "mask":
                out.extend(word)
            elif part.kind == "text":
                out.extend(self._literal_ids[i])
            elif part.kind in ("a", "b"):
                out.extend(slots[i])
        return out


def _shorten(slots: dict, excess: int) -> int:
    """Cut ``excess`` tokens off the ends of the longest slots (in place); what could not be cut is returned."""
    while excess > 0 and any(slots.values()):
        longest = max(slots, key=lambda i: len(slots[i]))
        runner_up = max((len(v) for i, v in slots.items() if i != longest), default=0)
        cut = min(excess, max(1, len(slots[longest]) - runner_up))
        del slots[longest][len(slots[longest]) - cut :]
        excess -= cut
    return excess


def pattern_words(template: str) -> list[str]:
    """The literal words of a template (for reports)."""
    return re.sub(PLACEHOLDER, " ", template).split()
