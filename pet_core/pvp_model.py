"""A PVP model: a masked LM composed with one pattern-verbalizer pair (template, verbalizer, model).

Single-token verbalizers score a label by the mean MLM logit of its words at the one mask.
Multi-token words get one mask per token; their score is the sum of token log-probabilities,
decoded most-confident-first at inference (one batched pass per step) and in one parallel pass
during training.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch

from pet_core.modeling import Batch, MaskedLM, collate, gather_positions, label_scores, length_sorted_batches
from pet_core.pvp import PVP, Encoded

ProgressFn = Callable[[int, int], None]


class PVPModel:
    """Label logits of one pattern on one masked LM."""

    def __init__(self, mlm: MaskedLM, pvp: PVP):
        self.mlm = mlm
        self.pvp = pvp
        self.n_labels = len(pvp.verbalizer.label_names)
        self.multi_token = pvp.verbalizer.max_tokens > 1
        self._flat_ids, self._owner = pvp.verbalizer.single_token_ids() if not self.multi_token else ([], [])

    # -- encoding -------------------------------------------------------------------------
    def encode(self, a: list[str], b: list[str | None]) -> dict[int, list[Encoded]]:
        """Encodings keyed by number of masks (just {1: ...} for single-token verbalizers)."""
        lengths = {len(ids) for per in self.pvp.verbalizer.token_ids.values() for ids in per}
        return {n: self.pvp.encode_texts(a, b, n_masks=n) for n in sorted(lengths)}

    # -- differentiable scores (training) ---------------------------------------------------
    def batch_logits(self, encodings: dict[int, list[Encoded]], indices: Sequence[int]) -> torch.Tensor:
        """(B, |L|) label logits with gradients; multi-token words scored in one parallel pass."""
        pad = self.mlm.tokenizer.pad_token_id or 0
        if not self.multi_token:
            batch = collate(encodings[1], indices, pad).to(self.mlm.device)
            return label_scores(self.mlm.mask_logits(batch)[:, 0], self._flat_ids, self._owner, self.n_labels)
        word_scores: dict[int, torch.Tensor] = {}
        for n, encoded in encodings.items():
            batch = collate(encoded, indices, pad).to(self.mlm.device)
            logprobs = torch.log_softmax(self.mlm.mask_logits(batch), dim=-1)  # (B, n, V)
            word_scores[n] = logprobs
        return self._combine(lambda ids: word_scores[len(ids)][:, torch.arange(len(ids)), ids].sum(-1))

    def _combine(self, word_score: Callable[[list[int]], torch.Tensor]) -> torch.Tensor:
        columns = []
        for label in self.pvp.verbalizer.label_names:
            per_word = [word_score(ids) for ids in self.pvp.verbalizer.token_ids[label]]
            columns.append(torch.stack(per_word, 0).mean(0))
        return torch.stack(columns, -1)

    # -- inference --------------------------------------------------------------------------
    @torch.inference_mode()
    def predict(self, a: list[str], b: list[str | None], batch_size: int,
                progress: ProgressFn | None = None) -> np.ndarray:
        """(n, |L|) float32 label logits, in the input order; batches sorted by length."""
        encodings = self.encode(a, b)
        out = np.zeros((len(a), self.n_labels), dtype=np.float32)
        pad = self.mlm.tokenizer.pad_token_id or 0
        reference = encodings[min(encodings)]
        done = 0
        for indices in length_sorted_batches(reference, batch_size):
            with self.mlm.autocast():
                if self.multi_token:
                    logits = self._decode_batch(encodings, indices, pad)
                else:
                    batch = collate(reference, indices, pad).to(self.mlm.device)
                    logits = label_scores(self.mlm.mask_logits(batch)[:, 0], self._flat_ids, self._owner,
                                          self.n_labels)
            out[indices] = logits.float().cpu().numpy()
            done += len(indices)
            if progress is not None:
                progress(done, len(a))
        return out

    def _decode_batch(self, encodings: dict[int, list[Encoded]], indices: list[int], pad: int) -> torch.Tensor:
        """Most-confident-first decoding of every multi-token word for a batch."""
        cache: dict[tuple[int, ...], torch.Tensor] = {}

        def word_score(ids: list[int]) -> torch.Tensor:
            key = tuple(ids)
            if key not in cache:
                batch = collate(encodings[len(ids)], indices, pad).to(self.mlm.device)
                cache[key] = self._decode_word(batch, torch.tensor(ids, device=self.mlm.device))
            return cache[key]

        return self._combine(word_score)

    def _decode_word(self, batch: Batch, word: torch.Tensor) -> torch.Tensor:
        """Sum of log-probs of ``word`` filling the masks, fixing the most confident mask first."""
        ids = batch.input_ids.clone()
        n = word.numel()
        rows = torch.arange(ids.size(0), device=ids.device)
        remaining = torch.ones(ids.size(0), n, dtype=torch.bool, device=ids.device)
        total = torch.zeros(ids.size(0), device=ids.device)
        for _ in range(n):
            hidden = self.mlm.encode(Batch(batch.indices, ids, batch.attention_mask, batch.mask_positions))
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
