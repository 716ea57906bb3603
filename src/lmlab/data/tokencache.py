"""Pretraining token arrays: tokenize a corpus once, keep it as a memory-mapped file, sample blocks.

Tokenizing a corpus is the slowest part of starting a pretraining run on a CPU, and it gives the
same result every time for the same texts and tokenizer. So `encode_corpus` writes the token ids
(EOS between documents) to `<cache>/<sha>.bin`, where sha covers the texts and the tokenizer, and
later runs, resumes and sweeps map that file instead of tokenizing again. The file is written
under a temporary name and renamed, so a killed run never leaves a truncated cache.

`BlockSource` turns the array into the trainer's micro-batches: micro-batch i is B random
contiguous blocks drawn with `np.random.default_rng([seed, i])`, so it depends on i alone and
resuming needs nothing but the micro-batch index.
"""
from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lmlab.errors import DataError

CHUNK = 1000  # texts per batch-encode call: big enough for the Rust tokenizer's threads, small in memory


def cache_dir() -> Path:
    """$LMLAB_CACHE/tokens, else ~/.cache/lmlab/tokens."""
    root = os.environ.get("LMLAB_CACHE")
    return (Path(root) if root else Path.home() / ".cache" / "lmlab") / "tokens"


def tokenizer_digest(tokenizer: Any) -> str:
    """Identity of a tokenizer: its full serialized pipeline (vocab, merges, normalizer) + EOS."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    body = backend.to_str() if backend is not None else repr(sorted(tokenizer.get_vocab().items()))
    return hashlib.sha256(f"{body}\x00{tokenizer.eos_token_id}".encode()).hexdigest()


def texts_digest(texts: Sequence[str]) -> str:
    h = hashlib.sha256()
    for t in texts:
        h.update(t.encode("utf-8"))
        h.update(b"\x00\x01")  # a separator no text contains, so ["ab"] != ["a", "b"]
    return h.hexdigest()


def dtype_for(vocab_size: int) -> np.dtype:
    """uint16 halves the file when ids fit (vocab ≤ 65,536), else uint32."""
    return np.dtype(np.uint16) if vocab_size <= 2**16 else np.dtype(np.uint32)


def encode_corpus(texts: Sequence[str], tokenizer: Any, *, cache: str | Path | None = None) -> np.ndarray:
    """Token ids of all texts, EOS after each document, as a read-only memmap (cached).

    Raises DataError when the tokenizer has no EOS token (documents would run together).
    """
    if tokenizer.eos_token_id is None:
        raise DataError("the tokenizer has no eos_token; pretraining needs one to separate documents "
                        "(set eos_token when saving the tokenizer)")
    dtype = dtype_for(len(tokenizer))
    key = hashlib.sha256(f"{texts_digest(texts)}:{tokenizer_digest(tokenizer)}".encode()).hexdigest()[:32]
    folder = Path(cache) if cache is not None else cache_dir()
    path = folder / f"{key}.bin"
    if not path.exists():
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=folder)
        try:
            with os.fdopen(fd, "wb") as fh:
                eos = tokenizer.eos_token_id
                for start in range(0, len(texts), CHUNK):
                    ids = tokenizer(list(texts[start:start + CHUNK]), add_special_tokens=False)["input_ids"]
                    flat = [t for doc in ids for t in (*doc, eos)]
                    fh.write(np.asarray(flat, dtype=dtype).tobytes())
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    if path.stat().st_size == 0:
        return np.zeros(0, dtype=dtype)
    return np.memmap(path, dtype=dtype, mode="r")


class BlockSource:
    """Random contiguous blocks of `block_size` tokens, `batch_size` per micro-batch.

    `sequential=True` instead walks non-overlapping blocks in order (for evaluation: the same
    blocks every time). len() = blocks per epoch // batch_size (at least 1).
    """

    def __init__(self, tokens: np.ndarray, block_size: int, batch_size: int, seed: int = 0, *, sequential: bool = False):
        if len(tokens) < block_size + 1:
            raise DataError(f"the data has {len(tokens)} tokens, fewer than one block of max_length={block_size} (+1); "
                            f"lower max_length or add data")
        self.tokens = tokens
        self.block_size = block_size
        self.batch_size = batch_size
        self.seed = seed
        self.sequential = sequential
        self.n_blocks = len(tokens) // block_size

    def __len__(self) -> int:
        return max(1, self.n_blocks // self.batch_size)

    def get(self, index: int) -> dict[str, torch.Tensor]:
        T = self.block_size
        if self.sequential:
            blocks = [(index * self.batch_size + b) % self.n_blocks for b in range(self.batch_size)]
            starts = np.asarray(blocks, dtype=np.int64) * T
        else:
            rng = np.random.default_rng([self.seed, index])
            starts = rng.integers(0, len(self.tokens) - T + 1, size=self.batch_size)
        rows = np.stack([np.asarray(self.tokens[s:s + T], dtype=np.int64) for s in starts])  # (B, T)
        ids = torch.from_numpy(rows)
        return {"input_ids": ids, "labels": ids}
