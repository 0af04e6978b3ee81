"""Pattern-model kinds: how one pattern turns texts into label logits (PET's cloze kind, and plug-ins).

``registry`` (light: no torch) names the kinds and validates their config sections; ``base`` holds the
``PatternModel`` interface that training, scoring and validation use; each kind has its own folder.
"""

from pet_core.kinds.registry import (
    DEFAULT_KIND, KindConfig, KindEntry, KindError, KindRegistry, default_registry, get_kind, known_kinds,
    register_kind,
)

__all__ = ["DEFAULT_KIND", "KindConfig", "KindEntry", "KindError", "KindRegistry", "default_registry", "get_kind",
           "known_kinds", "register_kind"]
