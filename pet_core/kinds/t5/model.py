"""The ``t5`` kind: one pattern on a seq2seq LM, scored text-to-text.

The encoder reads the pattern with ``{mask}`` written as the sentinel ``<extra_id_0>``. Every label word
becomes the decoder target ``<extra_id_0> WORD <extra_id_1>`` (T5's span-corruption answer; multi-token
words need nothing special). A word's score is the summed log-likelihood of its target tokens (or their mean,
or the log-probability of the word's first token only, per ``score``); a label's logit is the mean of its
words' scores. One encoder pass per batch, then one decoder pass over every (row, word) pair.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar, Self

import torch
from torch import nn
from transformers import AutoModelForSeq2SeqLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase
from transformers.modeling_outputs import BaseModelOutput

from pet_core.backbone import BackboneError, loadable_backbone
from pet_core.config import ModelConfig
from pet_core.kinds.base import PatternCheck, PatternModel
from pet_core.kinds.footprint import backbone_parameters
from pet_core.kinds.registry import KindConfig
from pet_core.kinds.t5.config import T5KindConfig, T5Score
from pet_core.memory import configure_allocator, release_memory
from pet_core.modeling import collate, resolve_device, resolve_precision
from pet_core.pvp import PVP, Encoded
from pet_core.spec import TaskSpec

OPEN, CLOSE = "<extra_id_0>", "<extra_id_1>"  # the sentinel that replaces {mask}, and the one closing its span


def sentinel_ids(tokenizer: PreTrainedTokenizerBase, backbone: str) -> tuple[int, int]:
    """The ids of ``<extra_id_0>`` and ``<extra_id_1>``; ValueError naming the backbone when it has none."""
    ids = []
    for token in (OPEN, CLOSE):
        found = tokenizer.convert_tokens_to_ids(token)
        if found is None or found == tokenizer.unk_token_id:
            raise ValueError(f"kind 't5': the tokenizer of {backbone!r} has no sentinel token {token} "
                             "(not a T5-style seq2seq model): use a T5 backbone (t5-base, google/flan-t5-base) "
                             "or another kind for this pattern")
        ids.append(found)
    return ids[0], ids[1]


class T5Model(PatternModel):
    """Label logits of one pattern on a seq2seq LM (T5 text-to-text)."""

    kind = "t5"
    masked_lm: ClassVar[bool] = False

    def __init__(self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, pvp: PVP,
                 model_config: ModelConfig, kind_config: KindConfig | None = None):
        self.kind_config = kind_config or T5KindConfig()
        assert isinstance(self.kind_config, T5KindConfig)
        self.settings = self.kind_config
        self.config = model_config
        self._device = resolve_device(model_config.device)
        self._autocast_dtype = resolve_precision(model_config.precision, self._device)
        self.model = model.to(self._device)
        self.tokenizer = tokenizer
        self.pvp = pvp
        self.n_labels = len(pvp.verbalizer.label_names)
        self._targets, self._target_mask, self._owner = self._word_targets()

    # -- life cycle ---------------------------------------------------------------------------
    @classmethod
    def create(cls, spec: TaskSpec, pattern: int, model_config: ModelConfig, kind_config: KindConfig) -> Self:
        """The backbone's seq2seq LM with this pattern."""
        return cls._from(model_config.backbone, spec, pattern, model_config, kind_config)

    @classmethod
    def load(cls, spec: TaskSpec, pattern: int, model_dir: str | Path, model_config: ModelConfig,
             kind_config: KindConfig) -> Self:
        """A fine-tuned seq2seq LM saved by ``save``."""
        return cls._from(str(model_dir), spec, pattern, model_config, kind_config)

    @classmethod
    def _from(cls, source: str, spec: TaskSpec, pattern: int, model_config: ModelConfig,
              kind_config: KindConfig) -> Self:
        name = loadable_backbone(source)
        configure_allocator()
        try:
            tokenizer = AutoTokenizer.from_pretrained(name, trust_remote_code=model_config.trust_remote_code)
            model = AutoModelForSeq2SeqLM.from_pretrained(name, dtype=torch.float32, **model_config.load_options())
        except (OSError, ValueError) as err:
            raise BackboneError(f"kind 't5': cannot load a seq2seq LM from {name!r}: {err}") from err
        pvp = cls._pvp(spec, pattern, tokenizer, model_config)
        return cls(model, tokenizer, pvp, model_config, kind_config)

    @classmethod
    def _pvp(cls, spec: TaskSpec, pattern: int, tokenizer: Any, model_config: ModelConfig) -> PVP:
        """The pattern with ``{mask}`` as ``<extra_id_0>``; label words may be several tokens."""
        template = spec.patterns[pattern].template if 0 <= pattern < len(spec.patterns) else ""
        if "<extra_id_" in template:
            raise ValueError(f"pattern {pattern} ({template!r}) writes a T5 sentinel itself: write {{mask}} where "
                             f"the answer goes (kind 't5' puts {OPEN} there)")
        open_id, _ = sentinel_ids(tokenizer, model_config.backbone)
        pvp = PVP(spec.model_copy(update={"multi_token": True}), pattern, tokenizer, model_config.max_seq_length,
                  mask_id=open_id)
        if pvp.n_soft:
            raise ValueError(f"pattern {pattern} ({pvp.template!r}) has {{soft}} slots, which kind 't5' cannot "
                             "fill; use a template without them")
        if pvp.has_demos:
            raise ValueError(f"pattern {pattern} ({pvp.template!r}) has {{demos}}, which kind 't5' does not "
                             "write; demonstrations are for the cloze kinds (cloze, ptuning, prompt_tuning, "
                             "prefix_tuning)")
        return pvp

    def save(self, out_dir: str | Path) -> None:
        """The whole seq2seq LM and its tokenizer (safetensors)."""
        self.model.save_pretrained(out_dir, safe_serialization=True)
        self.tokenizer.save_pretrained(out_dir)

    def release(self) -> None:
        """Drop the model and return its memory."""
        self.__dict__.pop("model", None)
        release_memory()

    @classmethod
    def check(cls, spec: TaskSpec, pattern: int, tokenizer: Any, model_config: ModelConfig,
              kind_config: KindConfig, a: list[str], b: list[str | None]) -> PatternCheck:
        """The backbone has T5's sentinels, the words tokenize; how many sample texts get truncated."""
        pvp = cls._pvp(spec, pattern, tokenizer, model_config)
        encoded = pvp.encode_texts(a, b) if a else []
        verbalizer = pvp.verbalizer
        words = {word: tokenizer.convert_ids_to_tokens(ids) for label in verbalizer.label_names
                 for word, ids in zip(verbalizer.words[label], verbalizer.token_ids[label], strict=True)}
        return PatternCheck(len(encoded), sum(1 for e in encoded if e.truncated),
                            trainable=backbone_parameters(model_config), words=words)

    # -- the model ------------------------------------------------------------------------------
    @property
    def module(self) -> nn.Module:
        return self.model

    @property
    def device(self) -> torch.device:
        return self._device

    @property
    def autocast_dtype(self) -> torch.dtype | None:
        return self._autocast_dtype

    @contextlib.contextmanager
    def autocast(self) -> Iterator[None]:
        """bf16/fp16 autocast when configured, else nothing."""
        if self._autocast_dtype is None:
            yield
        else:
            with torch.autocast(self._device.type, dtype=self._autocast_dtype):
                yield

    # -- encoding -------------------------------------------------------------------------------
    def encode(self, a: list[str], b: list[str | None]) -> list[Encoded]:
        """The pattern's encoder input per row (one sentinel where ``{mask}`` is)."""
        return self.pvp.encode_texts(a, b, n_masks=1)

    def lengths(self, encodings: list[Encoded]) -> list[int]:
        return [len(e.input_ids) for e in encodings]

    def _word_targets(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Decoder targets of every label word (W, T) padded with pad ids, their validity mask, and each word's
        label index (W,)."""
        open_id, close_id = sentinel_ids(self.tokenizer, self.config.backbone)
        rows, owner = [], []
        for li, label in enumerate(self.pvp.verbalizer.label_names):
            for ids in self.pvp.verbalizer.token_ids[label]:
                rows.append([open_id, *ids, close_id])
                owner.append(li)
        width = max(len(r) for r in rows)
        pad = self._pad()
        targets = torch.tensor([r + [pad] * (width - len(r)) for r in rows], dtype=torch.long)
        valid = torch.tensor([[True] * len(r) + [False] * (width - len(r)) for r in rows])
        return targets.to(self._device), valid.to(self._device), torch.tensor(owner, device=self._device)

    def _pad(self) -> int:
        return self.tokenizer.pad_token_id or 0

    # -- scores ---------------------------------------------------------------------------------
    def word_log_probs(self, encodings: list[Encoded], indices: list[int]) -> torch.Tensor:
        """(B, W, T) log-probabilities of every word's target tokens (0 at padding), with gradients."""
        batch = collate(encodings, indices, self._pad()).to(self._device)
        n_rows, (n_words, width) = len(indices), self._targets.shape
        hidden = self.model.get_encoder()(input_ids=batch.input_ids, attention_mask=batch.attention_mask)[0]
        start = self.model.config.decoder_start_token_id
        start = self._pad() if start is None else start
        decoder_in = torch.cat([torch.full((n_words, 1), start, device=self._device), self._targets[:, :-1]], 1)
        out = self.model(encoder_outputs=BaseModelOutput(last_hidden_state=hidden.repeat_interleave(n_words, 0)),
                         attention_mask=batch.attention_mask.repeat_interleave(n_words, 0),
                         decoder_input_ids=decoder_in.repeat(n_rows, 1), use_cache=False)
        logits = out.logits.float().view(n_rows, n_words, width, -1)
        target = self._targets.expand(n_rows, -1, -1).unsqueeze(-1)
        token = logits.gather(-1, target).squeeze(-1) - torch.logsumexp(logits, -1)  # (B, W, T)
        return token.masked_fill(~self._target_mask, 0.0)

    def label_logits(self, encodings: list[Encoded], indices: list[int]) -> torch.Tensor:
        """(B, |L|) label logits with gradients: each label's mean word score."""
        token = self.word_log_probs(encodings, indices)
        if self.settings.score is T5Score.first:
            words = token[:, :, 1]  # the word's first token (position 0 is the opening sentinel)
        else:
            words = token.sum(-1)
            if self.settings.score is T5Score.mean:
                words = words / self._target_mask.sum(-1)
        summed = torch.zeros(words.size(0), self.n_labels, device=words.device, dtype=words.dtype)
        summed.index_add_(1, self._owner, words)
        return summed / torch.bincount(self._owner, minlength=self.n_labels).to(words.dtype)
