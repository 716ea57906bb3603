"""Train byte-level BPE or character tokenizers, saved as Hugging Face tokenizer folders.

    lmlab tokenizer train data=storyworld/pretrain kind=bpe vocab_size=4096 out=tok/

The result is a `PreTrainedTokenizerFast` with our special tokens and a chat template, so it loads
with `AutoTokenizer.from_pretrained(out)` like any hub tokenizer and every other lmlab command can
use it. Both kinds round-trip text exactly (decode(encode(s)) == s), English or Chinese:

- bpe: byte-level BPE (Sennrich et al. 2016; GPT-2's byte-level variant, Radford et al. 2019)
  through the `tokenizers` library. Every byte is in the base alphabet, so no text is ever unknown.
- char: one token per character seen in training (the classic char-RNN setup, Karpathy 2015);
  characters never seen map to <|unk|>. `vocab_size` caps it: the rarest characters go to unk.
"""
from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from lmlab.config import opt
from lmlab.errors import ConfigError, DataError

EOS = "<|endoftext|>"
PAD = "<|pad|>"
UNK = "<|unk|>"
SPECIALS = [EOS, PAD, UNK, "<|im_start|>", "<|im_end|>"]
KINDS = ("bpe", "char")
BYTE_ALPHABET = 256


def _wrap(backend: Any, chat_template: str | None) -> Any:
    from transformers import PreTrainedTokenizerFast

    from lmlab.templates import get_template

    tok = PreTrainedTokenizerFast(
        tokenizer_object=backend, eos_token=EOS, bos_token=EOS, pad_token=PAD, unk_token=UNK,
        additional_special_tokens=SPECIALS[3:],
        clean_up_tokenization_spaces=False,  # cleaning would turn "a ." into "a." and break round-trips
    )
    if chat_template:
        tok.chat_template = get_template(chat_template)
    return tok


def _bpe(texts: Iterable[str], vocab_size: int, min_frequency: int) -> Any:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    if vocab_size < BYTE_ALPHABET + len(SPECIALS):
        raise ConfigError(
            f"vocab_size={vocab_size} is too small for byte-level BPE: it needs at least "
            f"{BYTE_ALPHABET + len(SPECIALS)} (256 bytes + {len(SPECIALS)} special tokens); use kind=char for tiny vocabularies"
        )
    backend = Tokenizer(models.BPE(unk_token=None))  # byte-level: nothing is ever unknown
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, min_frequency=min_frequency, special_tokens=SPECIALS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False,
    )
    backend.train_from_iterator(texts, trainer=trainer)
    return backend


