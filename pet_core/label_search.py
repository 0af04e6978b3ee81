"""Automatic label-word search (LM-BFF, Gao et al. 2021), pairings ranked by cross-validated accuracy on T.

``candidates(mlm, spec, pattern_id, examples, settings)`` -> label -> [(word, mean log-prob)]; ``search(...)`` ->
``SearchResult`` (ranked ``Pairing``s, JSON dicts, ``best()`` = ``{label: [word]}``); ``search_log_probs``: on tensors.

1. A label's candidates: its seed words, then ``vocabulary`` words (whole, one token where the pattern's mask
   sits, alphabetic, 2+ letters, no stop word) by mean log-softmax at the mask over its examples (ties by word).
2. Pairings: one word per label among the first ``k_per_label`` candidates, no word (any case) twice; the whole
   product up to ``max_combinations``, else a beam of that width, grown label by label on partial accuracy.
3. CV: the i-th example of a label (table order) is in fold i mod F, F = min(folds, smallest label count).
   Steps 1-2 on the other folds propose pairings for fold f; ``cv_accuracy`` is the mean over folds of the
   accuracy on fold f, or 0 where not proposed: the accuracy on unseen examples of what the search finds
   without them, so a word likely only through one example of T earns little (accuracy on T rewards it).
4. Reported candidates and pairings come from all of T, ranked by cv_accuracy, accuracy on T, ``score`` (summed
   mean log-prob of the words), then the words. A label with one example: no CV (``cv_accuracy`` None).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import pyarrow as pa
import torch

from pet_core.config import WordsConfig
from pet_core.modeling import MaskedLM, collate, length_sorted_batches
from pet_core.pvp import PVP
from pet_core.spec import TaskSpec

_STOP_TEXT = (
    "about above after again against all also am an and any are as at be because been before being below between "
    "both but by can could did do does doing down during each few for from further had has have having he her here "
    "hers herself him himself his how if in into is it its itself just me more most my myself no nor not now of off "
    "on once only or other our ours ourselves out over own same she should so some such than that the their theirs "
    "them themselves then there these they this those through to too under until up very was we were what when "
    "where which while who whom why will with would you your yours yourself")
STOP_WORDS = frozenset(_STOP_TEXT.split())


class LabelSearchError(ValueError):
    """Label search cannot run on this input (one line naming the label or word)."""


@dataclass(frozen=True)
class Pairing:
    """One word per label, its cross-validated and T accuracy, and its summed mean log-prob."""

    words: dict[str, str]
    cv_accuracy: float | None
    train_accuracy: float
    score: float

    def verbalizer(self) -> dict[str, list[str]]:
        """``{label: [word]}``, the format of ``PatternSpec.verbalizer``."""
        return {label: [word] for label, word in self.words.items()}


@dataclass(frozen=True)
class SearchResult:
    """Ranked pairings (best first) and each label's candidates ``(word, mean log-prob)`` on all of T."""

    pattern_id: int
    folds: int  # 0: no cross-validation
    candidates: dict[str, list[tuple[str, float]]]
    pairings: list[Pairing]

    def best(self) -> dict[str, list[str]]:
        """The verbalizer of the best pairing."""
        return self.pairings[0].verbalizer()

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SearchResult:
        """Inverse of ``to_dict`` (also after a JSON round trip)."""
        candidates = {k: [(w, float(s)) for w, s in v] for k, v in data["candidates"].items()}
        return cls(data["pattern_id"], data["folds"], candidates, [Pairing(**p) for p in data["pairings"]])


def mask_log_probs(mlm: MaskedLM, pvp: PVP, examples: pa.Table, batch_size: int = 32) -> torch.Tensor:
    """(n, V) float32 log-softmax of the vocabulary at the (first) mask of every example in ``pvp``'s pattern."""
    encoded = pvp.encode_texts(examples.column("a").to_pylist(), examples.column("b").to_pylist(), n_masks=1)
    rows: dict[int, torch.Tensor] = {}
    was_training = mlm.model.training
    mlm.model.eval()
    with torch.inference_mode():
        for indices in length_sorted_batches(encoded, batch_size):
            batch = collate(encoded, indices, mlm.tokenizer.pad_token_id or 0).to(mlm.device)
            with mlm.autocast():
                logits = mlm.mask_logits(batch)[:, 0]
            rows.update(zip(indices, torch.log_softmax(logits.float(), -1).cpu(), strict=True))
    mlm.model.train(was_training)
    return torch.stack([rows[i] for i in range(len(encoded))])


