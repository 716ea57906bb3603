"""Model-vs-model comparison: win rate, paired tests and outputs on stub generations and a stub judge,
and once through the real path (two tiny checkpoints, greedy decoding, the gold judge, ppl_table)."""
from __future__ import annotations

import json
import math

import pytest
from scipy import stats

from lmlab.eval import compare
from lmlab.eval.compare import CompareConfig, judge_summary, paired_t, samples_markdown, summarize, win_rate

BASE = [0.2, 0.5, 0.5, 0.9]
TUNED = [0.4, 0.5, 0.7, 0.8]


def test_win_rate_counts_ties_half():
    # 0.4>0.2 win, 0.5=0.5 tie, 0.7>0.5 win, 0.8<0.9 loss → (1 + 0.5 + 1 + 0) / 4
    assert win_rate(BASE, TUNED) == 0.625
    assert win_rate(TUNED, BASE) == 0.375  # the two directions add to one
    assert win_rate(BASE, BASE) == 0.5
    with pytest.raises(ValueError):
        win_rate([1.0], [1.0, 2.0])


def test_paired_t_worked_values():
    # differences 0.2, 0, 0.2, -0.1: mean 0.075, sample sd 0.15, t = 0.075 / (0.15 / 2) = 1, df 3
    t, p = paired_t(BASE, TUNED)
    assert t == pytest.approx(1.0)
    assert p == pytest.approx(2 * stats.t.sf(1.0, 3))
    assert all(math.isnan(x) for x in paired_t([1, 2, 3], [2, 3, 4]))  # constant difference: undefined


def test_judge_summary_against_baseline():
    s = judge_summary({"base": BASE, "sft": TUNED})["models"]
    assert s["base"]["mean"] == pytest.approx(0.525) and "win_rate" not in s["base"]
    assert s["sft"]["mean"] == pytest.approx(0.6) and s["sft"]["mean_diff"] == pytest.approx(0.075)
    assert s["sft"]["win_rate"] == 0.625 and s["sft"]["paired_t"] == pytest.approx(1.0)
    welch = stats.ttest_ind(TUNED, BASE, equal_var=False)
    assert s["sft"]["welch_t"] == pytest.approx(welch.statistic) and s["sft"]["welch_p"] == pytest.approx(welch.pvalue)


def _stub_judge(prompts, responses):
    """1 point per prompt word echoed in the response, scaled to [0, 1]."""
    out = []
    for p, r in zip(prompts, responses, strict=True):
        words = set(p.lower().split())
        out.append(sum(w in words for w in r.lower().split()) / max(1, len(r.split())))
    return out


PROMPTS = ["tell a story about a cat", "a dog in the park", "write about rain", "the red ball"]
ANSWERS = {
    "base": ["once there was a mouse", "dog park", "sun and sky", "the red ball"],
    "sft": ["a cat poem", "a dog in the park", "rain rain", "blue sky"],
}


def test_summarize_with_stub_judge():
    metrics, scores = summarize(PROMPTS, ANSWERS, {"echo": _stub_judge})
    # base: "a" of 5 words; both words; none; all 3 → 0.2, 1, 0, 1. sft: 2/3 ("a", "cat", not "poem"), 1, 1, 0
    assert scores["echo"]["base"] == pytest.approx([0.2, 1.0, 0.0, 1.0])
    assert scores["echo"]["sft"] == pytest.approx([2 / 3, 1.0, 1.0, 0.0])
    sft = metrics["judges"]["echo"]["models"]["sft"]
    assert sft["win_rate"] == pytest.approx((1 + 0.5 + 1 + 0) / 4)
    assert metrics["text"]["base"]["words"] == pytest.approx((5 + 2 + 3 + 3) / 4)
    assert metrics["prompts"] == 4 and metrics["baseline"] == "base"


def test_samples_markdown_side_by_side():
    _, scores = summarize(PROMPTS, ANSWERS, {"echo": _stub_judge})
    md = samples_markdown(PROMPTS, {"base": ["\n\na|b\nc\n", *ANSWERS["base"][1:]], "sft": ANSWERS["sft"]}, scores)
    lines = md.strip().splitlines()
    assert lines[0] == "| # | prompt | base | sft |" and len(lines) == 2 + 4
    assert "a\\|b<br>c<br>*echo=0.2*" in lines[2] and "a cat poem<br>*echo=0.667*" in lines[2]


