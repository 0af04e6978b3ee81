"""Shared fixtures of the pet_core unit tests: a tiny BERT masked LM built on the fly, task specs, example tables.

Everything here is offline and fast: the tokenizer is a WordPiece vocabulary trained in a fraction of a
second on a generated corpus, the model a 2-layer BERT with hidden size 32 (random weights, seed 0).
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

ROOT = Path(__file__).resolve().parents[1]
for _path in (ROOT, ROOT / "tests"):  # pet_core is not installed as a package: import it from the checkout
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

import hypothesis.configuration  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402

from pet_core.config import ModelConfig  # noqa: E402
from pet_core.data import DataSource, read_raw  # noqa: E402
from pet_core.spec import TaskSpec  # noqa: E402

from _petcore_support import (  # noqa: E402
    SENTIMENT_SPEC, TOPIC_SPEC, build_tiny_mlm, build_tiny_t5, examples_from_frame, sentiment_frame, topic_frame,
)
from _run_support import (  # noqa: E402
    save_headless_encoder, tiny_model_config, write_sentiment_data, write_topic_data,
)

# Keep Hypothesis' example database out of the checkout (it would land in ./.hypothesis).
if not os.environ.get("HYPOTHESIS_STORAGE_DIRECTORY"):
    hypothesis.configuration.set_hypothesis_home_dir(Path(tempfile.gettempdir()) / "petflow-tests-hypothesis")

transformers.logging.set_verbosity_error()
transformers.logging.disable_progress_bar()
# One intra-op thread: for a model this small, more threads only add overhead, and on a busy 2-core
# machine OpenMP threads contending with other processes slow a forward pass down ~100x.
torch.set_num_threads(1)

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
TASKS_DIR = ROOT / "data" / "tasks"


@pytest.fixture(scope="session")
def tiny_mlm_dir(tmp_path_factory) -> Path:
    """Directory of a tiny BERT masked LM and its tokenizer (loads with AutoModelForMaskedLM/AutoTokenizer)."""
    return build_tiny_mlm(tmp_path_factory.mktemp("tiny-mlm") / "model")


@pytest.fixture(scope="session")
def tiny_tokenizer(tiny_mlm_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_mlm_dir)


@pytest.fixture(scope="session")
def model_config(tiny_mlm_dir) -> ModelConfig:
    """fp32 on CPU: results are exact and reproducible."""
    return tiny_model_config(tiny_mlm_dir)


@pytest.fixture(scope="session")
def tiny_t5_dir(tmp_path_factory) -> Path:
    """Directory of a tiny random T5ForConditionalGeneration and its BPE tokenizer with T5's sentinels."""
    return build_tiny_t5(tmp_path_factory.mktemp("tiny-t5") / "model")


@pytest.fixture(scope="session")
def t5_model_config(tiny_t5_dir) -> ModelConfig:
    """The tiny T5, fp32 on CPU."""
    return tiny_model_config(tiny_t5_dir)


@pytest.fixture(scope="session")
def headless_backbone(tiny_mlm_dir, tmp_path_factory) -> Path:
    """The tiny BERT's encoder saved without an MLM head (a sentence-encoder-like checkpoint)."""
    return save_headless_encoder(tiny_mlm_dir, tmp_path_factory.mktemp("headless-mlm") / "encoder")


@pytest.fixture(scope="session")
def sentiment_spec() -> TaskSpec:
    return TaskSpec.model_validate(SENTIMENT_SPEC)


@pytest.fixture(scope="session")
def topic_spec() -> TaskSpec:
    return TaskSpec.model_validate(TOPIC_SPEC)


@pytest.fixture(scope="session")
def sentiment_examples(sentiment_spec):
    """Labelled example table of the sentiment task (40 rows)."""
    return examples_from_frame(sentiment_frame(), sentiment_spec, origin="sentiment.csv")


@pytest.fixture(scope="session")
def topic_examples(topic_spec):
    """Labelled example table of the topic task (30 rows, texts a and b)."""
    return examples_from_frame(topic_frame(), topic_spec, origin="topics.csv")


# -- toy data as files (read-only: tests that change a file write a copy under tmp_path) ---------------------
@pytest.fixture(scope="session")
def topic_data(tmp_path_factory) -> Path:
    """task.yaml + pool.csv (21 rows) + test.csv (9 rows) of the 3-topic toy task."""
    return write_topic_data(tmp_path_factory.mktemp("topic-data"))


@pytest.fixture(scope="session")
def sentiment_data(tmp_path_factory) -> Path:
    """task.yaml + pool.csv (40 rows) of the 2-label toy sentiment task."""
    return write_sentiment_data(tmp_path_factory.mktemp("sentiment-data"))


# -- real data (optional) ----------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def shared_data_dir() -> Path:
    return SHARED_DATA


@pytest.fixture(scope="session")
def sst2_train_path() -> Path:
    path = SHARED_DATA / "sst2" / "train.tsv"
    if not path.is_file():
        pytest.skip(f"real SST-2 data not present at {path}")
    return path


@pytest.fixture(scope="session")
def ag_news_train_path() -> Path:
    path = SHARED_DATA / "ag_news" / "train.csv"
    if not path.is_file():
        pytest.skip(f"real AG's News data not present at {path}")
    return path


@pytest.fixture(scope="session")
def sst2_examples(sst2_train_path):
    """The first 200 rows of the real SST-2 training set as an example table."""
    spec = TaskSpec.from_yaml(TASKS_DIR / "sst2.yaml")
    source = DataSource(path=str(sst2_train_path), limit=200)
    return spec, examples_from_frame(read_raw(source), spec, origin=source.path)


@pytest.fixture(scope="session")
def ag_news_examples(ag_news_train_path):
    """The first 200 rows of the real AG's News training set as an example table."""
    spec = TaskSpec.from_yaml(TASKS_DIR / "ag_news.yaml")
    source = DataSource(path=str(ag_news_train_path), limit=200)
    return spec, examples_from_frame(read_raw(source), spec, origin=source.path)


# -- trained PVP models (shared by scoring / ensemble tests) ---------------------------------------------------
@pytest.fixture(scope="session")
def sentiment_split(sentiment_examples):
    """T: the first 8 sentiment rows (4 per label); D: the other 32 rows with labels removed."""
    import pyarrow as pa

    d = sentiment_examples.slice(8)
    return sentiment_examples.slice(0, 8), d.set_column(3, "label", pa.nulls(d.num_rows, pa.string()))


@pytest.fixture(scope="session")
def trained_models(tmp_path_factory, sentiment_spec, sentiment_split, model_config):
    """Two PVP models trained for a few steps: (pattern 0, seed 0) and (pattern 1, seed 1)."""
    from pet_core.config import TrainConfig
    from pet_core.training import train_pvp

    root = tmp_path_factory.mktemp("pvp-models")
    cfg = TrainConfig(max_steps=3, batch_size=4, grad_accumulation=1, learning_rate=1e-3, score_batch_size=16)
    results = []
    for pattern, seed in ((0, 0), (1, 1)):
        out = root / f"g0-p{pattern}-s{seed}"
        results.append(train_pvp(sentiment_spec, pattern, seed, sentiment_split[0], sentiment_split[1],
                                 model_config, cfg, out))
    return results
