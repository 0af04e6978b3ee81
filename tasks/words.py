"""Task: LM-BFF's label-word search on T (``words:``); its table goes on the run page."""

from __future__ import annotations

from prefect import task
from prefect.artifacts import TableArtifact
from prefect.cache_policies import NO_CACHE

from pet_core import stages
from pet_core.config import ModelConfig, WordsConfig
from pet_core.spec import TaskSpec
from tasks.common import RefDict, finish, open_store, publish, slug, to_ref
from tasks.report import word_rows


@task(name="words", tags=["gpu"], cache_policy=NO_CACHE)
def label_words(run: str, store: str, spec: TaskSpec, model: ModelConfig, config: WordsConfig, labeled: RefDict,
                patterns: list[int]):
    """Outputs ``words`` (JSON: candidates and ranked pairings per pattern); info: the chosen words."""
    artifacts = open_store(store)
    record = stages.label_words(artifacts, spec, model, config, to_ref(labeled), patterns)
    publish(TableArtifact, key=f"{slug(run)}-words", table=word_rows(record.info["patterns"]),
            description=f"{run}: label words found on T (LM-BFF search, cross-validated)")
    return finish(artifacts, record, "words", **record.info)
