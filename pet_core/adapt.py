"""Backbone adaptation: continued masked-LM training on unlabelled text, learning a missing MLM head.

Sentence encoders (e.g. all-MiniLM-L6-v2) ship without an MLM head; as loaded they predict noise.
This stage trains the whole model (lowest layers optionally frozen) with the standard 15 % masking
on the task's own unlabelled text, with a higher learning rate for newly initialised head weights.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow as pa
import torch

from pet_core.artifacts import atomic_dir, write_json
from pet_core.callbacks import Callback, CallbackList
from pet_core.config import AdaptConfig, ModelConfig
from pet_core.loop import OptimLoop
from pet_core.modeling import MaskedLM, collate
from pet_core.optim import cycle_batches, mask_tokens, mlm_loss, seed_everything
from pet_core.pvp import Encoded

ADAPT_RECORD = "adapt_record.json"


def plain_texts(table: pa.Table) -> list[str]:
    """``a`` and ``b`` of each example joined into one text."""
    return [f"{a} {b}" if b else a for a, b in zip(table.column("a").to_pylist(), table.column("b").to_pylist(),
                                                   strict=True)]


def _freeze_lowest(mlm: MaskedLM, n_layers: int) -> None:
    if n_layers <= 0:
        return
    base = mlm.model.base_model
    for param in base.embeddings.parameters():
        param.requires_grad = False
    for layer in base.encoder.layer[:n_layers]:
        for param in layer.parameters():
            param.requires_grad = False


def adapt_backbone(model_config: ModelConfig, config: AdaptConfig, unlabeled: pa.Table, out_dir: str | Path,
                   callbacks: list[Callback] | None = None) -> dict[str, Any]:
    """Train the backbone as a masked LM on ``unlabeled`` and save it to ``out_dir`` (safetensors)."""
    events = CallbackList(callbacks or [])
    if unlabeled.num_rows == 0:
        raise ValueError("backbone adaptation needs unlabelled text, but D is empty")
    generator = seed_everything(config.seed)
    mlm = MaskedLM.load(model_config, require_head=False)
    new_head = set(mlm.missing_head_keys)
    _freeze_lowest(mlm, config.freeze_layers)
    head_ids = {id(p): config.head_learning_rate for n, p in mlm.model.named_parameters() if n in new_head}
    loop = OptimLoop(mlm.model, config, config.max_steps, mlm.autocast_dtype, param_lrs=head_ids)
    texts = plain_texts(unlabeled)
    encoded = [Encoded(ids, []) for ids in mlm.tokenizer(texts, truncation=True,
                                                         max_length=config.max_seq_length)["input_ids"]]
    batches = cycle_batches(len(encoded), config.batch_size, generator)
    pad = mlm.tokenizer.pad_token_id or 0
    mlm.model.train()

    def micro_batch(step: int) -> torch.Tensor:
        batch = collate(encoded, next(batches), pad)
        ids, labels = mask_tokens(batch.input_ids, batch.attention_mask, mlm.tokenizer, config.mlm_probability,
                                  generator)
        batch.input_ids = ids
        with mlm.autocast():
            return mlm_loss(mlm, batch.to(mlm.device), labels.to(mlm.device))

    loss_value = loop.run(micro_batch, "adapt", events)
    loop.close()
    step = config.max_steps
    mlm.model.eval()
    # No timings in here: this record is hashed with the backbone (the store's record holds wall_s).
    info = {"steps": step, "final_loss": loss_value, "new_head_weights": sorted(new_head), "texts": len(texts),
            "config": config.to_dict()}
    for param in mlm.model.parameters():
        param.requires_grad = True
    with atomic_dir(out_dir) as tmp:
        mlm.save(tmp)
        write_json(info, tmp / ADAPT_RECORD)
    mlm.release()
    events.on_stage_end("adapt", {"steps": step, "final_loss": loss_value})
    return info
