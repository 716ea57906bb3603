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
    extract_answer,
    fewshot_picker,
    loglikelihoods,
    same_answer,
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


# lm-evaluation-harness's gsm8k filters: flexible = the last number-like run, strict = the number after "#### "
# (changed from lmlab's earlier "#### else the last number before a blank line" so GSM8K equals the harness)
@pytest.mark.parametrize(("text", "flexible", "strict"), [
    ("She makes 9 * 2 = $18 every day.\n#### 18", "18", "18"),
    ("The total is 1,234.", "1,234.", None),
    ("First 3 apples, then 5 more, so 8.\n\nTom has 40 pears", "40", None),
    ("It costs $-3.50 in the end", "-3.50", None),
    ("#### 7 and then 12", "12", "7"),
    ("no digits here", None, None),
])
def test_gsm8k_answer_extraction(text, flexible, strict):
    assert extract_answer(text) == flexible
    assert extract_answer(text, strict=True) == strict


def test_gsm8k_exact_match_with_a_generator_stub(mirror):
    examples = load_examples(TASKS["gsm8k"], "test")
    answers = iter(["16 - 3 - 4 = 9 eggs, 9 * 2 = 18 dollars. #### 18", "It takes 2 bolts.", "The answer is 70,000"])
    rows = evaluate_generate(examples, lambda i: [], lambda prompts: [next(answers) for _ in prompts])
    assert [r["pred"] for r in rows] == ["18", "2", "70,000"]
    assert [r["pred_strict"] for r in rows] == ["18", None, None]
    assert [r["gold"] for r in rows] == ["18", "3", "70000"]
    summary = summarize(rows, "generate")
    assert summary["acc"] == pytest.approx(2 / 3) and summary["acc_strict"] == pytest.approx(1 / 3)
    # the harness's exact match: commas, "$" and a final "." ignored, but "18.00" is not "18"
    assert same_answer("$18.", "18") and same_answer("1,000", "1000") and not same_answer(None, "18")
    assert not same_answer("18.00", "18")


def test_bos_prefix_follows_the_tokenizer_like_the_harness(tiny_tokenizer_dir):
    """auto = what the tokenizer adds itself (a Llama-style one adds BOS, ours nothing); true adds
    BOS to any; false never; a text already starting with the BOS text gets no second one."""
    from transformers import AutoTokenizer

    from lmlab.eval.benchmarks import encode, prefix_used

    plain = AutoTokenizer.from_pretrained(tiny_tokenizer_dir)
    llama_like = AutoTokenizer.from_pretrained(tiny_tokenizer_dir, add_bos_token=True)  # adds <|endoftext|> itself
    bos = plain.bos_token_id
    bare = plain("the cat", add_special_tokens=False)["input_ids"]
    assert encode(plain, ["the cat"], "auto") == [bare] and prefix_used(plain, "auto") == "none"
    assert encode(llama_like, ["the cat"], "auto") == [[bos, *bare]] and prefix_used(llama_like, "auto") == "<|endoftext|>"
    assert encode(plain, ["the cat"], True) == [[bos, *bare]] and prefix_used(plain, True) == "<|endoftext|>"
    assert encode(llama_like, ["the cat"], False) == [bare] and prefix_used(llama_like, False) == "none"
    assert encode(llama_like, ["<|endoftext|>the cat"], "auto") == [[bos, *bare]]
    assert encode(plain, ["<|endoftext|>the cat"], True) == [[bos, *bare]]


class LogitLM(torch.nn.Module):
    def __init__(self, fn):
        super().__init__()
        self.anchor = torch.nn.Parameter(torch.zeros(1))
        self.fn = fn
        self.config = SimpleNamespace(max_position_embeddings=512)

    def forward(self, input_ids, attention_mask=None):
        return SimpleNamespace(logits=self.fn(input_ids))


