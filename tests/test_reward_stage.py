"""`train rm`: batches, rendering, and a tiny Qwen2 reward model that learns a toy preference."""
from __future__ import annotations

import json
import math
import random

import pytest
import torch

from lmlab.data.preference import EncodedPair, PairBatches, encode_response, pad_rows, render_response

WORDS = ["the", "a", "cat", "dog", "girl", "boy", "tom", "mia", "ran", "found", "lost", "park", "house", "ball", "red", "blue", "said", "went", "saw", "big", "small", "tree", "river"]


def _pairs_file(path, n: int, seed: int = 0):
    """Pairs that differ in one word: chosen holds the marker 'happy', rejected 'sad' at the same place."""
    rng = random.Random(seed)
    with open(path, "w") as fh:
        for _ in range(n):
            words = [rng.choice(WORDS) for _ in range(rng.randint(4, 9))]
            at = rng.randint(0, len(words))
            chosen = " ".join([*words[:at], "happy", *words[at:]])
            rejected = " ".join([*words[:at], "sad", *words[at:]])
            prompt = " ".join(rng.choice(WORDS) for _ in range(4))
            fh.write(json.dumps({"prompt": prompt, "chosen": chosen, "rejected": rejected}) + "\n")
    return path


def test_pad_rows_and_pair_batches_put_chosen_first():
    pairs = [EncodedPair([1, 2, 3], [4, 5]), EncodedPair([6], [7, 8, 9, 10])]
    src = PairBatches(pairs, batch_size=2, pad_id=0, seed=0)
    assert len(src) == 1
    batch = src.get(0)
    order = [0, 1] if batch["input_ids"][0, 0] == 1 else [1, 0]
    expect = pad_rows([pairs[i].chosen for i in order] + [pairs[i].rejected for i in order], 0)
    assert torch.equal(batch["input_ids"], expect["input_ids"]) and batch["input_ids"].shape == (4, 4)
    assert batch["attention_mask"].sum(1).tolist() == [len(pairs[i].chosen) for i in order] + [len(pairs[i].rejected) for i in order]
    assert torch.equal(src.get(1)["input_ids"].sort(0).values, batch["input_ids"].sort(0).values)  # next epoch: same pairs


def test_render_response_is_the_chat_template(tiny_tokenizer_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_tokenizer_dir)
    text = render_response(tok, "hi there", "the cat ran")
    assert text == "<|im_start|>user\nhi there<|im_end|>\n<|im_start|>assistant\nthe cat ran<|im_end|>\n"
    ids = encode_response(tok, "hi there", "the cat ran", max_length=1000)
    assert tok.decode(ids) == text
    # truncation keeps the end, where the reward is read
    assert encode_response(tok, "hi there", "the cat ran", max_length=5) == ids[-5:]


