"""Benchmarks: published formats parsed from fixtures, accuracy accounting with stubs, log-likelihood parity."""
from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from lmlab.eval.benchmarks import (
    BenchConfig,
    evaluate_choice,
    evaluate_generate,
    extract_number,
    fewshot_picker,
    loglikelihoods,
    same_number,
    spread_limit,
    summarize,
)
from lmlab.eval.tasks import TASKS, Example, load_examples

FIXTURES = Path(__file__).parent / "fixtures" / "bench"


@pytest.fixture
def mirror(monkeypatch):
    monkeypatch.setenv("LMLAB_DATA_DIR", str(FIXTURES))
    return FIXTURES


def oracle_scorer(examples):
    """A scorer that knows the answers: log-likelihood 0 for the gold (context, continuation), else -10."""
    gold = [(ex.contexts[ex.label], ex.continuations[ex.label]) for ex in examples]

    def score(requests):
        return [0.0 if any(c.endswith(g_ctx) and cont == g_cont for g_ctx, g_cont in gold) else -10.0
                for c, cont in requests]
    return score


def test_each_published_format_parses(mirror):
    mmlu = load_examples(TASKS["mmlu"], "test")
    # anatomy: CSV with header and 0-3 answers; astronomy: the original headerless layout with letters
    assert [(e.subject, e.label) for e in mmlu] == [("anatomy", 0), ("anatomy", 1), ("anatomy", 0),
                                                    ("astronomy", 0), ("astronomy", 3), ("astronomy", 2)]
    assert mmlu[0].continuations == [" A", " B", " C", " D"] and mmlu[0].contexts[0].endswith("\nD. " + mmlu[0].contexts[0].split("\nD. ")[1])
    assert mmlu[3].header == "The following are multiple choice questions (with answers) about astronomy.\n\n"

    obqa = load_examples(TASKS["openbookqa"], "validation")
    assert obqa[0].contexts[0].startswith("Frilled sharks and angler fish live far beneath")
    assert obqa[0].continuations == [" Deep sea animals", " fish", " Long Sea Fish", " Far Sea Animals"]
    assert [e.label for e in obqa] == [0, 3, 0]

    arc = load_examples(TASKS["arc_easy"], "test")
    assert [e.label for e in arc] == [2, 3, 2]  # letter keys, numeric keys ("4"), five choices
    assert arc[0].contexts[0].startswith("Question: An astronomer") and arc[0].contexts[0].endswith("\nAnswer:")
    assert len(arc[2].continuations) == 5

    hs = load_examples(TASKS["hellaswag"], "validation")
    assert hs[0].contexts[0] == "Roof shingle removal: A man is sitting on a roof. He"
    assert hs[0].label == 3 and hs[0].continuations[3] == " starts pulling up roofing on a roof."
    assert "[" not in hs[1].contexts[0] and ". Wash your hair." in hs[1].contexts[0]  # lm-eval's clean-up

    boolq = load_examples(TASKS["boolq"], "validation")
    assert [e.label for e in boolq] == [0, 1, 1] and boolq[0].continuations == [" no", " yes"]
    assert boolq[1].contexts[0].endswith("\nQuestion: is house tax and property tax are same?\nAnswer:")

    wino = load_examples(TASKS["winogrande"], "validation")  # file named dev.jsonl, as published
    assert wino[0].contexts == ["Sarah was a much better surgeon than Maria so Sarah",
                                "Sarah was a much better surgeon than Maria so Maria"]
    assert wino[0].continuations == [" always got the harder cases."] * 2
    assert [e.label for e in wino] == [0, 1]

    gsm = load_examples(TASKS["gsm8k"], "test")
    assert gsm[0].answer == "18" and gsm[0].contexts[0].startswith("Question: Janet")
    assert gsm[0].demo().endswith("#### 18")


@pytest.mark.parametrize("name", [n for n, t in TASKS.items() if t.kind == "choice"])
def test_oracle_scorer_gets_every_task_right(mirror, name):
    task = TASKS[name]
    examples = load_examples(task, task.default_split if name not in ("openbookqa",) else "validation")
    for shots in (0, 1):
        rows = evaluate_choice(examples, fewshot_picker(task, examples, shots, None), oracle_scorer(examples))
        summary = summarize(rows, "choice")
        assert summary["acc"] == 1.0 and summary["acc_norm"] == 1.0 and summary["n"] == len(examples)


def test_always_first_choice_scores_the_share_of_first_answers(mirror):
    examples = load_examples(TASKS["arc_easy"], "test")
    rows = evaluate_choice(examples, lambda i: [], lambda reqs: [-1.0] * len(reqs))  # ties → first choice
    summary = summarize(rows, "choice")
    assert summary["acc"] == 0.0  # gold answers are C, 4, C: never the first
    assert summary["chance"] == pytest.approx((1 / 4 + 1 / 4 + 1 / 5) / 3)


