"""The registry of pattern-model kinds: a name, its config section and its model class.

In the manner of peft's ``register_peft_method``: one call registers a kind, a second registration of
the same name is an error. Nothing is registered at import: the built-in kinds are added when the
default registry is first used, then any plug-in a package declares under the ``petflow.kinds`` entry
point group (a callable taking the registry). Model classes may be given as ``"module:Class"`` so that
validating a config imports no torch.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any

from pydantic import Field

from pet_core.config import StageConfig

if TYPE_CHECKING:
    from pet_core.kinds.base import PatternModel

ENTRY_POINT_GROUP = "petflow.kinds"
DEFAULT_KIND = "cloze"
TRAIN_RECORD = "train_record.json"  # written beside every trained pattern model; holds its kind section


class KindError(ValueError):
    """A kind cannot be registered or found (the message names it and the known kinds)."""


class KindConfig(StageConfig):
    """A kind's section of the run config; each kind subclasses it with ``kind: Literal[<name>]``."""

    kind: str = Field(description="The pattern-model kind (pet_core.kinds): 'cloze' is PET's.")


@dataclass(frozen=True)
class KindEntry:
    """One registered kind."""

    name: str
    config_class: type[KindConfig]
    model: type | str  # the PatternModel subclass, or "module:Class" imported on first use

    def model_class(self) -> type[PatternModel]:
        """The model class (imported now if it was registered by name)."""
        if not isinstance(self.model, str):
            return self.model
        module, _, attr = self.model.partition(":")
        return getattr(importlib.import_module(module), attr)

    def config(self, section: dict[str, Any] | None = None) -> KindConfig:
        """The kind's validated section (``kind`` filled in)."""
        return self.config_class.model_validate({**(section or {}), "kind": self.name})


class KindRegistry:
    """Kinds by name; registering a name twice raises KindError."""

    def __init__(self) -> None:
        self._entries: dict[str, KindEntry] = {}

    def register(self, name: str, config_class: type[KindConfig], model: type | str) -> KindEntry:
        """Add a kind; its config class must default ``kind`` to ``name``."""
        if name in self._entries:
            raise KindError(f"pattern-model kind {name!r} is already registered "
                            f"({self._entries[name].model}); register yours under another name")
        if not (isinstance(config_class, type) and issubclass(config_class, KindConfig)):
            raise KindError(f"kind {name!r}: its config class must subclass pet_core.kinds.KindConfig")
        field = config_class.model_fields["kind"]
        if field.default != name:
            raise KindError(f"kind {name!r}: {config_class.__name__}.kind must default to {name!r}, "
                            f"not {field.default!r}")
        entry = KindEntry(name, config_class, model)
        self._entries[name] = entry
        return entry

    def get(self, name: str) -> KindEntry:
        """The entry of a kind, or KindError listing the known kinds."""
        try:
            return self._entries[name]
        except KeyError:
            raise KindError(f"unknown pattern-model kind {name!r}; known kinds: "
                            f"{', '.join(self.names())}") from None

    def names(self) -> list[str]:
        """Registered kind names, sorted."""
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries


def builtin_registry() -> KindRegistry:
    """A registry holding petflow's own kinds."""
    from pet_core.kinds.cloze.config import ClozeConfig
    from pet_core.kinds.prefix_tuning.config import PrefixTuningConfig
    from pet_core.kinds.ptuning.config import PromptTuningConfig, PTuningConfig
    from pet_core.kinds.t5.config import T5KindConfig

    registry = KindRegistry()
    registry.register("cloze", ClozeConfig, "pet_core.kinds.cloze.model:ClozeModel")
    registry.register("ptuning", PTuningConfig, "pet_core.kinds.ptuning.model:SoftTokenModel")
    registry.register("prompt_tuning", PromptTuningConfig, "pet_core.kinds.ptuning.model:PromptTuningModel")
    registry.register("prefix_tuning", PrefixTuningConfig, "pet_core.kinds.prefix_tuning.model:PrefixTuningModel")
    registry.register("t5", T5KindConfig, "pet_core.kinds.t5.model:T5Model")
    return registry


_default: KindRegistry | None = None


def default_registry() -> KindRegistry:
    """The process's registry: the built-in kinds, then the ``petflow.kinds`` entry-point plug-ins."""
    global _default
    if _default is None:
        registry = builtin_registry()
        for point in entry_points(group=ENTRY_POINT_GROUP):
            point.load()(registry)
        _default = registry
    return _default


def register_kind(name: str, config_class: type[KindConfig], model: type | str) -> KindEntry:
    """Register a kind in the default registry (call it before building run configs that use it)."""
    return default_registry().register(name, config_class, model)


def get_kind(name: str) -> KindEntry:
    """A kind of the default registry, or KindError listing the known kinds."""
    return default_registry().get(name)


def known_kinds() -> list[str]:
    """Names of the kinds in the default registry."""
    return default_registry().names()