def test_reward_model_learns_toy_preference(tmp_path, tiny_qwen2_dir):
    from transformers import AutoModelForSequenceClassification

    from lmlab.config import build
    from lmlab.train.config import RewardConfig
    from lmlab.train.reward import load_pairs, run

    train_file = _pairs_file(tmp_path / "prefs.jsonl", 96, seed=1)
    val_file = _pairs_file(tmp_path / "val.jsonl", 24, seed=2)
    cfg = build(RewardConfig, {
        "model": str(tiny_qwen2_dir), "data": str(train_file), "eval_data": str(val_file), "out": str(tmp_path / "rm"),
        "max_steps": 30, "batch_size": 8, "lr": 5e-3, "warmup_steps": 3, "log_every": 5, "eval_every": 15,
        "eval_batches": 0, "max_length": 64, "seed": 0, "device": "cpu",
    })
    torch.manual_seed(0)
    result = run(cfg).metrics
    assert result["train_pairs"] == 96 and result["val_pairs"] + result["test_pairs"] == 24 and result["steps"] == 30
    assert result["test_pairs"] >= 6 and result["val_pairs"] >= 6 and result["eval_split"] == "test"
    assert result["eval_accuracy"] == 1.0
    assert result["eval_margin"] > 1.0
    rows = [json.loads(x) for x in (tmp_path / "rm" / "metrics.jsonl").read_text().splitlines()]
    train_rows = [r for r in rows if r["split"] == "train"]
    assert train_rows[0]["loss"] > train_rows[-1]["loss"] and train_rows[-1]["loss"] < 0.5 * math.log(2)
    assert {"accuracy", "margin", "reward_chosen", "reward_rejected"} <= set(train_rows[-1])
    val_rows = [r for r in rows if r["split"] == "val"]
    assert val_rows and all("ppl" not in r for r in val_rows)  # a Bradley–Terry loss is no perplexity
    assert result["val_ppl"] is None
    # final/ is a plain HF sequence-classification model that gives the same rewards
    loaded = AutoModelForSequenceClassification.from_pretrained(tmp_path / "rm" / "final")
    assert loaded.config.num_labels == 1 and loaded.config.pad_token_id is not None
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tmp_path / "rm" / "final")
    _, selection, test = load_pairs(cfg, tok)
    # the reported accuracy is on pairs that played no part in choosing the checkpoint
    assert not {tuple(p.chosen) for p in selection} & {tuple(p.chosen) for p in test}
    assert len(test) == result["test_pairs"] == result["eval_pairs"]
    # the oracle: each test pair rendered by the tokenizer's own chat template from the raw file, scored
    # alone (no padding, no batching: the score of the last token), and the margins averaged by hand
    test_texts = {tok.decode(p.chosen) for p in test}
    margins = []
    for line in val_file.read_text().splitlines():
        row = json.loads(line)
        texts = [tok.apply_chat_template([{"role": "user", "content": row["prompt"]}, {"role": "assistant", "content": reply}],
                                         tokenize=False) for reply in (row["chosen"], row["rejected"])]
        if texts[0] not in test_texts:
            continue
        rewards = []
        for text in texts:
            ids = tok(text, add_special_tokens=False)["input_ids"]
            assert len(ids) <= cfg.max_length  # nothing truncated
            with torch.no_grad():
                rewards.append(float(loaded(input_ids=torch.tensor([ids])).logits[0, 0]))
        margins.append(rewards[0] - rewards[1])
    assert len(margins) == len(test) and min(margins) > 0  # every test pair ordered right: accuracy 1
    assert sum(margins) / len(margins) == pytest.approx(result["eval_margin"], abs=1e-4)


def test_untrained_architecture_is_refused(tmp_path):
    from lmlab.config import build
    from lmlab.errors import ConfigError
    from lmlab.train.config import RewardConfig
    from lmlab.train.reward import load_for_rm

    with pytest.raises(ConfigError, match="starts from a trained language model"):
        load_for_rm(build(RewardConfig, {"model": "transformer:tiny", "out": str(tmp_path / "x")}))


