"""SFT held-out perplexity is on the answer tokens for masked and unmasked runs alike (issue 14).

A run trained on every token (`train_on_prompt=true`) used to report its validation PPL over every
token, a masked one over the answers only, in the same column. Here both runs keep (practically)
the base weights (lr 1e-12), so their answer-token PPL must be equal and match the HF loss oracle.
"""
from __future__ import annotations

import json
import math

import pytest
import torch

from lmlab.train.config import SFTConfig
from test_sft import cfg as sft_cfg


@pytest.fixture()
def chats(tmp_path):
    path = tmp_path / "chats.jsonl"
    rows = [{"messages": [{"role": "user", "content": f"question number {i} about the cat"},
                          {"role": "assistant", "content": f"the answer is tom found ball {i}"}]} for i in range(12)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _cfg(model_dir, data, out, **kw) -> SFTConfig:
    """test_sft's config with the weights practically frozen (lr 1e-12, one step) and a held-out split."""
    return sft_cfg(model_dir, data, out, **{"val_fraction": 0.4, "max_steps": 1, "lr": 1e-12, **kw})


def test_masked_and_unmasked_report_answer_token_ppl_on_same_tokens(tiny_qwen2_dir, chats, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from lmlab.train import sft

    masked = sft.run(_cfg(tiny_qwen2_dir, chats, tmp_path / "masked")).metrics
    unmasked = sft.run(_cfg(tiny_qwen2_dir, chats, tmp_path / "unmasked", train_on_prompt=True)).metrics
    assert masked["val_ppl_tokens"] == unmasked["val_ppl_tokens"] == "answer"
    assert masked["val_tokens_answer"] == unmasked["val_tokens_answer"] > 0
    # the same (untouched) weights scored on the same tokens: the same number
    assert unmasked["val_ppl"] == pytest.approx(masked["val_ppl"], rel=1e-6)
    assert unmasked["val_ppl_answer"] == pytest.approx(unmasked["val_ppl"], rel=1e-6)
    # all-token PPL is a different number over more tokens, reported under its own name
    assert unmasked["val_tokens_all_tokens"] > unmasked["val_tokens_answer"]
    assert abs(unmasked["val_ppl_all_tokens"] - unmasked["val_ppl"]) > 1e-3

    # oracle: HF's own loss on the answer labels of the held-out examples (base weights)
    tok = AutoTokenizer.from_pretrained(tiny_qwen2_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_qwen2_dir).eval()
    _, val, _ = sft.load_chat_data(_cfg(tiny_qwen2_dir, chats, tmp_path / "x", train_on_prompt=True), tok)
    nll = n = 0.0
    with torch.no_grad():
        for ex in val:
            k = sum(1 for x in ex.labels[1:] if x != -100)
            loss = model(input_ids=torch.tensor([ex.input_ids]), labels=torch.tensor([ex.labels])).loss
            nll, n = nll + float(loss) * k, n + k
    assert n == masked["val_tokens_answer"]
    assert masked["val_ppl"] == pytest.approx(math.exp(nll / n), rel=1e-4)


def test_eval_gen_scores_an_sft_runs_own_heldout_split(tiny_qwen2_dir, chats, tmp_path):
    from lmlab.api import evaluate
    from lmlab.train import sft
    from lmlab.train.sft import split_chat_records

    cfg = _cfg(tiny_qwen2_dir, chats, tmp_path / "run")
    result = sft.run(cfg).metrics
    metrics = evaluate("gen", model=str(tmp_path / "run"), prompts=str(tmp_path / "run"), max_new_tokens=4,
                       out=str(tmp_path / "gen"))
    assert metrics["n"] == result["val_examples"] > 0
    refs = [json.loads(line)["ref"] for line in (tmp_path / "gen" / "samples.jsonl").read_text().splitlines()]
    assert refs == [r.messages[-1].content for r in split_chat_records(cfg)[1]]


def test_a_model_that_says_the_same_thing_to_every_prompt_is_flagged():
    from lmlab.eval.text_metrics import text_metrics

    refs = ["the cat ran", "a dog sat", "mia was happy"]
    same, _ = text_metrics(["tom found a ball."] * 3, refs)
    assert same["distinct_outputs"] == 1 and same["distinct_outputs_ratio"] == pytest.approx(1 / 3)
    assert same["same_output_for_every_prompt"] is True
    varied, _ = text_metrics(["tom found a ball.", "Tom found a ball", "a dog"], refs)  # case/punctuation fold
    assert varied["distinct_outputs"] == 2 and varied["same_output_for_every_prompt"] is False