@pytest.mark.parametrize("add_bos", ["auto", True])
def test_loglikelihood_matches_a_direct_forward(tiny_qwen2_dir, add_bos):
    """auto: no prefix (this tokenizer adds no special token itself, so neither does the harness by
    default; lmlab used to prefix EOS always); add_bos=true: the BOS (here <|endoftext|>) first."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_qwen2_dir).eval()
    tok = AutoTokenizer.from_pretrained(tiny_qwen2_dir)
    requests = [("the cat ran to the", " park"), ("tom said ", "happy"), ("a dog\n", "and a big red ball")]
    got = loglikelihoods(model, tok, requests, batch_size=2, add_bos=add_bos)
    for (ctx, cont), value in zip(requests, got, strict=True):
        ctx, cont = ctx.rstrip(), ctx[len(ctx.rstrip()):] + cont  # trailing whitespace moves over
        whole = tok(ctx + cont, add_special_tokens=False)["input_ids"]
        n = len(whole) - len(tok(ctx, add_special_tokens=False)["input_ids"])
        ids = torch.tensor([[tok.bos_token_id, *whole]] if add_bos is True else [whole])
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


@pytest.mark.parametrize("chat", ["auto", "false"])
def test_gsm8k_runs_greedy_generation_through_lmlab_generate(mirror, tmp_path, tiny_qwen2_dir, chat):
    """The tiny model's tokenizer has a chat template and the folder is no pretraining run, so
    chat_template=auto prompts through the template (the demonstration as a user + assistant turn,
    then the question, as lm-eval's --apply_chat_template); false sends the raw text. The outputs
    must equal lmlab.generate on exactly those prompts."""
    from lmlab.cli import main
    from lmlab.data.chat import render_prompt
    from lmlab.eval.benchmarks import GSM8K_STOP
    from lmlab.generate import DecodingConfig, generate
    from lmlab.models.load import load_model

    out = tmp_path / "gsm"
    assert main(["eval", "bench", f"model={tiny_qwen2_dir}", "tasks=gsm8k", "limit=2", "shots=1",
                 "max_new_tokens=8", f"chat_template={chat}", f"out={out}"]) == 0
    rows = [json.loads(line) for line in (out / "predictions-gsm8k.jsonl").read_text().splitlines()]
    metrics = json.loads((out / "metrics.json").read_text())["gsm8k"]
    assert metrics["n"] == 2 and metrics["fewshot_from"] == "train" and metrics["acc_norm"] is None
    assert metrics["chat_template"] is (chat == "auto") and metrics["bos_prefix"] == "none"
    examples = load_examples(TASKS["gsm8k"], "test")[:2]
    demo = load_examples(TASKS["gsm8k"], "train")[0].demo()
    model, tok = load_model(str(tiny_qwen2_dir), device="cpu")
    prompts = [demo + "\n\n" + ex.contexts[0] for ex in examples]
    if chat == "auto":
        question, solution = demo.split("\nAnswer: ", 1)
        prompts = [render_prompt(tok, [{"role": "user", "content": question + "\nAnswer:"},
                                       {"role": "assistant", "content": solution},
                                       {"role": "user", "content": ex.contexts[0]}]) for ex in examples]
        assert prompts[0].startswith("<|im_start|>user\nQuestion: ") and prompts[0].endswith("<|im_start|>assistant\n")
        assert "#### " in prompts[0].split("<|im_start|>assistant\n")[1]  # the worked solution is the assistant turn
    assert [r["question"] for r in rows] == [p[-300:] for p in prompts]
    expected = generate(model, tok, prompts, DecodingConfig(max_new_tokens=8, temperature=0, stop=GSM8K_STOP))
    assert [r["output"] for r in rows] == [e[0] for e in expected]
    assert [r["gold"] for r in rows] == ["18", "3"]
    assert metrics["acc"] == sum(r["correct"] for r in rows) / 2


def always_first(requests):
    """A scorer whose choices all tie: the first choice ("A") wins every item."""
    return [-1.0] * len(requests)


def test_a_model_that_always_answers_a_scores_the_majority_baseline_and_is_flagged(mirror):
    """MMLU fixture golds: anatomy A B A, astronomy A D C: half the answers are A, so answering "A"
    everywhere scores 0.5, twice chance (0.25), and must be shown as the majority baseline and flagged."""
    examples = load_examples(TASKS["mmlu"], "test")
    summary = summarize(evaluate_choice(examples, lambda i: [], always_first), "choice")
    assert summary["acc"] == summary["majority"] == pytest.approx(0.5) and summary["chance"] == pytest.approx(0.25)
    assert summary["one_letter"] == "A" and summary["answer_positions"] == {"A": 1.0}
    assert summary["gold_positions"] == pytest.approx({"A": 0.5, "B": 1 / 6, "C": 1 / 6, "D": 1 / 6})
    # an oracle spreads its answers like the gold ones and is not flagged
    oracle = summarize(evaluate_choice(examples, lambda i: [], oracle_scorer(examples)), "choice")
    assert oracle["one_letter"] is None and oracle["answer_positions"] == oracle["gold_positions"]


def fake_run(tmp_path, name, stage, tok, fn, seen=None):
    """A run folder (marker naming its stage, final/) whose model is a LogitLM stub recording its inputs."""
    run = tmp_path / name
    (run / "final").mkdir(parents=True)
    (run / ".lmlab-run").write_text(stage + "\n")

    def record(ids):
        if seen is not None:
            seen.extend(tok.decode(row) for row in ids.tolist())
        return fn(ids)

    return str(run), LogitLM(record)


def test_multi_model_bench_is_one_table_and_one_plot(mirror, tmp_path, tiny_tokenizer_dir, monkeypatch, capsys):
    """model=a,b: one table (a row per task and metric, the models as columns), one bench.png with a
    bar group per model, the always-A model flagged; the report shows that same table."""
    from transformers import AutoTokenizer

    import lmlab.plots
    from lmlab.cli import main
    from lmlab.eval import benchmarks
    from lmlab.report import build_report, read_stage

    tok = AutoTokenizer.from_pretrained(tiny_tokenizer_dir)

    def prefers(text):
        ids = tok(text, add_special_tokens=False)["input_ids"]

        def fn(x):
            logits = torch.zeros(*x.shape, len(tok))  # (B, T, V)
            logits[..., ids] = 20.0
            return logits
        return fn

    a_spec, a_model = fake_run(tmp_path, "base", "pt", tok, prefers(" A"))
    b_spec, b_model = fake_run(tmp_path, "sft", "sft", tok, prefers(" B"))
    models = {a_spec: a_model, b_spec: b_model}
    monkeypatch.setattr(benchmarks, "load", lambda spec, **kw: (models[spec], tok))
    charts = []
    real_bars = lmlab.plots.bars
    monkeypatch.setattr(lmlab.plots, "bars", lambda table, out, **kw: charts.append(table) or real_bars(table, out, **kw))
    out = tmp_path / "bench"
    assert main(["eval", "bench", f"model={a_spec},{b_spec}", "tasks=mmlu,arc_easy", "chat_template=false",
                 f"out={out}"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics) == {"base", "sft"}
    assert metrics["base"]["mmlu"]["acc"] == pytest.approx(0.5) and metrics["base"]["mmlu"]["one_letter"] == "A"
    assert metrics["sft"]["mmlu"]["acc"] == pytest.approx(1 / 6) and metrics["sft"]["mmlu"]["one_letter"] == "B"
    table = [line for line in (out / "table.md").read_text().splitlines() if line.startswith("|")]
    assert table[0] == "| task | metric | n | chance | majority | base | sft |"
    assert (out / "table.md").read_text().count("### ") == 1  # one table, not one per model
    acc = next(line for line in table if line.startswith("| mmlu | acc |"))
    assert acc == "| mmlu | acc | 6 | 0.25 | 0.5 | 0.5 | 0.1667 |"
    assert next(line for line in table if "one letter" in line and "mmlu" in line).endswith("| ⚠ all A | ⚠ all B |")
    assert "warning: base answers A to every mmlu question" in capsys.readouterr().err
    # one chart; its groups are the models, a bar per task holding that model's acc
    assert charts == [{m: {t: metrics[m][t]["acc"] for t in ("mmlu", "arc_easy")} for m in ("base", "sft")}]
    assert (out / "bench.png").stat().st_size > 0
    blocks = build_report([read_stage(out, "bench")], tmp_path / "report", "r")
    tables = [b for b in blocks if b.kind == "table"]
    assert len(tables) == 2  # the overview, then the benchmark table (not one per model)
    assert tables[1].rows[0] == ["task", "metric", "n", "chance", "majority", "base", "sft"]
    assert any(b.kind == "img" and b.path.name == "bench.png" for b in blocks)


def test_chat_template_auto_follows_the_run_stage(mirror, tmp_path, tiny_tokenizer_dir, monkeypatch):
    """auto: an SFT run with a template is prompted through it (MMLU's header as the system turn, the
    choices right after the assistant header, no joining space); a pretraining run of the same
    tokenizer (lmlab stores ChatML with every tokenizer) gets the plain prompt."""
    from transformers import AutoTokenizer

    from lmlab.eval import benchmarks

    tok = AutoTokenizer.from_pretrained(tiny_tokenizer_dir)
    flat = lambda ids: torch.zeros(*ids.shape, len(tok))  # noqa: E731
    seen_sft, seen_pt = [], []
    sft_spec, sft_model = fake_run(tmp_path, "sft", "sft", tok, flat, seen_sft)
    pt_spec, pt_model = fake_run(tmp_path, "pt", "pt", tok, flat, seen_pt)
    models = {sft_spec: sft_model, pt_spec: pt_model}
    monkeypatch.setattr(benchmarks, "load", lambda spec, **kw: (models[spec], tok))
    cfg = BenchConfig(model=f"{sft_spec},{pt_spec}", tasks="mmlu", limit=1, batch_size=1)
    metrics = benchmarks.run(cfg)
    assert metrics["sft"]["mmlu"]["chat_template"] is True and metrics["pt"]["mmlu"]["chat_template"] is False
    ex = load_examples(TASKS["mmlu"], "test")[0]
    chat_text = (f"<|im_start|>system\n{ex.header}<|im_end|>\n<|im_start|>user\n{ex.contexts[0]}<|im_end|>\n"
                 "<|im_start|>assistant\n")
    assert sorted(seen_sft) == sorted(chat_text + letter for letter in "ABCD")
    assert sorted(seen_pt) == sorted(ex.header + ex.contexts[0] + " " + letter for letter in "ABCD")
