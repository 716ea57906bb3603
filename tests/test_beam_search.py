"""Beam search against an exhaustive search: ranking, HF's length-penalised score, n-gram blocking, the CLI.

The model is a bigram table (tests/fixed_logits.py) over three letters and eos, so every sequence
a search could return is enumerable: a sequence of new tokens ends at eos or after max_new_tokens;
its score is the sum of its tokens' log-probabilities divided by length ** length_penalty (HF's
`sequences_scores`; the length counts the generated tokens, eos included). A beam as wide as the
number of complete sequences never drops one, so it must return the brute force's ranking exactly;
a narrow beam must still find the best sequence where greedy decoding does not.
"""
from __future__ import annotations

import json
import math

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from fixed_logits import bigram_model, letter_ids
from lmlab.config import build
from lmlab.errors import ConfigError
from lmlab.generate import DecodingConfig, generate, generation_kwargs

LETTERS = "abc"
# irregular values, so that no two of the sequences compared below tie
ROWS = {"a": [0.0, 1.0, 0.83], "b": [0.05, 0.21, 0.13], "c": [2.5, -1.1, -0.7]}
EOS = {"a": -0.5, "b": 0.3, "c": -2.0}
STEPS = 4
EXHAUSTIVE = 128  # > 1 + 3 + 9 + 27 sequences ending in eos + 81 running to STEPS: nothing is ever pruned


@pytest.fixture(scope="module")
def tok(tiny_tokenizer_dir):
    return AutoTokenizer.from_pretrained(tiny_tokenizer_dir)


@pytest.fixture(scope="module")
def model(tok):
    return bigram_model(tok, ROWS, eos_logits=EOS, letters=LETTERS)


def log_probs(prev: str) -> dict[str | None, float]:
    """log-softmax of the row after `prev` (None = eos); the table's other tokens have probability 0."""
    z = [*ROWS[prev], EOS[prev]]
    norm = math.log(sum(math.exp(x) for x in z))
    return dict(zip([*LETTERS, None], [x - norm for x in z], strict=True))


def brute_force(prompt: str, length_penalty: float, no_repeat_ngram_size: int = 0) -> list[tuple[str, float]]:
    """Every complete continuation with its score, best first. A sequence ending in eos is shown
    without it (as the decoded text is), so text length < STEPS means it stopped at eos. With
    `no_repeat_ngram_size=n`, a token that would repeat an n-gram of prompt + text is never taken."""
    scored: dict[str, float] = {}

    def extend(text: str, total: float) -> None:
        for token, lp in log_probs((prompt + text)[-1]).items():
            if token is None:
                scored[text] = (total + lp) / (len(text) + 1) ** length_penalty
                continue
            full, n = prompt + text + token, no_repeat_ngram_size
            if n and any(full[i:i + n] == full[-n:] for i in range(len(full) - n)):
                continue
            if len(text) + 1 == STEPS:
                scored[text + token] = (total + lp) / STEPS ** length_penalty
            else:
                extend(text + token, total + lp)

    extend("", 0.0)
    return sorted(scored.items(), key=lambda kv: -kv[1])


def assert_top(texts: list[str], scores: list[float], ranking: list[tuple[str, float]]) -> None:
    """`texts` (with HF's `scores`) are the len(texts) best continuations of `ranking`, best first.
    Two sequences made of the same bigram steps in another order tie exactly, so texts of equal
    score may come in either order: each text must carry its brute-force score, and the scores must
    be the brute force's top scores."""
    brute = dict(ranking)
    assert len(set(texts)) == len(texts) == len(scores)
    assert scores == pytest.approx([s for _, s in ranking[: len(texts)]], abs=1e-5)
    assert [brute.get(t) for t in texts] == pytest.approx(scores, abs=1e-5), (texts, ranking[: len(texts) + 1])


def hf_scores(model, tok, prompt: str, cfg: DecodingConfig) -> list[float]:
    """HF's own `sequences_scores` under the kwargs lmlab passes (length penalty included)."""
    ids = tok(prompt, return_tensors="pt")
    with torch.no_grad():
        out = model.generate(**ids, **generation_kwargs(model, tok, cfg), output_scores=True, return_dict_in_generate=True)
    return out.sequences_scores.tolist()


@pytest.mark.parametrize("length_penalty", [1.0, 0.0, 2.0, -1.0])
def test_an_exhaustive_beam_returns_the_brute_force_ranking_and_scores(model, tok, length_penalty):
    cfg = DecodingConfig(temperature=0, beams=EXHAUSTIVE, n=5, max_new_tokens=STEPS, length_penalty=length_penalty)
    (texts,) = generate(model, tok, ["a"], cfg)
    assert_top(texts, hf_scores(model, tok, "a", cfg), brute_force("a", length_penalty))


def test_the_length_penalty_changes_the_winner():
    """The cases above are not all the same search: 0 favours the short "b"+eos, 1 and 2 the long
    "caca", and -1 stopping at once."""
    winners = {lp: brute_force("a", lp)[0][0] for lp in (0.0, 1.0, 2.0, -1.0)}
    assert winners == {0.0: "b", 1.0: "caca", 2.0: "caca", -1.0: ""}


def test_a_narrow_beam_finds_the_best_sequence_greedy_misses(model, tok):
    (best, score), (_, second) = brute_force("a", 1.0)[:2]
    assert score - second > 0.1
    greedy = generate(model, tok, ["a"], DecodingConfig(temperature=0, max_new_tokens=STEPS))[0][0]
    assert greedy == "b" != best  # a → b (the likeliest next letter), then eos
    assert generate(model, tok, ["a"], DecodingConfig(temperature=0, beams=3, max_new_tokens=STEPS))[0][0] == best


