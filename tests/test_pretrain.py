"""Token cache, block sampling and the `train pt` stage on a tiny local corpus."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import yaml

from conftest import corpus
from lmlab.data.tokencache import BlockSource, encode_corpus
from lmlab.errors import ConfigError, DataError
from lmlab.runs import RunDir


@pytest.fixture(scope="module")
def corpus_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("corpus") / "stories.txt"
    path.write_text("\n\n".join(corpus(500)), encoding="utf-8")
    return path


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("LMLAB_CACHE", str(tmp_path / "cache"))


def test_encode_corpus_layout_and_reuse(tiny_tokenizer_dir, tmp_path, monkeypatch):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_tokenizer_dir)
    texts = ["the cat ran.", "a dog."]
    arr = encode_corpus(texts, tok)
    expected = [*tok(texts[0], add_special_tokens=False)["input_ids"], tok.eos_token_id,
                *tok(texts[1], add_special_tokens=False)["input_ids"], tok.eos_token_id]
    assert arr.dtype == np.uint16 and arr.tolist() == expected
    files = list((tmp_path / "cache" / "tokens").glob("*.bin"))
    assert len(files) == 1

    def no_tokenizing(*a, **k):
        raise AssertionError("tokenized again")

    monkeypatch.setattr(type(tok), "__call__", no_tokenizing)
    again = encode_corpus(texts, tok)
    assert again.tolist() == expected  # served from the cache file
    monkeypatch.undo()
    monkeypatch.setenv("LMLAB_CACHE", str(tmp_path / "cache"))
    encode_corpus(["the cat ran.a dog."], tok)  # same characters, different documents → a new file
    assert len(list((tmp_path / "cache" / "tokens").glob("*.bin"))) == 2


def test_block_source_is_a_function_of_index():
    tokens = np.arange(1000, dtype=np.uint16)
    a, b = BlockSource(tokens, 10, 4, seed=7), BlockSource(tokens, 10, 4, seed=7)
    assert len(a) == 1000 // 10 // 4
    x = a.get(5)["input_ids"]
    assert x.shape == (4, 10) and torch.equal(x, b.get(5)["input_ids"])
    assert not torch.equal(x, a.get(6)["input_ids"])
    assert torch.equal(x[:, 1:] - x[:, :-1], torch.ones(4, 9, dtype=torch.long))  # contiguous blocks
    seq = BlockSource(tokens, 10, 4, sequential=True)
    assert seq.get(1)["input_ids"][:, 0].tolist() == [40, 50, 60, 70]
    with pytest.raises(DataError, match="max_length"):
        BlockSource(np.arange(5), 10, 2)


def _pt(**keys):
    from lmlab.api import train

    return train("pt", **keys)


@pytest.mark.parametrize("arch", ["rnn:tiny", "transformer:tiny"])
def test_pretrain_loss_falls(arch, corpus_file, tiny_tokenizer_dir, tmp_path):
    res = _pt(model=arch, data=str(corpus_file), tokenizer=str(tiny_tokenizer_dir), max_steps=30, batch_size=8,
              max_length=32, lr=3e-3, eval_every=15, eval_batches=4, log_every=5, seed=0, out=str(tmp_path / "run"),
              arch={"hidden_size": 32, "num_layers": 2} if arch.startswith("transformer") else {"hidden_size": 48})
    run = RunDir(res.path)
    val = [r["loss"] for r in run.metrics() if r["split"] == "val"]
    train = [r["loss"] for r in run.metrics() if r["split"] == "train"]
    V = res.metrics["vocab_size"]
    assert train[0] > 0.8 * math.log(V)  # starts near uniform
    # random sentences over 60 words: the floor is ~ln(60)/(tokens per word) ≈ 3 nats, far below ln V
    assert val[-1] < math.log(V) - 1.0 and val[-1] < val[0]
    assert res.metrics["val_ppl"] == pytest.approx(math.exp(min(val)), rel=1e-5)
    from transformers import AutoModelForCausalLM

    import lmlab.models  # noqa: F401 - registers our architectures with the Auto classes

    model = AutoModelForCausalLM.from_pretrained(run.final_dir)
    assert sum(p.numel() for p in model.parameters()) == res.metrics["total_params"]
    saved = yaml.safe_load((run.path / "config.yaml").read_text())
    assert saved["model"] == arch and saved["max_steps"] == 30  # the resolved config is in the run folder


def test_pretrain_trains_its_own_tokenizer_and_resumes(corpus_file, tmp_path):
    out = tmp_path / "run"
    keys = dict(model="transformer:tiny", data=str(corpus_file), vocab_size=300, max_steps=4, save_every=2,
                batch_size=4, max_length=16, log_every=1, out=str(out), arch={"hidden_size": 32, "num_layers": 1})
    res = _pt(**keys)
    assert (out / "tokenizer" / "tokenizer.json").exists() and res.metrics["vocab_size"] == 300
    full = [r["loss"] for r in RunDir(out).metrics() if r["split"] == "train"]
    # simulate a kill after step 2: drop what came later, then resume
    import shutil

    shutil.rmtree(out / "checkpoints" / "step-4")
    (out / "result.json").unlink()
    _pt(**keys, resume=True)
    assert [r["loss"] for r in RunDir(out).metrics() if r["split"] == "train"] == full


def test_pretrain_seq2seq_pairs(tiny_tokenizer_dir, tmp_path):
    lines = corpus(200)
    data = tmp_path / "two.txt"  # two sentences per text: first sentence → the rest
    data.write_text("\n\n".join(f"{a} {b}" for a, b in zip(lines[::2], lines[1::2], strict=True)), encoding="utf-8")
    from lmlab.train.config import PretrainConfig
    from lmlab.train.pretrain import text_pairs

    pairs = text_pairs(PretrainConfig(data=str(data)), "train", str(data))
    assert len(pairs) == 100 and pairs[0] == (lines[0], lines[1])
    res = _pt(model="seq2seq:tiny", data=str(data), tokenizer=str(tiny_tokenizer_dir), max_steps=3,
              batch_size=4, max_length=32, out=str(tmp_path / "s2s"), arch={"hidden_size": 32, "num_layers": 1})
    assert res.metrics["steps"] == 3 and res.metrics["val_loss"] is not None
    from transformers import AutoModelForSeq2SeqLM

    assert AutoModelForSeq2SeqLM.from_pretrained(res.path / "final").config.d_model == 32


def test_pretrain_refuses_bad_settings(corpus_file, tiny_tokenizer_dir, tmp_path):
    with pytest.raises(ConfigError, match="max_position_embeddings"):
        _pt(model="transformer:tiny", data=str(corpus_file), tokenizer=str(tiny_tokenizer_dir), max_length=100000,
            out=str(tmp_path / "a"))
    with pytest.raises(ConfigError, match="tokenizer train"):
        _pt(model="rnn:tiny", data=str(corpus_file), tokenizer=str(tmp_path / "nope"), out=str(tmp_path / "b"))


def test_continued_pretraining_of_a_hf_model(corpus_file, tiny_qwen2_dir, tmp_path):
    """A model folder (the path a hub id takes) trains on; its starting val loss is the loaded model's."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from lmlab.train.objectives import causal_lm_loss

    res = _pt(model=str(tiny_qwen2_dir), data=str(corpus_file), max_steps=4, batch_size=4, max_length=16, lr=1e-3,
              eval_every=4, out=str(tmp_path / "cpt"), keep_best=False)
    assert res.metrics["steps"] == 4 and res.metrics["vocab_size"] == len(AutoTokenizer.from_pretrained(tiny_qwen2_dir))
    before = AutoModelForCausalLM.from_pretrained(tiny_qwen2_dir)
    after = AutoModelForCausalLM.from_pretrained(res.path / "final")
    tok = AutoTokenizer.from_pretrained(res.path / "final")
    ids = torch.tensor([tok("the cat ran with the dog and then she went home.")["input_ids"]])
    with torch.no_grad():
        l0, _ = causal_lm_loss(before(input_ids=ids).logits, ids)
        l1, _ = causal_lm_loss(after(input_ids=ids).logits, ids)
    assert float(l1) < float(l0)  # four steps on this corpus already help on a sentence of its words
    with pytest.raises(ConfigError, match="only applies to architectures"):
        _pt(model=str(tiny_qwen2_dir), data=str(corpus_file), arch={"hidden_size": 8}, out=str(tmp_path / "x"))


def test_cli_keys_and_resume_of_a_finished_run(corpus_file, tiny_tokenizer_dir, tmp_path, capsys):
    from lmlab.cli import main

    out = tmp_path / "gru"
    args = ["train", "pt", "model=gru:tiny", f"data={corpus_file}", f"tokenizer={tiny_tokenizer_dir}", "max_steps=2",
            "save_every=1", "seed=3", f"out={out}", "batch_size=2", "max_length=16", "arch.hidden_size=16"]
    assert main(args) == 0
    assert "val ppl" in capsys.readouterr().out
    run = RunDir(out)
    assert [p.name for p in run.checkpoints()] == ["step-1", "step-2"] and run.is_done()
    before = run.metrics()
    assert main([*args, "--resume"]) == 0  # finished: nothing to do, nothing rewritten
    assert run.metrics() == before
    assert main([*args[:-1], "arch.hidden_sise=16"]) == 2  # a typo is refused with a suggestion
    assert "hidden_size" in capsys.readouterr().err
