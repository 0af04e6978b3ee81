"""Task: load and validate the data, draw T and D (and the test table) into the store."""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE

from pet_core import stages
from pet_core.run_config import DataConfig
from pet_core.spec import TaskSpec
from tasks.common import finish, open_store


@task(name="prepare", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=10)
def prepare(store: str, spec: TaskSpec, data: DataConfig):
    """Outputs ``labeled``, ``unlabeled`` (and ``test``) Parquet; info: rows and label counts of each."""
    artifacts = open_store(store)
    record = stages.prepare(artifacts, spec, data)
    return finish(artifacts, record, "prepare", **record.info)
