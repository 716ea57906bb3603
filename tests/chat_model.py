"""A tiny random chat model whose greedy replies are visible text (for chat/serve/web tests).

The shared `tiny_qwen2_dir` ties its embeddings, so greedy decoding copies the last prompt token
("\\n\\n\\n..."), which a browser shows as an empty bubble. Untied, widely initialised weights give
varied, deterministic (greedy) replies instead.

Its fixtures, loaded for every test by conftest.py's `pytest_plugins`: `model_dir` (that model,
built once per test module that asks for it) and `oracle` (its `GreedyOracle`).
"""
from __future__ import annotations

import os
import queue
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

# the environment of every `lmlab` subprocess these tests start
ENV = {**os.environ, "LMLAB_QUIET": "1", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}


def build_chat_model(path: Path, tokenizer_dir: Path, seed: int = 0) -> Path:
    import torch
    from transformers import AutoTokenizer, Qwen2Config, Qwen2ForCausalLM

    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    torch.manual_seed(seed)
    cfg = Qwen2Config(
        vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
        tie_word_embeddings=False, initializer_range=0.5,
    )
    Qwen2ForCausalLM(cfg).save_pretrained(path)
    tok.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, tiny_tokenizer_dir):
    return build_chat_model(tmp_path_factory.mktemp("chat_model"), tiny_tokenizer_dir)


@pytest.fixture(scope="module")
def oracle(model_dir):
    return GreedyOracle(model_dir)


class GreedyOracle:
    """Plain HF greedy `generate` on one prompt at a time, stopping at the end-of-turn tokens:
    what every batched, streamed or served reply must equal."""

    def __init__(self, model_dir: Path):
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.tok = AutoTokenizer.from_pretrained(model_dir)
        self.model = AutoModelForCausalLM.from_pretrained(model_dir).eval()

    def chat_prompt(self, messages: list[dict[str, str]]) -> str:
        return self.tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)

    def reply(self, prompt: str, max_new_tokens: int) -> str:
        import torch

        from lmlab.templates import stop_token_ids

        enc = self.tok(prompt, return_tensors="pt", add_special_tokens=False)
        with torch.no_grad():
            out = self.model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False, top_k=None,
                                      top_p=None, temperature=None, eos_token_id=stop_token_ids(self.tok),
                                      pad_token_id=self.tok.pad_token_id)
        return self.tok.decode(out[0, enc["input_ids"].shape[1]:], skip_special_tokens=True)


def start_server(args: list[str], timeout: float = 120.0) -> tuple[subprocess.Popen, str]:
    """Start `lmlab ...` and wait for its 'listening on' line; returns (process, base url)."""
    proc = subprocess.Popen([sys.executable, "-m", "lmlab", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=ENV)
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=lambda: [lines.put(x) for x in proc.stdout], daemon=True).start()
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            line = lines.get(timeout=1.0)
        except queue.Empty:
            if proc.poll() is not None:
                raise RuntimeError(f"server exited {proc.returncode}: {proc.stderr.read()[-2000:]}") from None
            continue
        m = re.fullmatch(r"lmlab (?:serve|web): listening on (http://\S+)\n", line)
        if m:
            return proc, m.group(1)
    proc.kill()
    raise RuntimeError("server did not print its 'listening on' line in time")
