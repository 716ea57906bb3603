"""Perplexity: closed forms with hand-built models, HF's sliding-window loop as the oracle."""
from __future__ import annotations

import json
import math
from types import SimpleNamespace

import pytest
import torch

from lmlab.eval.perplexity import (
    PerplexityConfig,
    TextScore,
    corpus_stats,
    score_pairs,
    score_texts,
    tail_nll,
    windows,
)


class LogitLM(torch.nn.Module):
    """A causal LM stub whose logits are a fixed function of the input ids."""

    def __init__(self, fn, max_positions: int = 512):
        super().__init__()
        self.anchor = torch.nn.Parameter(torch.zeros(1))  # gives the stub a device
        self.fn = fn
        self.config = SimpleNamespace(max_position_embeddings=max_positions)

    def forward(self, input_ids, attention_mask=None):
        return SimpleNamespace(logits=self.fn(input_ids))


def uniform(vocab: int) -> LogitLM:
    return LogitLM(lambda ids: torch.zeros(*ids.shape, vocab))


def next_is_plus_one(vocab: int, p: float) -> LogitLM:
    """Puts probability p on token (x + 1) % V after x, and (1 - p)/(V - 1) on each other token."""
    def fn(ids):
        other = math.log((1 - p) / (vocab - 1))
        logits = torch.full((*ids.shape, vocab), other)  # (B, T, V) log-probs, already normalised
        logits.scatter_(-1, ((ids + 1) % vocab).unsqueeze(-1), math.log(p))
        return logits
    return LogitLM(fn)


def test_uniform_model_ppl_is_vocab_size(tiny_tokenizer_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_tokenizer_dir)
    vocab = len(tok)
    texts = ["the cat ran to the park.", "mia found a red ball and then she played with the dog."]
    scores = score_texts(uniform(vocab), tok, texts, max_length=8, stride=3)
    stats = corpus_stats(scores)
    assert stats["ppl"] == pytest.approx(vocab, rel=1e-6)
    assert all(s.ppl == pytest.approx(vocab, rel=1e-6) for s in scores)
    # with a BOS prefix every text token is scored, and bits per byte is tokens·log2 V / bytes
    n_tokens = sum(len(tok(t, add_special_tokens=False)["input_ids"]) for t in texts)
    assert stats["tokens"] == n_tokens
    n_bytes = sum(len(t.encode()) for t in texts)
    assert stats["bpb"] == pytest.approx(n_tokens * math.log2(vocab) / n_bytes, rel=1e-6)


def test_probability_p_on_right_token_closed_form():
    vocab, p = 10, 0.7
    model = next_is_plus_one(vocab, p)
    # 0→1→2→3→4 all right: ppl = 1/p exactly
    assert math.exp(tail_nll(model, [[0, 1, 2, 3, 4]], [4])[0] / 4) == pytest.approx(1 / p)
    # three right (0→1, 1→2, 5→6) and two wrong (2→5, 6→0): NLL = -(3 log p + 2 log((1-p)/(V-1)))
    nll = tail_nll(model, [[0, 1, 2, 5, 6, 0]], [5])[0]
    expected = -(3 * math.log(p) + 2 * math.log((1 - p) / (vocab - 1)))
    assert nll == pytest.approx(expected, rel=1e-6)
    assert math.exp(nll / 5) == pytest.approx(math.exp(expected / 5), rel=1e-6)


def test_windows_score_every_token_once_with_enough_context():
    for n_ids, max_length, stride in [(1, 4, 2), (2, 4, 2), (4, 4, 2), (5, 4, 3), (23, 8, 3), (100, 16, 15), (9, 8, 1)]:
        scored = []
        for begin, end, n in windows(n_ids, max_length, stride):
            assert end - begin <= max_length and 1 <= n < end - begin + (1 if begin else 0)
            for pos in range(end - n, end):
                assert pos - begin >= min(pos, max_length - stride)  # context seen by token `pos`
                scored.append(pos)
        assert scored == list(range(1, n_ids)), (n_ids, max_length, stride)