def test_acc_norm_divides_by_characters():
    ex = Example(["Q:"] * 2, [" a", " abcdefgh"], label=1)
    # the joining space is not counted: " ab" / " abcdef" with -2.0 / -5.5 → -1.0 vs -0.917 per character
    # (picks the second); counting the space would give -0.667 vs -0.786 (the first)
    spaced = Example(["Q:"] * 2, [" ab", " abcdef"], label=1)
    assert evaluate_choice([spaced], lambda i: [], lambda reqs: [-2.0, -5.5])[0]["pred_norm"] == 1
    # -1.0 over 1 character vs -2.0 over 8: acc picks the short choice, acc_norm the long one
    rows = evaluate_choice([ex], lambda i: [], lambda reqs: [-1.0, -2.0])
    assert rows[0]["pred"] == 0 and rows[0]["pred_norm"] == 1
    summary = summarize(rows, "choice")
    assert summary["acc"] == 0.0 and summary["acc_norm"] == 1.0


def test_fewshot_prompts_use_demonstrations_of_the_same_subject(mirror):
    examples = load_examples(TASKS["mmlu"], "test")
    pool = load_examples(TASKS["mmlu"], "validation")
    demos = fewshot_picker(TASKS["mmlu"], examples, 2, pool)
    seen = []
    evaluate_choice(examples[3:4], lambda i: demos(3), lambda reqs: seen.extend(reqs) or [0.0] * len(reqs))
    prompt = seen[0][0]
    astro = [d for d in pool if d.subject == "astronomy"][:2]
    assert prompt.startswith(examples[3].header + astro[0].demo() + "\n\n" + astro[1].demo() + "\n\n")
    assert prompt.endswith(examples[3].contexts[0]) and "anatomy" not in prompt
    # without a pool, demonstrations are other items of the eval set, never the item itself
    own = fewshot_picker(TASKS["mmlu"], examples, 5, None)(0)
    assert examples[0] not in own and len(own) == 2


def test_limit_spreads_over_subjects(mirror):
    examples = load_examples(TASKS["mmlu"], "test")
    assert [e.subject for e in spread_limit(examples, 4)] == ["anatomy", "anatomy", "astronomy", "astronomy"]
    assert [e.subject for e in spread_limit(examples, 3)] == ["anatomy", "anatomy", "astronomy"]
    arc = load_examples(TASKS["arc_easy"], "test")
    assert spread_limit(arc, 2) == arc[:2]


@pytest.mark.parametrize(("text", "expected"), [
    ("She makes 9 * 2 = $18 every day.\n#### 18", "18"),
    ("The total is 1,234.", "1234"),
    ("First 3 apples, then 5 more, so 8.\n\nQuestion: Tom has 40 pears", "8"),
    ("It costs $-3.50 in the end", "-3.50"),
    ("no digits here", None),
])
def test_gsm8k_answer_extraction(text, expected):
    assert extract_number(text) == expected


def test_gsm8k_exact_match_with_a_generator_stub(mirror):
    examples = load_examples(TASKS["gsm8k"], "test")
    answers = iter(["16 - 3 - 4 = 9 eggs, 9 * 2 = 18 dollars. #### 18", "It takes 2 bolts.", "The answer is 70,000"])
    rows = evaluate_generate(examples, lambda i: [], lambda prompts: [next(answers) for _ in prompts])
    assert [r["pred"] for r in rows] == ["18", "2", "70000"]
    assert [r["gold"] for r in rows] == ["18", "3", "70000"]
    assert summarize(rows, "generate")["acc"] == pytest.approx(2 / 3)
    assert same_number("18.00", "18") and not same_number(None, "18")


class LogitLM(torch.nn.Module):
    def __init__(self, fn):
        super().__init__()
        self.anchor = torch.nn.Parameter(torch.zeros(1))
        self.fn = fn
        self.config = SimpleNamespace(max_position_embeddings=512)

    def forward(self, input_ids, attention_mask=None):
        return SimpleNamespace(logits=self.fn(input_ids))


def test_loglikelihood_matches_a_direct_forward(tiny_qwen2_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_qwen2_dir).eval()
    tok = AutoTokenizer.from_pretrained(tiny_qwen2_dir)
    requests = [("the cat ran to the", " park"), ("tom said ", "happy"), ("a dog", " and a big red ball")]
    got = loglikelihoods(model, tok, requests, batch_size=2)
    for (ctx, cont), value in zip(requests, got, strict=True):
        ctx, cont = (ctx[:-1], " " + cont) if ctx.endswith(" ") else (ctx, cont)  # trailing space moves over
        whole = tok(ctx + cont, add_special_tokens=False)["input_ids"]
        n = len(whole) - len(tok(ctx, add_special_tokens=False)["input_ids"])
        ids = torch.tensor([[tok.eos_token_id, *whole]])
        with torch.no_grad():
            logp = torch.log_softmax(model(ids).logits[0, :-1].float(), -1)  # (T-1, V)
        expected = logp[-n:].gather(-1, ids[0, -n:, None]).sum().item()
        assert value == pytest.approx(expected, abs=1e-4)


