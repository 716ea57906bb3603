"""Decoding: greedy == a hand-written argmax loop, padding, seeds, top_k=1, stop strings, beams, stream."""
from __future__ import annotations

import json

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

import lmlab.models as zoo
from lmlab.data.chat import render_prompt
from lmlab.errors import ConfigError
from lmlab.generate import DecodingConfig, generate, generation_kwargs, stream

GREEDY = DecodingConfig(temperature=0, max_new_tokens=8)


@pytest.fixture(scope="module")
def tok(tiny_tokenizer_dir):
    return AutoTokenizer.from_pretrained(tiny_tokenizer_dir)


@pytest.fixture(scope="module")
def qwen(tiny_qwen2_dir):
    return AutoModelForCausalLM.from_pretrained(tiny_qwen2_dir).eval()


def ours(arch: str, tok, seed: int = 0):
    torch.manual_seed(seed)
    return zoo.build_model(
        f"{arch}:tiny", len(tok), overrides={"hidden_size": 32, "num_layers": 2},
        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
    ).eval()


def argmax_loop(model, tok, prompt: str, steps: int) -> str:
    """The oracle: full forward, take the argmax, append; stop at eos."""
    ids = tok(prompt, return_tensors="pt").input_ids
    new = []
    with torch.no_grad():
        for _ in range(steps):
            nxt = int(model(input_ids=ids).logits[0, -1].argmax())
            if nxt == tok.eos_token_id:
                break
            new.append(nxt)
            ids = torch.cat([ids, torch.tensor([[nxt]])], 1)
    return tok.decode(new, skip_special_tokens=True)


@pytest.mark.parametrize("arch", ["qwen", "rnn", "lstm", "gru"])
def test_greedy_equals_an_argmax_loop_and_batching_with_left_padding(arch, tok, qwen):
    model = qwen if arch == "qwen" else ours(arch, tok)
    prompts = ["the cat", "a dog ran to the big red house and"]  # different lengths → left padding
    out = generate(model, tok, prompts, GREEDY)
    assert out == [[argmax_loop(model, tok, p, 8)] for p in prompts]
    assert generate(model, tok, prompts, GREEDY) == out  # deterministic


def test_seq2seq_generates_without_the_prompt(tok):
    model = ours("seq2seq", tok)
    a = generate(model, tok, ["the cat", "a dog"], DecodingConfig(temperature=0, max_new_tokens=5))
    ids = tok(["the cat"], return_tensors="pt")
    direct = model.generate(**ids, max_new_tokens=5, do_sample=False, eos_token_id=[tok.eos_token_id, tok.convert_tokens_to_ids("<|im_end|>")], pad_token_id=tok.pad_token_id)
    assert a[0] == [tok.decode(direct[0], skip_special_tokens=True)]
    assert len(a) == 2


def test_seed_reproducible_and_n_samples(tok, qwen):
    cfg = DecodingConfig(temperature=1.0, max_new_tokens=10, n=3, seed=7)
    a = generate(qwen, tok, ["the cat", "she"], cfg)
    b = generate(qwen, tok, ["the cat", "she"], cfg)
    c = generate(qwen, tok, ["the cat", "she"], DecodingConfig(temperature=1.0, max_new_tokens=10, n=3, seed=8))
    assert a == b
    assert a != c
    assert [len(x) for x in a] == [3, 3]
    assert len(set(a[0])) > 1  # a random model sampled at T=1 gives different continuations


@pytest.mark.parametrize("arch", ["qwen", "lstm"])
def test_top_k_1_sampling_is_greedy(arch, tok, qwen):
    model = qwen if arch == "qwen" else ours(arch, tok)
    sampled = generate(model, tok, ["the cat"], DecodingConfig(temperature=1.3, top_k=1, max_new_tokens=8, seed=3))
    assert sampled == generate(model, tok, ["the cat"], GREEDY)


def test_stop_strings_cut_the_text(tok, qwen):
    full = generate(qwen, tok, ["the"], DecodingConfig(temperature=0, max_new_tokens=16))[0][0]
    assert len(full) >= 6
    stop = full[3:5]
    cut = generate(qwen, tok, ["the"], DecodingConfig(temperature=0, max_new_tokens=16, stop=[stop]))[0][0]
    assert cut == full[: full.find(stop)]


@pytest.mark.parametrize("arch", ["qwen", "rnn", "gru"])
def test_beams_return_n_distinct_and_recurrent_cache_reorders(arch, tok, qwen):
    model = qwen if arch == "qwen" else ours(arch, tok)
    out = generate(model, tok, ["the cat", "a"], DecodingConfig(temperature=0, beams=4, n=3, max_new_tokens=6))
    assert [len(x) for x in out] == [3, 3]
    ids = tok(["the cat"], return_tensors="pt")
    kw = {"num_beams": 4, "num_return_sequences": 3, "max_new_tokens": 6, "do_sample": False, "pad_token_id": tok.pad_token_id}
    # beam search with the cache (reordered per step) == beam search recomputing everything
    assert model.generate(**ids, use_cache=True, **kw).tolist() == model.generate(**ids, use_cache=False, **kw).tolist()