@pytest.mark.slow
def test_lora_reward_model_saves_its_head_and_reloads(tmp_path, tiny_qwen2_dir):
    """tuning=lora: the fresh reward head trains in full (peft modules_to_save) and is saved with the adapter."""
    from lmlab.config import build
    from lmlab.data.loaders import load_records
    from lmlab.eval.reward_analysis import load_scorer
    from lmlab.train.config import RewardConfig
    from lmlab.train.reward import run

    train_file = _pairs_file(tmp_path / "prefs.jsonl", 96, seed=1)
    val_file = _pairs_file(tmp_path / "val.jsonl", 24, seed=2)
    cfg = build(RewardConfig, {
        "model": str(tiny_qwen2_dir), "data": str(train_file), "eval_data": str(val_file), "out": str(tmp_path / "rm"),
        "max_steps": 40, "batch_size": 8, "lr": 1e-2, "log_every": 10, "max_length": 64, "device": "cpu",
        "tuning": "lora", "lora": {"rank": 8},
    })
    torch.manual_seed(0)
    result = run(cfg).metrics
    assert result["trainable_params"] < result["total_params"] / 2 and result["eval_accuracy"] >= 0.9
    adapter = json.loads((tmp_path / "rm" / "final" / "adapter_config.json").read_text())
    assert adapter["task_type"] == "SEQ_CLS" and "score" in adapter["modules_to_save"]
    # scoring the reloaded adapter (base + LoRA + head) reproduces the stage's own held-out margin
    from lmlab.data.split import split_train_val

    recs = split_train_val(load_records(str(val_file), "preference"), 0.5, seed=cfg.seed + 1)[1]  # the test half
    score = load_scorer(str(tmp_path / "rm"), device="cpu")
    chosen = score([r.prompt for r in recs], [r.chosen for r in recs])
    rejected = score([r.prompt for r in recs], [r.rejected for r in recs])
    assert len(recs) == result["test_pairs"]
    assert sum(c - r for c, r in zip(chosen, rejected, strict=True)) / len(recs) == pytest.approx(result["eval_margin"], abs=1e-4)


def test_checkpoint_choice_and_reported_accuracy_use_different_pairs(tmp_path, tiny_qwen2_dir):
    """keep_best chooses on the selection half; eval_accuracy is measured on the disjoint test half."""
    from lmlab.config import build
    from lmlab.train.config import RewardConfig
    from lmlab.train.reward import load_pairs, run

    data = _pairs_file(tmp_path / "prefs.jsonl", 40, seed=3)
    cfg = build(RewardConfig, {"model": str(tiny_qwen2_dir), "data": str(data), "out": str(tmp_path / "rm"),
                               "val_fraction": 0.4, "max_steps": 4, "batch_size": 4, "eval_every": 2, "eval_batches": 0,
                               "keep_best": True, "max_length": 48, "device": "cpu"})
    result = run(cfg).metrics
    from transformers import AutoTokenizer

    train, selection, test = load_pairs(cfg, AutoTokenizer.from_pretrained(tmp_path / "rm" / "final"))
    assert result["eval_split"] == "test" and result["eval_pairs"] == len(test) == result["test_pairs"] > 0
    assert len(train) + len(selection) + len(test) == 40
    # the loop's validation rows (which pick the kept checkpoint) saw only the selection pairs: their
    # accuracy is a multiple of 1/len(selection), and the final one is the reported selection accuracy
    rows = [json.loads(x) for x in (tmp_path / "rm" / "metrics.jsonl").read_text().splitlines()]
    val_rows = [r for r in rows if r["split"] == "val"]
    assert all(abs(r["accuracy"] * len(selection) - round(r["accuracy"] * len(selection))) < 1e-6 for r in val_rows)
    best = min(val_rows, key=lambda r: r["loss"])
    assert result["selection_accuracy"] == pytest.approx(best["accuracy"], abs=1e-6)


def test_fresh_reward_head_is_one_line_not_a_load_report(tmp_path, tiny_qwen2_dir, capfd, monkeypatch):
    from lmlab.config import build
    from lmlab.train.config import RewardConfig
    from lmlab.train.reward import ExpectedHeadReport, load_for_rm

    monkeypatch.setenv("LMLAB_QUIET", "0")
    load_for_rm(build(RewardConfig, {"model": str(tiny_qwen2_dir), "out": str(tmp_path / "x"), "device": "cpu"}))
    err = capfd.readouterr().err
    assert "LOAD REPORT" not in err and "MISSING" not in err
    assert "reward head score.weight: new and randomly initialised, as expected" in err
    # any other missing key still gets HF's full report
    import logging

    other = logging.LogRecord("t", logging.WARNING, "", 0, "X LOAD REPORT from: m\\nKey | Status |\\n"
                              "model.norm.weight | MISSING |\\nscore.weight | MISSING |\\n", None, None)
    assert ExpectedHeadReport().filter(other) is True