def test_run_end_to_end_with_a_model_that_prefers_letter_b(mirror, tmp_path, tiny_tokenizer_dir, monkeypatch, capsys):
    """The real path (files → prompts → tokens → log-likelihoods → metrics.json) with a model that
    always puts its mass on " B": MMLU accuracy must be exactly the share of gold answers that are B."""
    from transformers import AutoTokenizer

    from lmlab.cli import main
    from lmlab.eval import benchmarks

    tok = AutoTokenizer.from_pretrained(tiny_tokenizer_dir)
    b_ids = tok(" B", add_special_tokens=False)["input_ids"]

    def fn(ids):
        logits = torch.zeros(*ids.shape, len(tok))  # (B, T, V)
        logits[..., b_ids] = 20.0
        return logits

    monkeypatch.setattr(benchmarks, "load", lambda spec, **kw: (LogitLM(fn), tok))
    out = tmp_path / "bench"
    rc = main(["eval", "bench", "model=fake", "tasks=mmlu,openbookqa", "limit=4", f"out={out}"])
    assert rc == 0
    metrics = json.loads((out / "metrics.json").read_text())
    mmlu = metrics["mmlu"]
    # limit 4 → anatomy 0,1 and astronomy 0,3: one gold B in four
    assert mmlu["n"] == 4 and mmlu["acc"] == pytest.approx(0.25) and mmlu["chance"] == pytest.approx(0.25)
    assert mmlu["subjects"]["anatomy"]["acc"] == pytest.approx(0.5) and mmlu["subjects"]["astronomy"]["n"] == 2
    assert metrics["openbookqa"]["split"] == "validation"  # the mirror holds no test split: auto falls back
    assert metrics["openbookqa"]["n"] == 3
    preds = [json.loads(line) for line in (out / "predictions-mmlu.jsonl").read_text().splitlines()]
    assert [p["pred"] for p in preds] == [1, 1, 1, 1]
    assert "chance" in capsys.readouterr().out


def test_bad_keys_are_refused_with_the_fix(mirror, capsys):
    from lmlab.cli import main

    assert main(["eval", "bench", "model=m", "tasks=mmlu,hellaswg"]) == 2
    assert "did you mean 'hellaswag'" in capsys.readouterr().err
    assert main(["eval", "bench", "model=m", "tasks=mmlu,boolq", "path=x.jsonl"]) == 2
    assert "give exactly one task" in capsys.readouterr().err
    from lmlab.config import build
    from lmlab.errors import DataError

    cfg = build(BenchConfig, {"model": "m", "tasks": "openbookqa", "split": "test"})
    with pytest.raises(DataError, match=r"looked for eval/openbookqa/test.tsv\); local splits: validation, train; use split=validation"):
        benchmarks_load(cfg)


def benchmarks_load(cfg):
    from lmlab.eval.benchmarks import _load_task

    return _load_task(TASKS["openbookqa"], cfg)


def test_explicit_path_reads_one_task(tmp_path):
    path = tmp_path / "arc.jsonl"
    path.write_text((FIXTURES / "eval" / "arc_challenge" / "test.jsonl").read_text())
    examples = load_examples(TASKS["arc_challenge"], "test", str(path))
    assert [e.label for e in examples] == [0, 1] and len(examples[1].continuations) == 3
    assert math.isclose(summarize(evaluate_choice(examples, lambda i: [], oracle_scorer(examples)), "choice")["acc"], 1.0)


def test_gsm8k_runs_greedy_generation_through_lmlab_generate(mirror, tmp_path, tiny_qwen2_dir):
    from lmlab.cli import main
    from lmlab.generate import DecodingConfig, generate
    from lmlab.models.load import load_model

    out = tmp_path / "gsm"
    assert main(["eval", "bench", f"model={tiny_qwen2_dir}", "tasks=gsm8k", "limit=2", "shots=1",
                 "max_new_tokens=8", f"out={out}"]) == 0
    rows = [json.loads(line) for line in (out / "predictions-gsm8k.jsonl").read_text().splitlines()]
    metrics = json.loads((out / "metrics.json").read_text())["gsm8k"]
    assert metrics["n"] == 2 and metrics["fewshot_from"] == "train" and metrics["acc_norm"] is None
    examples = load_examples(TASKS["gsm8k"], "test")[:2]
    demo = load_examples(TASKS["gsm8k"], "train")[0].demo()
    model, tok = load_model(str(tiny_qwen2_dir), device="cpu")
    prompts = [demo + "\n\n" + ex.contexts[0] for ex in examples]
    expected = generate(model, tok, prompts, DecodingConfig(max_new_tokens=8, temperature=0, stop=["Question:", "\n\n"]))
    assert [r["output"] for r in rows] == [e[0] for e in expected]
    assert [r["gold"] for r in rows] == ["18", "3"]
    assert metrics["acc"] == sum(r["correct"] for r in rows) / 2