def vocabulary(tokenizer: Any, space_before: bool, size: int | None = None) -> dict[int, str]:
    """Id (< ``size``) -> word, sorted by word, of every candidate token: a whole alphabetic word of 2+ letters,
    not special or a stop word, that tokenizes back to it (after a space if ``space_before``)."""
    size, special = min(size or len(tokenizer), len(tokenizer)), set(tokenizer.all_special_ids)
    words = {i: w.strip() for i, w in enumerate(tokenizer.batch_decode([[i] for i in range(size)]))}
    words = {i: w for i, w in words.items()
             if i not in special and len(w) >= 2 and w.isalpha() and w.lower() not in STOP_WORDS}
    back = tokenizer([" " * space_before + w for w in words.values()], add_special_tokens=False)["input_ids"]
    kept = {i: w for (i, w), ids in zip(words.items(), back, strict=True) if ids == [i]}
    return dict(sorted(kept.items(), key=lambda item: (item[1], item[0])))


def _correct(log_probs: torch.Tensor, y: torch.Tensor, combos: list[tuple[int, ...]]) -> list[int]:
    """Per pairing (word ids by label), examples whose argmax over its words is their label (of its labels)."""
    lp, y = log_probs[y < len(combos[0])], y[y < len(combos[0])]
    counts: list[int] = []
    for start in range(0, len(combos), 4096):  # (m, 4096, j) floats at a time
        sub = lp[:, torch.tensor(combos[start : start + 4096], dtype=torch.long)]
        counts += (sub.argmax(-1) == y[:, None]).sum(0).tolist()
    return counts


class _Search:
    """Mask log-probs of T with its labels, the candidate vocabulary, seeds (per label) and word names."""

    def __init__(self, log_probs: torch.Tensor, labels: list[Any], label_names: list[str], vocab: dict[int, str],
                 seeds: dict[str, list[tuple[int, str]]] | None):
        unknown = sorted({str(label) for label in labels if label not in label_names})
        if not labels or unknown:
            raise LabelSearchError(f"T needs examples labelled with {label_names}; found {unknown or 'no rows'}")
        self.y = torch.tensor([label_names.index(label) for label in labels], dtype=torch.long)
        self.rows = [torch.nonzero(self.y == k).flatten() for k in range(len(label_names))]
        empty = [name for name, r in zip(label_names, self.rows, strict=True) if len(r) == 0]
        if empty:
            raise LabelSearchError(f"label {empty[0]!r} has no example in T: the search needs one per label")
        if not vocab:
            raise LabelSearchError("no candidate word survives the filter (whole one-token words, not stop words)")
        self.log_probs, self.vocab = log_probs, vocab
        seeds = seeds or {}
        self.names = {**vocab, **{i: w for pairs in seeds.values() for i, w in pairs}}
        self.seeds = [[i for i, _ in seeds.get(n, [])] for n in label_names]

    def candidates(self, part: torch.Tensor, k: int) -> list[list[tuple[int, float]]]:
        """Per label: seeds, then the vocabulary by mean log-prob on the rows ``part`` (ties by word)."""
        ids = torch.tensor(list(self.vocab), dtype=torch.long)
        out = []
        for rows, seeds in zip(self.rows, self.seeds, strict=True):
            mean = self.log_probs[rows[torch.isin(rows, part)]].mean(0)
            order = ids[torch.sort(mean[ids], descending=True, stable=True).indices].tolist()
            chosen = seeds + [i for i in order if i not in seeds][: max(k - len(seeds), 0)]
            out.append([(i, float(mean[i])) for i in chosen])
        return out

    def pairings(self, part: torch.Tensor, cands: list[list[tuple[int, float]]], width: int) -> list[tuple[int, ...]]:
        """Pairings of distinct words (any case); all up to ``width``, else a beam on accuracy on ``part``."""
        partial: list[tuple[int, ...]] = [()]
        scores = [dict(c) for c in cands]
        for label, cand in enumerate(cands):
            partial = [p + (i,) for p in partial for i, _ in cand
                       if self.names[i].lower() not in {self.names[j].lower() for j in p}]
            if not partial:
                raise LabelSearchError(f"no pairing of distinct words for labels 0..{label}: raise k_per_label")
            if len(partial) > width:
                correct = _correct(self.log_probs[part], self.y[part], partial)
                key = {p: (-c, -sum(scores[k][i] for k, i in enumerate(p)), [self.names[i] for i in p])
                       for p, c in zip(partial, correct, strict=True)}
                partial = sorted(partial, key=key.__getitem__)[:width]
        return partial


