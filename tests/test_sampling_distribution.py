"""Sampling draws from exactly the distribution each knob defines (temperature, top-k, top-p, repetition penalty).

A model with fixed logits (tests/fixed_logits.py) gives the exact next-token distribution; the oracle
below rebuilds the filtered distribution from the definitions, and 4000 draws through
`lmlab.generate.generate` must match it token by token within 4 binomial standard deviations
(a false alarm about once in 15 000 checks), with filtered-out tokens never drawn at all.
"""
from __future__ import annotations

import math
from collections import Counter

import pytest
from transformers import AutoTokenizer

from fixed_logits import LETTERS, bigram_model
from lmlab.generate import DecodingConfig, generate

LOGITS = [2.0, 1.0, 0.5, 0.0, -1.0, -2.0]  # after every letter; a is the favourite
DRAWS = 4000


@pytest.fixture(scope="module")
def tok(tiny_tokenizer_dir):
    return AutoTokenizer.from_pretrained(tiny_tokenizer_dir)


@pytest.fixture(scope="module")
def model(tok):
    return bigram_model(tok, {c: LOGITS for c in LETTERS})


def softmax(z: list[float]) -> list[float]:
    top = max(z)
    e = [math.exp(x - top) if x != -math.inf else 0.0 for x in z]
    return [x / sum(e) for x in e]


def oracle(context: str, *, temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0,
           repetition_penalty: float = 1.0) -> list[float]:
    """The next-letter distribution, from the definitions, in the order HF applies them:
    repetition penalty on every token already in the text (positive logits divided, negative multiplied:
    Keskar et al. 2019), then temperature, then keep the k largest, then keep the smallest set of most
    likely tokens whose probability reaches top_p (Holtzman et al. 2020), renormalised."""
    z = list(LOGITS)
    for i, c in enumerate(LETTERS):
        if c in context:
            z[i] = z[i] / repetition_penalty if z[i] > 0 else z[i] * repetition_penalty
    z = [x / temperature for x in z]
    order = sorted(range(len(z)), key=lambda i: -z[i])
    if top_k:
        for i in order[top_k:]:
            z[i] = -math.inf
    p = softmax(z)
    kept, mass = set(), 0.0
    for i in order:
        if mass >= top_p:
            break
        kept.add(i)
        mass += p[i]
    return softmax([z[i] if i in kept else -math.inf for i in range(len(z))])


def test_the_oracle_on_hand_worked_values():
    # T=1: e^2, e^1, e^.5, 1, e^-1, e^-2 = 7.389, 2.718, 1.649, 1, .368, .135 (sum 13.259)
    assert oracle("a") == pytest.approx([0.5573, 0.2050, 0.1244, 0.0754, 0.0277, 0.0102], abs=1e-4)
    # top_p=0.8: a+b = .762 < .8, a+b+c = .887 ≥ .8 → keep three: 7.389, 2.718, 1.649 over 11.756
    assert oracle("a", top_p=0.8) == pytest.approx([0.6285, 0.2312, 0.1403, 0, 0, 0], abs=1e-4)
    # repetition 2 after "ea": a's 2 → 1, e's -1 → -2: e^1, e^1, e^.5, 1, e^-2, e^-2 (sum 8.355)
    assert oracle("ea", repetition_penalty=2) == pytest.approx([0.3253, 0.3253, 0.1973, 0.1197, 0.0162, 0.0162], abs=1e-4)


def draw(model, tok, prompt: str, **knobs) -> Counter:
    assert tok.convert_ids_to_tokens(tok(prompt)["input_ids"]) == list(prompt)  # one token per letter
    cfg = DecodingConfig(max_new_tokens=1, n=DRAWS, seed=1234, **knobs)
    (texts,) = generate(model, tok, [prompt], cfg, batch_size=1)
    return Counter(texts)


CASES = {
    "T=1": ("a", {"temperature": 1.0}),
    "T=0.5 (sharper)": ("a", {"temperature": 0.5}),
    "T=2 (flatter)": ("a", {"temperature": 2.0}),
    "top_k=3": ("a", {"temperature": 1.0, "top_k": 3}),
    "top_p=0.8": ("a", {"temperature": 1.0, "top_p": 0.8}),
    "top_p=0.85 at T=2": ("a", {"temperature": 2.0, "top_p": 0.85}),
    "repetition 3, both signs": ("ea", {"temperature": 1.0, "repetition_penalty": 3.0}),
    "all knobs": ("fa", {"temperature": 0.7, "top_k": 4, "top_p": 0.92, "repetition_penalty": 1.5}),
}


@pytest.mark.parametrize("case", list(CASES))
def test_draw_frequencies_match_the_filtered_distribution(model, tok, case):
    prompt, knobs = CASES[case]
    want = oracle(prompt, **knobs)
    counts = draw(model, tok, prompt, **knobs)
    assert set(counts) <= set(LETTERS) and sum(counts.values()) == DRAWS
    for letter, p in zip(LETTERS, want, strict=True):
        seen = counts[letter] / DRAWS
        if p == 0:
            assert counts[letter] == 0, f"{case}: {letter} is filtered out but was drawn {counts[letter]} times"
        else:
            sigma = math.sqrt(p * (1 - p) / DRAWS)
            assert abs(seen - p) <= 4 * sigma + 1e-9, f"{case}: {letter} drawn {seen:.4f}, expected {p:.4f} ± {4 * sigma:.4f}"


def test_each_knob_moves_the_distribution_far_beyond_the_tolerance():
    """Dropping any one knob of a case (or forcing T=1) moves some probability by more than 8 of
    the case's standard deviations, so an implementation that ignored it would fail that case."""
    defaults = {"temperature": 1.0, "top_k": 0, "top_p": 1.0, "repetition_penalty": 1.0}
    for case, (prompt, knobs) in CASES.items():
        want = oracle(prompt, **knobs)
        for knob in knobs:
            if knobs[knob] == defaults[knob]:
                continue
            other = oracle(prompt, **{**knobs, knob: defaults[knob]})
            widest = max(abs(w - o) / math.sqrt(max(w * (1 - w), 1e-12) / DRAWS) for w, o in zip(want, other, strict=True))
            assert widest > 8, (case, knob)


def test_the_seed_fixes_the_draws_and_another_seed_changes_them(model, tok):
    cfg = {"max_new_tokens": 6, "n": 8, "temperature": 2.0}
    a = generate(model, tok, ["a"], DecodingConfig(seed=3, **cfg))
    assert a == generate(model, tok, ["a"], DecodingConfig(seed=3, **cfg))
    assert a != generate(model, tok, ["a"], DecodingConfig(seed=4, **cfg))
    assert len(set(a[0])) == 8  # 6 letters from a flat-ish distribution: 8 draws are all different