def _hf_sliding_window_nll(model, ids: list[int], max_length: int, stride: int) -> tuple[float, int]:
    """The loop of HF's "Perplexity of fixed-length models" guide (labels masked with -100, shifted)."""
    seq = torch.tensor([ids])
    nll_sum, n_tokens, prev_end = 0.0, 0, 0
    for begin in range(0, seq.size(1), stride):
        end = min(begin + max_length, seq.size(1))
        trg_len = end - prev_end
        input_ids = seq[:, begin:end]
        target = input_ids.clone()
        target[:, :-trg_len] = -100
        with torch.no_grad():
            logits = model(input_ids).logits
        nll_sum += torch.nn.functional.cross_entropy(logits[0, :-1], target[0, 1:], ignore_index=-100,
                                                     reduction="sum").item()
        n_tokens += (target[:, 1:] != -100).sum().item()
        prev_end = end
        if end == seq.size(1):
            break
    return nll_sum, n_tokens


def context_hungry(vocab: int) -> LogitLM:
    """Logits are a smooth function of the sum of all ids so far, so every token of context counts."""
    freq = 0.01 * torch.arange(1, vocab + 1, dtype=torch.float64)  # (V,)
    return LogitLM(lambda ids: 3.0 * torch.sin(ids.cumsum(-1).unsqueeze(-1) * freq).float())  # (B, T, V)