def search_log_probs(log_probs: torch.Tensor, labels: list[str], label_names: list[str], vocab: dict[int, str],
                     settings: WordsConfig, seeds: dict[str, list[tuple[int, str]]] | None = None,
                     pattern_id: int = 0) -> SearchResult:
    """The search on (n, V) mask log-probs of T (module doc); ``seeds``: label -> [(token id, word)]."""
    data = _Search(log_probs, labels, label_names, vocab, seeds)
    everything, names = torch.arange(len(data.y)), data.names
    final = data.candidates(everything, settings.k_likely)
    pairs = data.pairings(everything, [c[: settings.k_per_label] for c in final], settings.max_combinations)
    smallest = min(len(r) for r in data.rows)
    n_folds = min(settings.folds, smallest) if smallest >= 2 else 0  # one example of a label: no CV
    fold = torch.tensor([int((data.y[:i] == y).sum()) % max(n_folds, 1) for i, y in enumerate(data.y)])
    credit = [0.0] * len(pairs)
    for f in range(n_folds):
        held, rest = torch.nonzero(fold == f).flatten(), torch.nonzero(fold != f).flatten()
        proposed = set(data.pairings(rest, data.candidates(rest, settings.k_per_label), settings.max_combinations))
        hits = _correct(log_probs[held], data.y[held], pairs)
        credit = [c + h / len(held) * (p in proposed) for c, h, p in zip(credit, hits, pairs, strict=True)]
    scores = [dict(c) for c in final]
    ranked = [Pairing({name: names[i] for name, i in zip(label_names, p, strict=True)},
                      credit[k] / n_folds if n_folds else None, correct / len(data.y),
                      sum(scores[j][i] for j, i in enumerate(p)))
              for k, (p, correct) in enumerate(zip(pairs, _correct(log_probs, data.y, pairs), strict=True))]
    ranked.sort(key=lambda q: (-(q.cv_accuracy or 0.0), -q.train_accuracy, -q.score, list(q.words.values())))
    named = {n: [(names[i], s) for i, s in c] for n, c in zip(label_names, final, strict=True)}
    return SearchResult(pattern_id, n_folds, named, ranked[: settings.n_pairs])


def _prepare(mlm: MaskedLM, spec: TaskSpec, pattern_id: int, examples: pa.Table, settings: WordsConfig,
             seed_words: dict[str, list[str]] | None) -> tuple[torch.Tensor, list[str], dict[int, str], dict]:
    """Mask log-probs, labels, vocabulary and seeds of T (the spec's words may split: the search ignores them)."""
    pvp = PVP(spec.model_copy(update={"multi_token": True}), pattern_id, mlm.tokenizer, mlm.config.max_seq_length)
    if pvp.n_soft:
        raise LabelSearchError(f"pattern {pattern_id} ({pvp.template!r}) has {{soft}} slots; search needs a cloze one")
    space = next(p for p in pvp.parts if p.kind == "mask").space_before
    words = seed_words if seed_words is not None else spec.verbalizer(pattern_id) if settings.seed_spec_words else {}
    seeds: dict[str, list[tuple[int, str]]] = {}
    for label, word in ((label, word) for label, ws in words.items() for word in ws):
        ids = mlm.tokenizer(" " * space + word, add_special_tokens=False)["input_ids"]
        if label not in spec.label_names:
            raise LabelSearchError(f"seed word {word!r}: {label!r} is not a label of {spec.label_names}")
        if len(ids) != 1:
            raise LabelSearchError(f"seed word {word!r} (label {label!r}) is not one token: it splits into "
                                   f"{mlm.tokenizer.convert_ids_to_tokens(ids)}")
        seeds.setdefault(label, []).append((ids[0], word))
    log_probs = mask_log_probs(mlm, pvp, examples, settings.batch_size)
    return log_probs, examples.column("label").to_pylist(), vocabulary(mlm.tokenizer, space, log_probs.size(1)), seeds


def search(mlm: MaskedLM, spec: TaskSpec, pattern_id: int, examples: pa.Table, settings: WordsConfig,
           seed_words: dict[str, list[str]] | None = None) -> SearchResult:
    """LM-BFF's label search for one pattern on the labelled table T; ``seed_words`` lead their labels' lists."""
    log_probs, labels, vocab, seeds = _prepare(mlm, spec, pattern_id, examples, settings, seed_words)
    return search_log_probs(log_probs, labels, spec.label_names, vocab, settings, seeds, pattern_id)


def candidates(mlm: MaskedLM, spec: TaskSpec, pattern_id: int, examples: pa.Table, settings: WordsConfig,
               seed_words: dict[str, list[str]] | None = None) -> dict[str, list[tuple[str, float]]]:
    """Label -> its top ``k_likely`` candidate words ``(word, mean log-prob)`` on all of T, seed words first."""
    log_probs, labels, vocab, seeds = _prepare(mlm, spec, pattern_id, examples, settings, seed_words)
    data = _Search(log_probs, labels, spec.label_names, vocab, seeds)
    final = data.candidates(torch.arange(len(labels)), settings.k_likely)
    return {n: [(data.names[i], s) for i, s in c] for n, c in zip(spec.label_names, final, strict=True)}
