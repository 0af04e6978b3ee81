"""What the kinds with learned prompts share: the LM and the prompt encoder as one module, the count of what
trains, and an adapter record that names the base backbone by content hash."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from pet_core.keys import backbone_fingerprint
from pet_core.kinds.cloze.model import ClozeModel
from pet_core.kinds.prompts import save_adapter, trainable_parameters


class LearnedPromptModel(ClozeModel):
    """A cloze model with a learned prompt encoder (``self.encoder``) beside its masked LM."""

    encoder: nn.Module

    def _attach(self, encoder: nn.Module, finetune_lm: bool) -> None:
        """Hold ``encoder`` with the LM (frozen unless ``finetune_lm``) as the module that trains."""
        self.encoder = encoder.to(self.mlm.device)
        self.mlm.model.requires_grad_(finetune_lm)
        self._module = nn.ModuleDict({"lm": self.mlm.model, "encoder": self.encoder})

    @property
    def module(self) -> nn.Module:
        return self._module

    def trainable_parameters(self) -> int:
        """Parameters that train (the prompt encoder, plus the LM when it is fine-tuned)."""
        return trainable_parameters(self._module)

    def save_adapter(self, out_dir: str | Path, **info: Any) -> None:
        """The encoder's weights and a record of the kind, ``info`` and the base backbone's content hash."""
        backbone = self.mlm.config.backbone
        save_adapter(out_dir, self.encoder, {"kind": self.kind, **info,
                                             "base": {"backbone": backbone,
                                                      "fingerprint": backbone_fingerprint(backbone)}})

    def release(self) -> None:
        """Drop the LM and the prompt encoder."""
        self.__dict__.pop("_module", None)
        self.__dict__.pop("encoder", None)
        super().release()