def test_run_writes_metrics_samples_and_plots(tmp_path, monkeypatch):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("\n".join(PROMPTS) + "\n\n")
    monkeypatch.setattr(compare, "generate_answers", lambda spec, ps, cfg: ANSWERS["sft" if "tuned" in spec else "base"][: len(ps)])
    monkeypatch.setattr(compare, "make_judges", lambda cfg: {"echo": _stub_judge})
    out = tmp_path / "cmp"
    metrics = compare.run(CompareConfig(model="runs/base,runs/tuned", prompts=str(prompts), n=4, judge="gold", out=str(out)))
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["judges"]["echo"]["models"]["tuned"]["win_rate"] == 0.625
    assert saved["models"] == {"base": "runs/base", "tuned": "runs/tuned"} and metrics["prompts"] == 4
    assert saved["table"]["tuned"]["echo_win_rate"] == 0.625 and "echo_win_rate" not in saved["table"]["base"]
    assert saved["table"]["base"]["echo_mean"] == pytest.approx(0.55) and saved["table"]["base"]["words"] == 3.25
    assert (out / "samples.md").read_text().count("\n") == 6
    assert len((out / "samples.jsonl").read_text().splitlines()) == 4
    for png in ("reward_echo.png", "mean_reward.png"):
        assert (out / png).read_bytes()[:4] == b"\x89PNG"


def test_config_needs_two_models():
    from lmlab.config import build
    from lmlab.errors import ConfigError

    with pytest.raises(ConfigError, match="at least two models"):
        build(CompareConfig, {"model": "runs/a"})


def test_two_real_models_through_the_real_path(tmp_path, tiny_qwen2_dir, model_dir):
    """No stubs: two tiny checkpoints answer through `eval compare` with the gold judge and a ppl table.
    Oracles: one-prompt-at-a-time HF greedy `generate` for the answers, the gold judge called directly
    for the scores, HF's own causal-LM loss (exp of it) for each text's perplexity."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from chat_model import GreedyOracle
    from lmlab.data.storyworld import gold_reward

    prompts = ["Write a story about a girl named Mia at the park.", "Write a sad story about a dog.",
               "Tell me about the red ball.", "What did Tom find?"]
    (tmp_path / "prompts.txt").write_text("\n".join(prompts) + "\n")
    texts = ["the cat ran to the park.", "mia found a red ball and she was happy.", "tom saw a big tree by the river."]
    (tmp_path / "texts.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    out = tmp_path / "cmp"
    metrics = compare.run(CompareConfig(model=f"{tiny_qwen2_dir},{model_dir}", prompts=str(tmp_path / "prompts.txt"),
                                        n=4, judge="gold", data=str(tmp_path / "texts.jsonl"), out=str(out),
                                        max_new_tokens=12, device="cpu"))
    labels = list(metrics["models"])
    assert [metrics["models"][lb] for lb in labels] == [str(tiny_qwen2_dir), str(model_dir)]
    rows = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    assert [r["prompt"] for r in rows] == prompts
    gold: dict[str, list[float]] = {}
    for label, folder in metrics["models"].items():
        oracle = GreedyOracle(folder)
        want = [oracle.reply(oracle.chat_prompt([{"role": "user", "content": p}]), 12) for p in prompts]
        assert [r[f"answer_{label}"] for r in rows] == want, label
        gold[label] = [gold_reward(p, a) for p, a in zip(prompts, want, strict=True)]
        assert [r[f"gold_{label}"] for r in rows] == pytest.approx(gold[label])
    assert any(r[f"answer_{labels[0]}"] != r[f"answer_{labels[1]}"] for r in rows)  # two different models
    summary = metrics["judges"]["gold"]["models"]
    assert summary[labels[0]]["mean"] == pytest.approx(sum(gold[labels[0]]) / 4)
    wins = sum(1.0 if b > a else 0.5 if b == a else 0.0 for a, b in zip(gold[labels[0]], gold[labels[1]], strict=True))
    assert summary[labels[1]]["win_rate"] == pytest.approx(wins / 4)
    # ppl_table: every text scored from a BOS token, so exp(HF's mean token loss) is each text's perplexity
    ppl = metrics["ppl"]
    assert ppl["texts"] == texts and set(ppl["per_text"]) == set(labels)
    for label, folder in metrics["models"].items():
        tok = AutoTokenizer.from_pretrained(folder)
        model = AutoModelForCausalLM.from_pretrained(folder).eval()
        for text, got in zip(texts, ppl["per_text"][label], strict=True):
            ids = torch.tensor([[tok.bos_token_id, *tok(text, add_special_tokens=False)["input_ids"]]])
            with torch.no_grad():
                loss = model(input_ids=ids, labels=ids).loss
            assert got == pytest.approx(math.exp(float(loss)), rel=1e-4), (label, text)
    assert "## Perplexity per text" in (out / "samples.md").read_text()