@pytest.fixture(scope="module")
def qwen(tiny_qwen2_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return AutoModelForCausalLM.from_pretrained(tiny_qwen2_dir).eval(), AutoTokenizer.from_pretrained(tiny_qwen2_dir)


LONG = "tom and mia went to the park with the dog. then she saw a big tree and he ran to the river because the sun."


def test_window_covering_text_equals_full_context_forward(qwen):
    model, tok = qwen
    ids = [tok.eos_token_id] + tok(LONG, add_special_tokens=False)["input_ids"]
    full = score_texts(model, tok, [LONG], max_length=len(ids), stride=1)[0]
    with torch.no_grad():
        ref = model(torch.tensor([ids]), labels=torch.tensor([ids])).loss.item() * (len(ids) - 1)
    assert full.tokens == len(ids) - 1
    assert full.nll == pytest.approx(ref, rel=1e-5)


def test_sliding_windows_match_hf_loop(qwen):
    _, tok = qwen
    model = context_hungry(len(tok))
    ids = [tok.eos_token_id] + tok(LONG, add_special_tokens=False)["input_ids"]
    assert len(ids) > 40
    full = score_texts(model, tok, [LONG], max_length=len(ids), stride=1)[0]
    for max_length, stride in [(8, 3), (10, 5), (12, 11), (len(ids) - 1, 4)]:
        got = score_texts(model, tok, [LONG], max_length=max_length, stride=stride, batch_size=3)[0]
        oracle_nll, oracle_tokens = _hf_sliding_window_nll(model, ids, max_length, stride)
        assert got.tokens == oracle_tokens == len(ids) - 1  # every token once, none lost
        assert got.nll == pytest.approx(oracle_nll, rel=1e-6)
        assert abs(got.nll - full.nll) > 1.0  # less context really is a different number


def test_batching_and_padding_change_nothing(qwen):
    model, tok = qwen
    texts = [LONG, "the cat.", "mia said she was happy and sad.", "a dog ran."]
    one = score_texts(model, tok, texts, max_length=16, stride=6, batch_size=1)
    many = score_texts(model, tok, texts, max_length=16, stride=6, batch_size=7)
    for a, b in zip(one, many, strict=True):
        assert (a.tokens, a.bytes) == (b.tokens, b.bytes)
        assert a.nll == pytest.approx(b.nll, rel=1e-4)


def test_without_bos_first_token_and_its_bytes_are_not_scored(qwen):
    model, tok = qwen
    text = "the cat ran."
    enc = tok(text, add_special_tokens=False)["input_ids"]
    s = score_texts(model, tok, [text], max_length=64, stride=8, add_bos=False)[0]
    assert s.tokens == len(enc) - 1
    assert s.bytes == len(text.encode()) - len(tok.decode(enc[:1]).encode())


def test_corpus_weighting_by_hand():
    # text A: 1 token, NLL ln 4 (ppl 4), 2 bytes; text B: 3 tokens, NLL 3 ln 2 (ppl 2), 6 bytes
    stats = corpus_stats([TextScore(math.log(4), 1, 2), TextScore(3 * math.log(2), 3, 6)])
    assert stats["ppl"] == pytest.approx(2 ** 1.25)  # exp(5 ln 2 / 4): token-weighted
    assert stats["mean_text_ppl"] == pytest.approx(3.0)  # (4 + 2) / 2: each text counts once
    assert stats["bpb"] == pytest.approx(5 / 8)  # 2 + 3 bits over 8 bytes
    assert stats["tokens"] == 4 and stats["texts"] == 2


def test_seq2seq_scores_target_given_source(tiny_tokenizer_dir):
    from transformers import AutoTokenizer, BartConfig, BartForConditionalGeneration

    tok = AutoTokenizer.from_pretrained(tiny_tokenizer_dir)
    torch.manual_seed(0)
    cfg = BartConfig(vocab_size=len(tok), d_model=32, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2,
                     decoder_attention_heads=2, encoder_ffn_dim=32, decoder_ffn_dim=32, max_position_embeddings=64,
                     pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                     decoder_start_token_id=tok.eos_token_id)
    model = BartForConditionalGeneration(cfg).eval()
    sources, targets = ["the cat ran to the park.", "a dog."], ["she was happy.", "then he saw a big red ball."]
    scores = score_pairs(model, tok, sources, targets, max_length=32, batch_size=2)
    for src, tgt, s in zip(sources, targets, scores, strict=True):
        labels = tok(text_target=tgt, return_tensors="pt")["input_ids"]
        with torch.no_grad():
            loss = model(**tok(src, return_tensors="pt"), labels=labels).loss.item()
        assert s.tokens == labels.shape[1]
        assert s.nll == pytest.approx(loss * labels.shape[1], rel=1e-4)


def test_config_rejects_stride_not_below_window():
    from lmlab.config import build
    from lmlab.errors import ConfigError

    with pytest.raises(ConfigError, match=r"stride \(8\) must be < max_length \(8\); stride=7"):
        build(PerplexityConfig, {"model": "m", "max_length": 8, "stride": 8})
    with pytest.raises(ConfigError, match="did you mean 'stride'"):
        build(PerplexityConfig, {"model": "m", "strde": 8})


def test_cli_two_sets_two_models(tmp_path, tiny_qwen2_dir, monkeypatch, capsys):
    from lmlab.cli import main

    (tmp_path / "stories.txt").write_text("the cat ran to the park.\n\nmia found a red ball.\n")
    (tmp_path / "news.txt").write_text("then he saw a big tree because the sun.\n")
    out = tmp_path / "out"
    rc = main(["eval", "ppl", f"model={tiny_qwen2_dir},{tiny_qwen2_dir}/", f"data={tmp_path / 'stories.txt'},{tmp_path / 'news.txt'}",
               f"out={out}", "max_length=16", "stride=5"])
    assert rc == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert len(metrics) == 2
    first = next(iter(metrics.values()))
    assert set(first["per_set"]) == {"stories", "news"}
    s, n = first["per_set"]["stories"], first["per_set"]["news"]
    # the corpus value is the token-weighted combination of the per-set values
    assert first["ppl"] == pytest.approx(math.exp((s["nll"] + n["nll"]) / (s["tokens"] + n["tokens"])))
    assert (out / "ppl.png").stat().st_size > 1000
    assert "corpus (token-weighted)" in capsys.readouterr().out


@pytest.mark.parametrize("arch", ["rnn:tiny", "lstm:tiny", "gru:tiny", "transformer:tiny"])
def test_every_causal_architecture_windows_and_batches_consistently(arch, tiny_tokenizer_dir):
    """Our own architectures: padding/batching changes nothing; a covering window = one forward pass."""
    from transformers import AutoTokenizer

    from lmlab.models import build_model

    tok = AutoTokenizer.from_pretrained(tiny_tokenizer_dir)
    torch.manual_seed(0)
    model = build_model(arch, len(tok), bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                        pad_token_id=tok.pad_token_id).eval()
    texts = [LONG, "the cat.", "mia said she was happy."]
    one = score_texts(model, tok, texts, max_length=64, stride=16, batch_size=1)
    many = score_texts(model, tok, texts, max_length=64, stride=16, batch_size=3)
    assert [a.nll for a in one] == pytest.approx([b.nll for b in many], rel=1e-4)
    ids = torch.tensor([[tok.eos_token_id, *tok(LONG, add_special_tokens=False)["input_ids"]]])
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0, :-1].float()  # (T-1, V)
    full = torch.nn.functional.cross_entropy(logits, ids[0, 1:], reduction="sum").item()
    assert one[0].nll == pytest.approx(full, rel=1e-4) and one[0].tokens == ids.shape[1] - 1


