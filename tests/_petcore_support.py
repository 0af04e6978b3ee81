"""Test support shared by the pet_core tests: the tiny-BERT builder, toy task specs and toy data.

Kept outside conftest.py so that test modules can import it by a unique name.
"""

from __future__ import annotations

import random
from pathlib import Path

import pandas as pd
import torch

from pet_core.callbacks import Callback

SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]

# Words that must be single tokens of the tiny tokenizer (verbalizers of the test specs and data/tasks/*.yaml).
VERBALIZER_WORDS = [
    "good", "great", "bad", "terrible", "world", "sports", "business", "tech", "technology",
    "politics", "entertainment", "yes", "no",
]

POSITIVE = ["a wonderful and moving film", "great acting and a clever story", "the best movie of the year",
            "funny , warm and truly good", "a delightful surprise with great music", "i loved every minute of it",
            "a beautiful and touching story", "smart , charming and good fun", "brilliant performances all round",
            "an excellent film that makes you smile", "a joyful ride with a great cast",
            "fresh , lively and very good", "the cast is wonderful and the script sharp",
            "a moving tale told with great care", "i would happily watch it again", "a real treat for the family",
            "clever writing and lovely photography", "a warm and funny comedy", "superb direction and a good heart",
            "one of the finest films in years"]
NEGATIVE = ["a dull and boring mess", "terrible acting and a stupid plot", "the worst movie of the year",
            "slow , flat and truly bad", "an awful waste of time", "i hated every minute of it",
            "a tedious and ugly story", "lazy , noisy and bad fun", "weak performances all round",
            "a poor film that makes you yawn", "a painful ride with a terrible cast", "stale , lifeless and very bad",
            "the cast is awful and the script dull", "a boring tale told without care",
            "i would never watch it again", "a real chore for the family", "sloppy writing and ugly photography",
            "a cold and unfunny comedy", "clumsy direction and a bad heart", "one of the weakest films in years"]

TOPICS = {
    "world": (["Leaders meet for peace talks", "Election results in Europe", "Troops leave the border region",
               "Minister visits flood areas", "Summit ends with new treaty", "Protests grow in the capital",
               "President calls for ceasefire", "United Nations votes on aid", "Embassy reopens after crisis",
               "Refugees cross the border"],
              ["The government said on Monday that talks will continue next week.",
               "Officials from several countries met to discuss the crisis.",
               "The minister said the army will leave the region soon.",
               "Thousands of people gathered in the capital on Sunday."]),
    "sports": (["Team wins the cup final", "Striker scores twice in derby", "Champion keeps the title",
                "Coach resigns after defeat", "Record crowd sees late goal", "Tennis star reaches semifinal",
                "Club signs young midfielder", "Runner breaks the world record", "Rain stops the cricket match",
                "Golfer leads after first round"],
               ["The team played well and scored late in the second half.",
                "Fans cheered as the players lifted the trophy.",
                "The coach said the season is not over yet.",
                "The match ended with a goal in the final minute."]),
    "business": (["Shares rise after strong profit", "Bank cuts interest rates", "Oil prices fall again",
                  "Company buys rival for billions", "Retail sales slow in autumn", "Stocks close higher on Friday",
                  "Carmaker reports record quarter", "Airline plans more job cuts", "Investors worry about debt",
                  "Merger creates new giant"],
                 ["The company said profit rose by ten percent this quarter.",
                  "Investors bought shares after the bank report.",
                  "Analysts expect prices to fall in the coming months.",
                  "The firm will cut costs and sell some units."]),
    "tech": (["New phone has faster chip", "Software update fixes security flaw", "Startup launches search engine",
              "Scientists build smaller robot", "Internet users reach new high", "Chip maker unveils processor",
              "Space probe sends new images", "Web browser gets new features", "Researchers test quantum computer",
              "Hackers attack online shop"],
             ["The new software runs on computers and phones.",
              "Engineers said the chip is twice as fast as before.",
              "The internet company released the update on Tuesday.",
              "Researchers said the robot can learn simple tasks."]),
}