@pytest.mark.parametrize("arch", ["qwen", "rnn"])
def test_stream_concatenates_to_generate(arch, tok, qwen):
    model = qwen if arch == "qwen" else ours(arch, tok)
    cfg = DecodingConfig(temperature=0, max_new_tokens=12)
    full = generate(model, tok, ["the cat"], cfg)[0][0]
    assert "".join(stream(model, tok, "the cat", cfg)) == full
    stop = full[4:6]
    pieces = list(stream(model, tok, "the cat", DecodingConfig(temperature=0, max_new_tokens=12, stop=[stop])))
    assert "".join(pieces) == full[: full.find(stop)]


def test_stop_token_ids_end_generation(tok, qwen):
    kw = generation_kwargs(qwen, tok, GREEDY)
    assert kw["eos_token_id"] == [tok.eos_token_id, tok.convert_tokens_to_ids("<|im_end|>")]
    assert kw["do_sample"] is False and "temperature" not in kw


def test_render_prompt_uses_the_template_or_chatml(tok):
    msgs = [{"role": "user", "content": "hi"}]
    want = "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    assert render_prompt(tok, msgs) == want
    bare = AutoTokenizer.from_pretrained(tok.name_or_path)
    bare.chat_template = None
    assert render_prompt(bare, msgs) == want


def test_decoding_config_validation():
    from lmlab.config import build

    with pytest.raises(ConfigError, match="beams >= n"):
        build(DecodingConfig, {"beams": 2, "n": 3})
    with pytest.raises(ConfigError, match="temperature must be >= 0"):
        build(DecodingConfig, {"temperature": -1})
    with pytest.raises(ConfigError, match="would all be identical"):
        build(DecodingConfig, {"temperature": 0, "n": 2})
    assert build(DecodingConfig, {"temperature": 0}).do_sample is False


def test_generate_command_writes_samples(tiny_qwen2_dir, tmp_path, capsys):
    from lmlab.cli import main

    out = tmp_path / "gen"
    code = main(["generate", str(tiny_qwen2_dir), "prompt=the cat, the dog", "temperature=0.7", "n=2",
                 "max_new_tokens=5", "seed=1", f"out={out}"])
    assert code == 0
    rows = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    assert [r["sample"] for r in rows] == [0, 1]
    assert all(r["prompt"] == "the cat, the dog" for r in rows)  # a comma stays in the prompt
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["samples"] == 2 and 0 < metrics["new_tokens"] <= 10
    assert rows[0]["text"] in capsys.readouterr().out
    # the report headlines a sampling stage by its prompt and decoding, read from config.yaml
    from lmlab.report import ReportConfig, report

    report(ReportConfig(run_dir=str(out)))
    assert "prompt 'the cat, the dog' · temperature 0.7" in (out / "report.md").read_text()


def test_prompt_files_and_their_errors(tmp_path):
    from lmlab.errors import DataError
    from lmlab.generate import read_prompts

    (tmp_path / "p.txt").write_text("the cat\n\na dog, a ball\n")
    assert read_prompts(str(tmp_path / "p.txt")) == ["the cat", "a dog, a ball"]
    (tmp_path / "p.jsonl").write_text('{"prompt": "one"}\n{"text": "two"}\n')
    with pytest.raises(DataError, match=r"p\.jsonl:2: expected an object with a 'prompt' string"):
        read_prompts(str(tmp_path / "p.jsonl"))
    (tmp_path / "bad.jsonl").write_text('{"prompt": "one"}\n{oops\n')
    with pytest.raises(DataError, match=r"bad\.jsonl:2: not valid JSON"):
        read_prompts(str(tmp_path / "bad.jsonl"))


def test_persona_prompts_are_the_same_files_stripped(tmp_path):
    from lmlab.errors import DataError
    from lmlab.eval.persona import DEFAULT_PROMPTS
    from lmlab.eval.persona import read_prompts as persona_prompts
    from lmlab.generate import read_prompts

    (tmp_path / "p.txt").write_text("  the cat \n\n a dog\n")
    assert read_prompts(str(tmp_path / "p.txt")) == ["  the cat ", " a dog"]
    assert persona_prompts(str(tmp_path / "p.txt")) == ["the cat", "a dog"]
    (tmp_path / "p.jsonl").write_text('{"prompt": " one "}\n')
    assert persona_prompts(str(tmp_path / "p.jsonl")) == [" one "]
    assert persona_prompts(None) == DEFAULT_PROMPTS
    (tmp_path / "empty.txt").write_text("\n  \n")
    with pytest.raises(DataError, match=r"empty\.txt: holds no prompts"):
        persona_prompts(str(tmp_path / "empty.txt"))


def test_tiny_top_p_is_greedy_and_a_huge_repetition_penalty_never_repeats(tok, qwen):
    greedy = generate(qwen, tok, ["the cat"], GREEDY)
    assert generate(qwen, tok, ["the cat"], DecodingConfig(temperature=1.0, top_p=1e-4, max_new_tokens=8, seed=5)) == greedy
    ids = tok("the cat", return_tensors="pt")
    kw = generation_kwargs(qwen, tok, DecodingConfig(temperature=0, max_new_tokens=20, repetition_penalty=1e6))
    kw["eos_token_id"] = None  # let it run all 20 steps
    out = qwen.generate(**ids, **kw)[0].tolist()
    assert len(out) == ids.input_ids.shape[1] + 20
    assert len(set(out)) == len(out)  # no token of the prompt or of the output comes back
    plain = generate(qwen, tok, ["the cat"], DecodingConfig(temperature=0, max_new_tokens=20))[0][0]
    assert plain != tok.decode(out[ids.input_ids.shape[1]:], skip_special_tokens=True)
