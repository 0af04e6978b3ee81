"""LM-BFF's demonstrations for the cloze kinds: a template's ``{demos}`` slot holds one labelled example per
label, each written in the same pattern with its label's word in place of the mask
(``… It was [MASK]. [SEP] <a of T> It was great. [SEP] <a of T> It was terrible.``).

As in princeton-nlp/LM-BFF (``src/dataset.py``): during training every step draws a fresh demonstration
of each label from T, never the query itself; at inference ``demos.sets`` sets are drawn per example and
their label logits averaged; optionally only the most similar fraction of each label's examples may be
drawn (LM-BFF keeps half, by SBERT cosine; here by the model's own mean-pooled encoder, which for the
default backbone *is* a sentence encoder). The draw at inference depends only on the example's text and
the set's number, so scores do not depend on batching or chunking. The pool (T as trained on) is saved
beside the model as Parquet, so scoring needs nothing but the model folder.
"""

from __future__ import annotations

import hashlib
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import BaseModel, Field, model_serializer

from pet_core.artifacts import ArtifactError
from pet_core.config import StageConfig

DEMO_POOL = "demonstrations.parquet"


class DemoSettings(StageConfig):
    """How a ``{demos}`` slot is filled at inference."""

    sets: int = Field(default=4, ge=1, le=64, description="Demonstration sets drawn per example at inference; "
                      "their label logits are averaged (LM-BFF: 16). Each set costs one forward pass.")
    filter: float = Field(default=1.0, gt=0, le=1, description="Draw only from this fraction of each label's "
                          "examples, the most similar to the query by the model's mean-pooled encoder (LM-BFF: "
                          "0.5, by SBERT); 1.0: no filter.")


class DemoFields(BaseModel):
    """The ``demos`` setting of the cloze-family kind sections; left out of the section's dict while unset, so
    kinds whose templates have no ``{demos}`` keep their keys and records as they were."""

    demos: DemoSettings | None = Field(default=None, description="Settings of a template's {demos} slot "
                                       "(LM-BFF demonstrations); unset: 4 sets, no similarity filter.")

    @model_serializer(mode="wrap")
    def _unset_demos_left_out(self, handler: Any) -> Any:
        data = handler(self)
        if isinstance(data, dict) and data.get("demos") is None:
            data.pop("demos", None)
        return data


def demo_settings(kind_config: BaseModel) -> DemoSettings:
    """A kind section's demonstration settings (defaults for sections without them, e.g. plug-in kinds)."""
    return getattr(kind_config, "demos", None) or DemoSettings()


def text_key(a: str, b: str | None) -> str:
    """A digest of an example's texts: the query is excluded by it and inference draws are seeded by it."""
    return hashlib.sha1(f"{a}\x1f{b or ''}".encode()).hexdigest()


@dataclass
class DemoPool:
    """The labelled examples demonstrations are drawn from (label as index in the spec's order)."""

    a: list[str]
    b: list[str | None]
    labels: list[int]

    @classmethod
    def from_table(cls, table: pa.Table, label_names: Sequence[str]) -> DemoPool:
        """T's texts and labels."""
        index = {name: i for i, name in enumerate(label_names)}
        return cls(table.column("a").to_pylist(), table.column("b").to_pylist(),
                   [index[label] for label in table.column("label").to_pylist()])

    @property
    def keys(self) -> list[str]:
        return [text_key(a, b) for a, b in zip(self.a, self.b, strict=True)]

    def save(self, out_dir: str | Path) -> None:
        """``demonstrations.parquet`` in ``out_dir``."""
        table = pa.table({"a": pa.array(self.a, pa.string()), "b": pa.array(self.b, pa.string()),
                          "label": pa.array(self.labels, pa.int32())})
        pq.write_table(table, Path(out_dir) / DEMO_POOL)  # out_dir is the model's temporary folder

    @classmethod
    def load(cls, model_dir: str | Path) -> DemoPool:
        """The pool a model with ``{demos}`` was trained with (ArtifactError when it is missing)."""
        path = Path(model_dir) / DEMO_POOL
        if not path.is_file():
            raise ArtifactError(f"{model_dir} has no {DEMO_POOL}: its pattern has {{demos}}, but the model was "
                                "saved without the examples its demonstrations come from; retrain it")
        table = pq.read_table(path)
        return cls(table.column("a").to_pylist(), table.column("b").to_pylist(), table.column("label").to_pylist())


@dataclass
class DemoEncodings:
    """A table's queries waiting for their demonstrations: text-slot ids, text digests, and per query and label
    the pool rows it may draw from (itself excluded, the similarity filter applied)."""

    slots: list[dict[int, list[int]]]
    keys: list[str]
    choices: list[list[list[int]]]


def candidates(pool: DemoPool, n_labels: int, query_keys: Sequence[str], similarity: np.ndarray | None = None,
               keep: float = 1.0) -> list[list[list[int]]]:
    """Per query and label, the pool rows it may draw: not the query's own text; with ``similarity``
    (queries × pool) only the ``keep`` most similar fraction of each label's rows (at least one)."""
    pool_keys = pool.keys
    by_label = [[r for r, label in enumerate(pool.labels) if label == li] for li in range(n_labels)]
    out = []
    for q, key in enumerate(query_keys):
        per_label = []
        for rows in by_label:
            rows = [r for r in rows if pool_keys[r] != key]
            if similarity is not None and keep < 1.0 and rows:
                rows = sorted(rows, key=lambda r: -similarity[q, r])[: max(1, math.ceil(keep * len(rows)))]
            per_label.append(rows)
        out.append(per_label)
    return out


def draw(choices: list[list[int]], rng: random.Random) -> list[tuple[int, int]]:
    """One demonstration per label that has candidates: (label index, pool row), in label order."""
    return [(label, rows[rng.randrange(len(rows))]) for label, rows in enumerate(choices) if rows]


def inference_rng(key: str, set_index: int) -> random.Random:
    """The generator of an example's ``set_index``-th demonstration set at inference (fixed by its text)."""
    return random.Random(f"{key}:{set_index}")