# Literal words of the test templates and the YAML patterns, so that they are whole tokens too.
TEMPLATE_TEXT = [
    "it was", "all in all , it was", "just !", "in summary , the film was", "category :", "news :",
    "question : answer :", "( ) [ ] - : .",
]


def corpus_sentences(seed: int = 0) -> list[str]:
    """Sentences for training the tiny WordPiece vocabulary (verbalizer words repeated many times)."""
    rng = random.Random(seed)
    lines = list(POSITIVE) + list(NEGATIVE) + list(TEMPLATE_TEXT)
    for titles, bodies in TOPICS.values():
        lines += titles + bodies
    for _ in range(30):
        lines.append(" ".join(rng.sample(VERBALIZER_WORDS, len(VERBALIZER_WORDS))))
        lines.append(f"{rng.choice(POSITIVE)} . it was {rng.choice(['good', 'great'])} .")
        lines.append(f"{rng.choice(NEGATIVE)} . it was {rng.choice(['bad', 'terrible'])} .")
        lines.append("just " + rng.choice(["good", "bad", "great", "terrible"]) + " ! " + rng.choice(POSITIVE))
        topic = rng.choice(sorted(TOPICS))
        lines.append(f"[ category : {topic} ] {rng.choice(TOPICS[topic][0])} {rng.choice(TOPICS[topic][1])}")
        lines.append(f"{topic} news : {rng.choice(TOPICS[topic][0])}")
    return lines


def build_tiny_mlm(out_dir: Path, vocab_size: int = 700, seed: int = 0) -> Path:
    """Train a WordPiece tokenizer, build a tiny BertForMaskedLM and save both (safetensors)."""
    from tokenizers import BertWordPieceTokenizer
    from transformers import BertConfig, BertForMaskedLM, BertTokenizerFast

    wordpiece = BertWordPieceTokenizer(lowercase=True)
    wordpiece.train_from_iterator(corpus_sentences(seed), vocab_size=vocab_size, min_frequency=1,
                                  special_tokens=SPECIAL_TOKENS, show_progress=False)
    tokenizer = BertTokenizerFast(tokenizer_object=wordpiece._tokenizer, do_lower_case=True, unk_token="[UNK]",
                                  pad_token="[PAD]", cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]",
                                  model_max_length=128)
    torch.manual_seed(seed)
    model = BertForMaskedLM(BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                       intermediate_size=64, vocab_size=len(tokenizer),
                                       max_position_embeddings=128, pad_token_id=tokenizer.pad_token_id))
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
    return out_dir


# -- task specs --------------------------------------------------------------------------------------------
SENTIMENT_SPEC = {
    "name": "tiny_sentiment",
    "fields": {"a": "sentence", "label": "label"},
    "labels": [
        {"name": "negative", "raw": [0], "words": ["bad", "terrible"]},
        {"name": "positive", "raw": [1], "words": ["good", "great"]},
    ],
    "patterns": ["{a} It was {mask}.", "Just {mask}! {a}"],
}

TOPIC_SPEC = {
    "name": "tiny_topics",
    "fields": {"a": "title", "b": "description", "label": "topic", "id": "id"},
    "labels": [
        {"name": "World", "raw": ["world"], "words": ["World"]},
        {"name": "Sports", "raw": ["sports"], "words": ["Sports"]},
        {"name": "Business", "raw": ["business"], "words": ["Business"]},
    ],
    "patterns": ["[ Category: {mask} ] {a} {b}", "{a} {b} ({mask})"],
}


def sentiment_frame() -> pd.DataFrame:
    """40 short reviews, alternating positive (1) and negative (0)."""
    rows = []
    for pos, neg in zip(POSITIVE, NEGATIVE, strict=True):
        rows.append({"sentence": pos, "label": "1"})
        rows.append({"sentence": neg, "label": "0"})
    return pd.DataFrame(rows)