@pytest.mark.parametrize("size", [2, 3])
def test_no_repeat_ngram_blocking_equals_the_filtered_brute_force(model, tok, size):
    cfg = DecodingConfig(temperature=0, beams=EXHAUSTIVE, n=4, max_new_tokens=STEPS, no_repeat_ngram_size=size)
    (texts,) = generate(model, tok, ["a"], cfg)
    assert_top(texts, hf_scores(model, tok, "a", cfg), brute_force("a", 1.0, no_repeat_ngram_size=size))
    assert "caca" not in texts and brute_force("a", 1.0)[0][0] == "caca"  # the unblocked best repeats "ca"


def test_no_repeat_ngram_in_greedy_decoding(tok):
    """a → a is the likeliest step, so greedy writes "aaaaaa". With size 2 each bigram may occur once:
    (prompt a) a·a, a·c (a's next best), c·a, a·b, b·a; then every bigram from a is used, and eos (a's
    only other token) ends the text: "acaba"."""
    m = bigram_model(tok, {"a": [2.0, 0.0, 1.0], "b": [0.0, 0.0, 0.0], "c": [1.5, 0.2, 0.0]}, eos_logits={"a": -5.0},
                     letters=LETTERS)
    assert generate(m, tok, ["a"], DecodingConfig(temperature=0, max_new_tokens=6)) == [["aaaaaa"]]
    out = generate(m, tok, ["a"], DecodingConfig(temperature=0, max_new_tokens=6, no_repeat_ngram_size=2))[0][0]
    assert out == greedy_blocked(m, tok, "a", 6, 2) == "acaba"


def greedy_blocked(model, tok, prompt: str, steps: int, n: int) -> str:
    """The oracle: argmax over the letters whose n-gram with the text so far is new."""
    ids = letter_ids(tok, LETTERS)
    text = prompt
    for _ in range(steps):
        row = model.table[ids[text[-1]]]
        allowed = [c for c in LETTERS if (text + c)[-n:] not in {text[i:i + n] for i in range(len(text) - n + 1)}]
        if not allowed:
            break
        text += max(allowed, key=lambda c: float(row[ids[c]]))
    return text[len(prompt):]


def test_beam_knobs_are_checked_with_clear_errors(model, tok):
    from lmlab.generate import GenerateConfig

    with pytest.raises(ConfigError, match=r"length_penalty=0\.5 only changes beam search; set beams > 1"):
        build(GenerateConfig, {"model": "m", "length_penalty": 0.5})
    # chat and serve stream a single row and ignore beams: there the key is accepted (and unused)
    assert build(DecodingConfig, {"length_penalty": 0.5}).length_penalty == 0.5
    with pytest.raises(ConfigError, match="length_penalty must be a finite number"):
        build(DecodingConfig, {"length_penalty": float("nan"), "beams": 2})
    with pytest.raises(ConfigError, match=r"no_repeat_ngram_size must be >= 0 \(0 = off\), got -1"):
        build(DecodingConfig, {"no_repeat_ngram_size": -1})
    ok = build(DecodingConfig, {"length_penalty": -0.5, "beams": 2, "no_repeat_ngram_size": 3, "temperature": 0})
    kwargs = generation_kwargs(model, tok, ok)
    assert kwargs["length_penalty"] == -0.5 and kwargs["no_repeat_ngram_size"] == 3 and kwargs["num_beams"] == 2


def test_generate_command_prints_what_model_generate_returns(tiny_qwen2_dir, tmp_path, capsys):
    """`lmlab generate` on a real checkpoint: greedy, and beams with both knobs, equal plain HF generate."""
    from lmlab.cli import main
    from lmlab.templates import stop_token_ids

    tok = AutoTokenizer.from_pretrained(tiny_qwen2_dir)
    hf = AutoModelForCausalLM.from_pretrained(tiny_qwen2_dir).eval()
    ids = tok("the dog found", return_tensors="pt")
    fixed = {"max_new_tokens": 10, "eos_token_id": stop_token_ids(tok), "pad_token_id": tok.pad_token_id,
             "do_sample": False, "temperature": None, "top_k": None, "top_p": None}

    def direct(**kw) -> list[str]:
        with torch.no_grad():
            out = hf.generate(**ids, **fixed, **kw)
        return tok.batch_decode(out[:, ids.input_ids.shape[1]:], skip_special_tokens=True)

    out = tmp_path / "greedy"
    assert main(["generate", str(tiny_qwen2_dir), "prompt=the dog found", "temperature=0", "max_new_tokens=10",
                 f"out={out}"]) == 0
    rows = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    assert [r["text"] for r in rows] == direct()
    assert rows[0]["text"].strip() and rows[0]["text"] in capsys.readouterr().out
    out = tmp_path / "beams"
    assert main(["generate", str(tiny_qwen2_dir), "prompt=the dog found", "temperature=0", "max_new_tokens=10",
                 "beams=4", "n=3", "length_penalty=0.5", "no_repeat_ngram_size=2", f"out={out}"]) == 0
    rows = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    want = direct(num_beams=4, num_return_sequences=3, length_penalty=0.5, no_repeat_ngram_size=2)
    assert [r["text"] for r in rows] == want and len(set(want)) == 3
    assert want != direct(num_beams=4, num_return_sequences=3)  # the two knobs changed the beams
