"""The cloze kind: a masked LM composed with one pattern-verbalizer pair (template, verbalizer, model).

Single-token verbalizers score a label by the mean MLM logit of its words at the one mask.
Multi-token words get one mask per token; their score is the sum of token log-probabilities,
decoded most-confident-first at inference (one batched pass per step) and in one parallel pass
during training. The auxiliary loss is PET's masked-LM loss on unlabelled texts.

A template with ``{demos}`` gets LM-BFF's demonstrations from T (pet_core.kinds.demos): drawn afresh per
step in training, ``demos.sets`` fixed draws averaged at inference, the pool saved beside the weights.

Kinds that change only what the encoder sees (learned prompt tokens, per-layer prefixes) subclass this
one and override ``_pvp`` (which templates they accept), ``_hidden`` (the encoder pass) and
``load_weights`` / ``save_weights`` (what their folder holds).
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any, Self

import numpy as np
import pyarrow as pa
import torch
from torch import nn

from pet_core.config import ModelConfig, TrainConfig
from pet_core.kinds.base import PatternCheck, PatternModel
from pet_core.kinds.cloze.config import ClozeConfig
from pet_core.kinds.demos import (
    DemoEncodings,
    DemoPool,
    candidates,
    demo_settings,
    draw,
    inference_rng,
    text_key,
)
from pet_core.kinds.footprint import BackboneShape, backbone_shape
from pet_core.kinds.registry import KindConfig
from pet_core.modeling import Batch, MaskedLM, collate, gather_positions, label_scores
from pet_core.optim import mask_tokens, mlm_loss
from pet_core.pvp import PVP, Encoded
from pet_core.spec import TaskSpec


class ClozeModel(PatternModel):
    """Label logits of one pattern on one masked LM (PET)."""

    kind = "cloze"

    def __init__(self, mlm: MaskedLM, pvp: PVP, kind_config: KindConfig | None = None):
        self.mlm = mlm
        self.pvp = pvp
        self.kind_config = kind_config or ClozeConfig()
        self.n_labels = len(pvp.verbalizer.label_names)
        self.multi_token = pvp.verbalizer.max_tokens > 1
        self._flat_ids, self._owner = pvp.verbalizer.single_token_ids() if not self.multi_token else ([], [])
        self.demo_pool: DemoPool | None = None
        self._pool_slots: list[dict[int, list[int]]] = []
        self._demo_rng = random.Random(0)

    # -- life cycle ---------------------------------------------------------------------------
    @classmethod
    def create(cls, spec: TaskSpec, pattern: int, model_config: ModelConfig, kind_config: KindConfig) -> Self:
        """The backbone's masked LM with this pattern."""
        return cls._on(MaskedLM.load(model_config), spec, pattern, model_config, kind_config)

    @classmethod
    def load(cls, spec: TaskSpec, pattern: int, model_dir: str | Path, model_config: ModelConfig,
             kind_config: KindConfig) -> Self:
        """A model saved by ``save``: its weights, and the demonstration pool when the pattern has ``{demos}``."""
        model = cls.load_weights(spec, pattern, model_dir, model_config, kind_config)
        if model.pvp.has_demos:
            model._set_pool(DemoPool.load(model_dir))
        return model

    @classmethod
    def load_weights(cls, spec: TaskSpec, pattern: int, model_dir: str | Path, model_config: ModelConfig,
                     kind_config: KindConfig) -> Self:
        """The fine-tuned masked LM saved by ``save_weights``."""
        return cls._on(MaskedLM.load(model_config, source=str(model_dir)), spec, pattern, model_config, kind_config)

    @classmethod
    def _on(cls, mlm: MaskedLM, spec: TaskSpec, pattern: int, model_config: ModelConfig,
            kind_config: KindConfig) -> Self:
        return cls(mlm, cls._pvp(spec, pattern, mlm.tokenizer, model_config, kind_config), kind_config)

    @classmethod
    def _pvp(cls, spec: TaskSpec, pattern: int, tokenizer: Any, model_config: ModelConfig,
             kind_config: KindConfig) -> PVP:
        """The pattern bound to the tokenizer; PET's hand-written patterns hold no learned tokens."""
        pvp = PVP(spec, pattern, tokenizer, model_config.max_seq_length)
        if pvp.n_soft:
            raise ValueError(f"pattern {pattern} ({pvp.template!r}) has {{soft}} slots, which kind {cls.kind!r} "
                             "cannot fill; train it as kind 'ptuning' or 'prompt_tuning', or use a template without them")
        return pvp

    def save(self, out_dir: str | Path) -> None:
        """The weights, and the demonstration pool when the pattern has ``{demos}`` (Parquet)."""
        self.save_weights(out_dir)
        if self.demo_pool is not None:
            self.demo_pool.save(out_dir)

    def save_weights(self, out_dir: str | Path) -> None:
        """The whole masked LM and its tokenizer (safetensors)."""
        self.mlm.save(out_dir)

    def use_labeled(self, table: pa.Table, seed: int) -> None:
        """With ``{demos}``: T becomes the demonstration pool, drawn in training by a generator seeded by ``seed``."""
        if self.pvp.has_demos:
            self._set_pool(DemoPool.from_table(table, self.pvp.verbalizer.label_names))
            self._demo_rng = random.Random(seed)

    def _set_pool(self, pool: DemoPool) -> None:
        self.demo_pool = pool
        self._pool_slots = self.pvp.slot_ids(pool.a, pool.b)

    def release(self) -> None:
        """Drop the masked LM and return its memory."""
        self.mlm.release()

    @classmethod
    def check(cls, spec: TaskSpec, pattern: int, tokenizer: Any, model_config: ModelConfig,
              kind_config: KindConfig, a: list[str], b: list[str | None]) -> PatternCheck:
        """Template and label words fit the tokenizer; how many sample texts get truncated."""
        pvp = cls._pvp(spec, pattern, tokenizer, model_config, kind_config)
        encoded = pvp.encode_texts(a, b) if a else []
        shape = backbone_shape(model_config)
        verbalizer = pvp.verbalizer
        words = {word: tokenizer.convert_ids_to_tokens(ids) for label in verbalizer.label_names
                 for word, ids in zip(verbalizer.words[label], verbalizer.token_ids[label], strict=True)}
        return PatternCheck(len(encoded), sum(1 for e in encoded if e.truncated),
                            trainable=None if shape is None else cls._trainable(pvp, kind_config, shape), words=words)

    @classmethod
    def _trainable(cls, pvp: PVP, kind_config: KindConfig, shape: BackboneShape) -> int | None:
        """Parameters that will train: the whole masked LM."""
        return shape.parameters

    # -- the model ------------------------------------------------------------------------------
    @property
    def module(self) -> nn.Module:
        return self.mlm.model

    @property
    def device(self) -> torch.device:
        return self.mlm.device

    @property
    def autocast_dtype(self) -> torch.dtype | None:
        return self.mlm.autocast_dtype

    def autocast(self) -> contextlib.AbstractContextManager:
        return self.mlm.autocast()

    # -- encoding -------------------------------------------------------------------------
    def encode(self, a: list[str], b: list[str | None]) -> dict[int, list[Encoded]] | DemoEncodings:
        """Encodings keyed by number of masks (just {1: ...} for single-token verbalizers); with ``{demos}``, the
        queries' text slots and what each may draw (demonstrations are written in per batch)."""
        if not self.pvp.has_demos:
            return {n: self.pvp.encode_texts(a, b, n_masks=n) for n in self._mask_counts()}
        if self.demo_pool is None:
            raise ValueError(f"pattern {self.pvp.pattern_id} ({self.pvp.template!r}) has {{demos}} but the model "
                             "was given no labelled examples to draw them from (PatternModel.use_labeled)")
        keys = [text_key(x, y) for x, y in zip(a, b, strict=True)]
        keep = demo_settings(self.kind_config).filter
        similarity = None
        if keep < 1.0 and a:
            similarity = self._embed(a, b) @ self._embed(self.demo_pool.a, self.demo_pool.b).T
        return DemoEncodings(self.pvp.slot_ids(a, b), keys,
                             candidates(self.demo_pool, self.n_labels, keys, similarity, keep))

    def _mask_counts(self) -> list[int]:
        return sorted({len(ids) for per in self.pvp.verbalizer.token_ids.values() for ids in per})

    def lengths(self, encodings: dict[int, list[Encoded]] | DemoEncodings) -> list[int]:
        if isinstance(encodings, DemoEncodings):
            return [sum(len(ids) for ids in slots.values()) for slots in encodings.slots]
        return [len(e.input_ids) for e in encodings[min(encodings)]]

    def encode_unlabeled(self, a: list[str], b: list[str | None]) -> list[Encoded]:
        """Unlabelled texts in the pattern (one mask, no demonstrations) for the auxiliary MLM loss."""
        return self.pvp.encode_texts(a, b, n_masks=1)

    def _rows(self, encodings: dict[int, list[Encoded]] | DemoEncodings, indices: list[int],
              demo_set: int | None) -> dict[int, list[Encoded]]:
        """The batch's encodings per mask count; with demonstrations, written in now: a fresh training draw
        (``demo_set`` None) or the example's fixed ``demo_set``-th inference draw."""
        if not isinstance(encodings, DemoEncodings):
            return {n: [encoded[i] for i in indices] for n, encoded in encodings.items()}
        demos = []
        for i in indices:
            rng = self._demo_rng if demo_set is None else inference_rng(encodings.keys[i], demo_set)
            demos.append([(label, self._pool_slots[row]) for label, row in draw(encodings.choices[i], rng)])
        return {n: [self.pvp.assemble(encodings.slots[i], n, d) for i, d in zip(indices, demos, strict=True)]
                for n in self._mask_counts()}

    @torch.inference_mode()
    def _embed(self, a: list[str], b: list[str | None], batch_size: int = 32) -> np.ndarray:
        """Unit-length mean-pooled last hidden states of plain texts (the demonstration filter's similarity)."""
        was_training = self.module.training
        self.train(False)
        tokenizer, out = self.mlm.tokenizer, []
        for start in range(0, len(a), batch_size):
            pair = b[start : start + batch_size] if any(b) else None
            enc = tokenizer(a[start : start + batch_size], [t or "" for t in pair] if pair else None,
                            truncation=True, max_length=self.pvp.max_length, padding=True, return_tensors="pt")
            att = enc["attention_mask"]
            batch = Batch([], enc["input_ids"], att, torch.zeros((att.size(0), 1), dtype=torch.long))
            with self.autocast():
                hidden = self.mlm.encode(batch.to(self.device)).float()
            mask = att.to(self.device).unsqueeze(-1).float()
            mean = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1)
            out.append(torch.nn.functional.normalize(mean, dim=-1).cpu().numpy())
        self.train(was_training)
        return np.concatenate(out) if out else np.zeros((0, 0), dtype=np.float32)

    # -- scores -----------------------------------------------------------------------------
    def label_logits(self, encodings: dict[int, list[Encoded]] | DemoEncodings, indices: list[int]) -> torch.Tensor:
        """(B, |L|) label logits with gradients; multi-token words scored in one parallel pass."""
        return self._scores(self._rows(encodings, indices, None), decode=False)

    def inference_logits(self, encodings: dict[int, list[Encoded]] | DemoEncodings,
                         indices: list[int]) -> torch.Tensor:
        """Single-token: as in training; multi-token: most-confident-first decoding of every word. With
        demonstrations: the mean over ``demos.sets`` fixed draws."""
        if not isinstance(encodings, DemoEncodings):
            return self._scores(self._rows(encodings, indices, None), decode=self.multi_token)
        sets = [self._scores(self._rows(encodings, indices, s), decode=self.multi_token)
                for s in range(demo_settings(self.kind_config).sets)]
        return torch.stack(sets).mean(0)

    def _scores(self, rows: dict[int, list[Encoded]], decode: bool) -> torch.Tensor:
        pad = self._pad()
        positions = list(range(len(rows[min(rows)])))
        if not self.multi_token:
            batch = collate(rows[1], positions, pad).to(self.mlm.device)
            return label_scores(self._mask_logits(batch)[:, 0], self._flat_ids, self._owner, self.n_labels)
        if not decode:
            word_scores: dict[int, torch.Tensor] = {}
            for n, encoded in rows.items():
                batch = collate(encoded, positions, pad).to(self.mlm.device)
                word_scores[n] = torch.log_softmax(self._mask_logits(batch), dim=-1)  # (B, n, V)
            return self._combine(lambda ids: word_scores[len(ids)][:, torch.arange(len(ids)), ids].sum(-1))
        cache: dict[tuple[int, ...], torch.Tensor] = {}

        def word_score(ids: list[int]) -> torch.Tensor:
            key = tuple(ids)
            if key not in cache:
                batch = collate(rows[len(ids)], positions, pad).to(self.mlm.device)
                cache[key] = self._decode_word(batch, torch.tensor(ids, device=self.mlm.device))
            return cache[key]

        return self._combine(word_score)

    def aux_loss(self, encodings: list[Encoded], indices: list[int], generator: torch.Generator,
                 config: TrainConfig) -> torch.Tensor:
        """PET's masked-LM loss: BERT masking of the unlabelled rows, CE at the masked positions."""
        unl = collate(encodings, indices, self._pad())
        ids, labels = mask_tokens(unl.input_ids, unl.attention_mask, self.mlm.tokenizer, config.mlm_probability,
                                  generator)
        unl.input_ids = ids
        return mlm_loss(self.mlm, unl.to(self.mlm.device), labels.to(self.mlm.device), encode=self._hidden)

    def _hidden(self, batch: Batch) -> torch.Tensor:
        """Last hidden states (B, T, H) of the encoder for a batch (kinds with learned prompts override it)."""
        return self.mlm.encode(batch)

    def _mask_logits(self, batch: Batch) -> torch.Tensor:
        """Vocabulary logits at the mask positions only: (B, M, V), float32."""
        return self.mlm.vocab_logits(gather_positions(self._hidden(batch), batch.mask_positions)).float()

    def _pad(self) -> int:
        return self.mlm.tokenizer.pad_token_id or 0

    def _combine(self, word_score: Callable[[list[int]], torch.Tensor]) -> torch.Tensor:
        columns = []
        for label in self.pvp.verbalizer.label_names:
            per_word = [word_score(ids) for ids in self.pvp.verbalizer.token_ids[label]]
            columns.append(torch.stack(per_word, 0).mean(0))
        return torch.stack(columns, -1)

    def _decode_word(self, batch: Batch, word: torch.Tensor) -> torch.Tensor:
        """Sum of log-probs of ``word`` filling the masks, fixing the most confident mask first."""
        ids = batch.input_ids.clone()
        n = word.numel()
        rows = torch.arange(ids.size(0), device=ids.device)
        remaining = torch.ones(ids.size(0), n, dtype=torch.bool, device=ids.device)
        total = torch.zeros(ids.size(0), device=ids.device)
        for _ in range(n):
            hidden = self._hidden(Batch(batch.indices, ids, batch.attention_mask, batch.mask_positions,
                                        batch.soft_positions))
            logprobs = torch.log_softmax(
                self.mlm.vocab_logits(gather_positions(hidden, batch.mask_positions)).float(), -1
            )  # (B, n, V)
            target = logprobs.gather(2, word.view(1, n, 1).expand(ids.size(0), n, 1)).squeeze(-1)  # (B, n)
            target = target.masked_fill(~remaining, float("-inf"))
            best = target.argmax(-1)
            total += target[rows, best]
            remaining[rows, best] = False
            ids[rows, batch.mask_positions[rows, best]] = word[best]
        return total