def topic_frame() -> pd.DataFrame:
    """30 headlines with descriptions: 10 each of world, sports and business."""
    rows = []
    for topic in ("world", "sports", "business"):
        titles, bodies = TOPICS[topic]
        for i, title in enumerate(titles):
            rows.append({"id": f"{topic}-{i}", "title": title, "description": bodies[i % len(bodies)],
                         "topic": topic})
    return pd.DataFrame(rows)


def examples_from_frame(frame: pd.DataFrame, spec, origin: str, labeled: bool = True):
    """``pet_core.data.to_examples`` (kept as a fixture helper: one place to build example tables)."""
    from pet_core.data import to_examples

    return to_examples(frame, spec, origin=origin, labeled=labeled)


class Recorder(Callback):
    """A pet_core callback that records every event."""

    def __init__(self):
        self.events = []

    def on_stage_begin(self, stage, total):
        self.events.append(("begin", stage, total))

    def on_progress(self, stage, done, total, **metrics):
        self.events.append(("progress", stage, done, total, metrics))

    def on_stage_end(self, stage, metrics):
        self.events.append(("end", stage, metrics))

    @property
    def losses(self):
        return [e[4]["loss"] for e in self.events if e[0] == "progress"]


# -- a tiny T5 ----------------------------------------------------------------------------------------------
T5_SENTINELS = [f"<extra_id_{i}>" for i in range(100)]


def t5_corpus(seed: int = 0) -> list[str]:
    """The tiny-BERT corpus plus the test specs' cased words and patterns (T5 tokenizers keep case)."""
    rng = random.Random(seed)
    lines = corpus_sentences(seed)
    for _ in range(30):
        lines.append(f"{rng.choice(POSITIVE)} It was {rng.choice(['good', 'great', 'bad', 'terrible'])}.")
        lines.append(f"Just {rng.choice(['good', 'great', 'bad', 'terrible'])}! {rng.choice(NEGATIVE)}")
        topic = rng.choice(["World", "Sports", "Business"])
        lines.append(f"[ Category: {topic} ] {rng.choice(TOPICS[topic.lower()][0])} ({topic})")
    return lines


def build_tiny_t5(out_dir: Path, vocab_size: int = 700, seed: int = 0) -> Path:
    """Train a BPE tokenizer (Metaspace, T5's special tokens and 100 sentinels), build a tiny random
    T5ForConditionalGeneration and save both (safetensors). A Unigram trainer on so little text gives
    character pieces (label words then share their first piece), hence BPE."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast, T5Config, T5ForConditionalGeneration

    bpe = Tokenizer(models.BPE(unk_token="<unk>"))
    bpe.pre_tokenizer = pre_tokenizers.Metaspace()
    bpe.decoder = decoders.Metaspace()
    bpe.train_from_iterator(t5_corpus(seed), trainers.BpeTrainer(
        vocab_size=vocab_size, min_frequency=1, special_tokens=["<pad>", "</s>", "<unk>", *T5_SENTINELS],
        show_progress=False))
    eos = bpe.token_to_id("</s>")
    bpe.post_processor = processors.TemplateProcessing(single="$A </s>", pair="$A </s> $B </s>",
                                                       special_tokens=[("</s>", eos)])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe, pad_token="<pad>", eos_token="</s>", unk_token="<unk>",
                                        additional_special_tokens=T5_SENTINELS, model_max_length=128)
    torch.manual_seed(seed)
    model = T5ForConditionalGeneration(T5Config(
        vocab_size=len(tokenizer), d_model=32, d_ff=64, d_kv=16, num_layers=2, num_heads=2,
        pad_token_id=tokenizer.pad_token_id, eos_token_id=eos, decoder_start_token_id=tokenizer.pad_token_id))
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
    return out_dir