def _char(texts: Iterable[str], vocab_size: int) -> tuple[Any, int]:
    """A character vocabulary (most frequent first, capped at vocab_size); returns (backend, chars dropped)."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers

    counts: Counter[str] = Counter()
    for text in texts:
        counts.update(text)
    room = vocab_size - len(SPECIALS)
    if room < 1:
        raise ConfigError(f"vocab_size={vocab_size} must exceed the {len(SPECIALS)} special tokens")
    chars = [c for c, _ in counts.most_common(room)]
    vocab = {s: i for i, s in enumerate(SPECIALS)}
    for c in sorted(chars):  # sorted: ids do not depend on ties in the counts
        vocab[c] = len(vocab)
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK))
    # every character (newlines included) is its own pre-token, so WordLevel sees single chars
    backend.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    backend.decoder = decoders.Fuse()  # join tokens with no separator
    return backend, max(0, len(counts) - room)


def train_tokenizer(
    texts: Sequence[str] | Iterable[str],
    kind: str = "bpe",
    vocab_size: int = 4096,
    out: str | Path | None = None,
    chat_template: str | None = "chatml",
    min_frequency: int = 2,
) -> Any:
    """Train a tokenizer on `texts`; save it to `out` (a folder) when given. Returns the HF tokenizer.

    Specials: <|endoftext|> (bos and eos), <|pad|>, <|unk|>, <|im_start|>, <|im_end|> (ChatML turns).
    `min_frequency` is the fewest occurrences a BPE merge needs (higher: fewer rare merges).
    """
    if kind not in KINDS:
        from lmlab.config import closest

        hint = closest(kind, KINDS)
        raise ConfigError(f"unknown tokenizer kind '{kind}'" + (f"; did you mean '{hint}'?" if hint else "") + " (bpe, char)")
    texts = list(texts)
    if not any(texts):
        raise DataError("cannot train a tokenizer on no text (the data is empty)")
    if kind == "bpe":
        backend = _bpe(texts, vocab_size, min_frequency)
    else:
        backend, dropped = _char(texts, vocab_size)
        if dropped:
            from lmlab.progress import log

            log(f"char tokenizer: {dropped} rare characters exceed vocab_size={vocab_size} and map to {UNK}")
    tok = _wrap(backend, chat_template)
    if out is not None:
        Path(out).mkdir(parents=True, exist_ok=True)
        tok.save_pretrained(str(out))
    return tok


# -- measuring a tokenizer ----------------------------------------------------------------------------
_WORD = re.compile(r"[\u3400-\u9fff\uf900-\ufaff]|[^\W_\u3400-\u9fff\uf900-\ufaff]+")


def compression(tokenizer: Any, texts: Sequence[str]) -> dict[str, float]:
    """Characters per token (higher = better compression), tokens per word (CJK: per character),
    and the share of tokens that are <|unk|> (0 for byte-level BPE)."""
    chars = sum(len(t) for t in texts)
    words = sum(len(_WORD.findall(t)) for t in texts)
    ids = [i for t in texts for i in tokenizer(t, add_special_tokens=False)["input_ids"]]
    unk = tokenizer.unk_token_id
    n = max(len(ids), 1)
    return {
        "texts": len(texts),
        "chars": chars,
        "tokens": len(ids),
        "chars_per_token": chars / n,
        "tokens_per_word": len(ids) / max(words, 1),
        "unk_rate": sum(1 for i in ids if i == unk) / n if unk is not None else 0.0,
    }


# -- the command ----------------------------------------------------------------------------------------
@dataclass
class TokenizerTrainConfig:
    """`lmlab tokenizer train`: train a BPE or char tokenizer on a dataset and measure its compression."""

    data: str = opt("storyworld/pretrain", "dataset(s), comma separated: named sets (lmlab data list, NAME@SPLIT), files or hub ids; `limit` applies to each")
    kind: Literal["bpe", "char"] = opt("bpe", "bpe (byte-level BPE, never unknown) or char (one token per character)")
    vocab_size: int = opt(4096, "vocabulary size incl. 5 special tokens; bpe needs >= 261; for char it is a cap")
    min_frequency: int = opt(2, "bpe: fewest occurrences for a merge to be learned")
    out: str = opt("tokenizer", "folder to save the tokenizer (loads with AutoTokenizer.from_pretrained)")
    split: str = opt("train", "split of `data` to train on")
    limit: int | None = opt(None, "train on at most this many documents")
    columns: dict[str, str] = opt({}, "column mapping, e.g. {text: content}")
    text_unit: str | None = opt(None, ".txt files: paragraph (default), line or file per document")
    chat_template: str = opt("chatml", "chat template stored with the tokenizer (chatml, qwen, alpaca, llama3, plain)")
    val_fraction: float = opt(0.02, "documents held out (by content hash) to measure compression on")
    seed: int = opt(0, "hash seed of the held-out split")

    def validate(self) -> list[str]:
        problems = []
        if self.vocab_size < len(SPECIALS) + 1:
            problems.append(f"vocab_size must be > {len(SPECIALS)}, got {self.vocab_size}")
        if self.kind == "bpe" and self.vocab_size < BYTE_ALPHABET + len(SPECIALS):
            problems.append(f"vocab_size={self.vocab_size} < {BYTE_ALPHABET + len(SPECIALS)}: too small for byte-level BPE; use kind=char")
        if not 0 <= self.val_fraction < 1:
            problems.append(f"val_fraction must be in [0, 1), got {self.val_fraction}")
        return problems


def run_train(cfg: TokenizerTrainConfig) -> dict[str, Any]:
    """Load texts, hold some out, train, save to `out`, write out/metrics.json, print a summary."""
    from lmlab.data.loaders import load_texts
    from lmlab.data.split import split_train_val
    from lmlab.eval.common import split_list
    from lmlab.runs import atomic_write_json

    # several sets (`data=song-ci,alpaca-zh`): one vocabulary that covers the pretraining corpus and the SFT data
    texts = [t for spec in split_list(cfg.data) for t in load_texts(spec, columns=cfg.columns or None, split=cfg.split,
                                                                      limit=cfg.limit, text_unit=cfg.text_unit)]
    train, held = split_train_val(texts, cfg.val_fraction, cfg.seed)
    sample = held or train[:1000]
    tok = train_tokenizer(train, cfg.kind, cfg.vocab_size, cfg.out, cfg.chat_template, cfg.min_frequency)
    metrics = {
        "data": cfg.data, "kind": cfg.kind, "vocab_size": len(tok), "train_texts": len(train),
        "measured_on": "held-out" if held else "train", **compression(tok, sample),
    }
    atomic_write_json(Path(cfg.out) / "metrics.json", metrics)
    print(
        f"{cfg.kind} tokenizer: vocab {metrics['vocab_size']}, {metrics['chars_per_token']:.2f} chars/token, "
        f"{metrics['tokens_per_word']:.2f} tokens/word, unk {metrics['unk_rate']:.2%} "
        f"({metrics['measured_on']} sample of {metrics['texts']} texts) → {cfg.out}"
    )
    return metrics