def test_one_set_gives_one_row_per_text(tmp_path, tiny_qwen2_dir, capsys):
    from lmlab.cli import main

    (tmp_path / "s.txt").write_text("the cat ran.\n\nmia found a red ball.\n\na dog.\n")
    out = tmp_path / "o"
    assert main(["eval", "ppl", f"model={tiny_qwen2_dir}", f"data={tmp_path / 's.txt'}", "max_rows=2", f"out={out}"]) == 0
    printed = capsys.readouterr().out
    assert "the cat ran." in printed and "mia found a red ball." in printed and "… 1 more texts" in printed
    metrics = next(iter(json.loads((out / "metrics.json").read_text()).values()))
    per_text = metrics["per_text"]
    assert len(per_text) == 3 and metrics["texts"] == 3
    assert metrics["mean_text_ppl"] == pytest.approx(sum(t["ppl"] for t in per_text) / 3)
    assert metrics["tokens"] == sum(t["tokens"] for t in per_text)


def test_run_folder_windows_default_to_the_training_length(tmp_path, tiny_qwen2_dir):
    import shutil

    from lmlab.api import evaluate

    run = tmp_path / "run"
    shutil.copytree(tiny_qwen2_dir, run / "final")
    (run / "config.yaml").write_text("model: transformer:tiny\nmax_length: 8\n")
    (tmp_path / "t.txt").write_text(LONG + "\n")
    metrics = evaluate("ppl", model=str(run), data=str(tmp_path / "t.txt"))
    assert metrics["run"]["max_length"] == 8 and metrics["run"]["stride"] == 4
    assert evaluate("ppl", model=str(run / "final"), data=str(tmp_path / "t.txt"))["run"]["max_length"] == 8
    assert evaluate("ppl", model=str(run), data=str(tmp_path / "t.txt"), max_length=16)["run"]["max_length"] == 16


def test_one_sentence_a_line_and_dropped_headings(tmp_path, tiny_qwen2_dir, capsys, monkeypatch):
    """text_unit=line makes each line a row; clean={drop_headings: true} removes WikiText '= Title =' lines."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from lmlab.api import evaluate
    from lmlab.errors import ConfigError

    lines = ["the cat ran to the park.", "mia found a red ball.", "then he saw a big tree."]
    path = tmp_path / "wiki.txt"
    path.write_text(" = Animals = \n" + "\n".join(lines[:2]) + "\n = = Trees = = \n" + lines[2] + "\n")
    monkeypatch.setenv("LMLAB_QUIET", "0")
    whole = next(iter(evaluate("ppl", model=str(tiny_qwen2_dir), data=str(path)).values()))
    assert whole["texts"] == 1  # no blank lines: the whole file is one paragraph (and a hint says so)
    assert "text_unit=line scores each line" in " ".join(capsys.readouterr().err.split())
    per_line = next(iter(evaluate("ppl", model=str(tiny_qwen2_dir), data=str(path), text_unit="line").values()))
    assert per_line["texts"] == 5
    clean = next(iter(evaluate("ppl", model=str(tiny_qwen2_dir), data=str(path), text_unit="line",
                               clean={"drop_headings": True}).values()))
    assert clean["texts"] == 3
    # each row is that sentence scored alone
    tok = AutoTokenizer.from_pretrained(tiny_qwen2_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_qwen2_dir).eval()
    alone = score_texts(model, tok, lines, max_length=256, stride=128)
    assert [r["ppl"] for r in clean["per_text"]] == pytest.approx([s.ppl for s in alone], rel=1e-4)
    with pytest.raises(ConfigError, match="drop_heading"):
        evaluate("ppl", model=str(tiny_qwen2_dir), data=str(path), clean={"drop_heading": True})
