"""`lmlab eval bench` equals lm-evaluation-harness, item by item, on every task format it scores.

The harness scores its own task definitions (the YAML files it ships: openbookqa, arc_easy,
hellaswag, boolq, winogrande, mmlu's template, gsm8k), pointed at local copies of the same items
that lmlab reads from the test mirror (tests/fixtures/bench). Both score a tiny random Qwen2 model
saved as an lmlab pretraining run: acc and acc_norm must be equal, every choice's log-likelihood
equal to 1e-4, and GSM8K's greedy generations and both answer extractions identical. Offline:
`json` data files only, no hub. lm-eval is a test dependency (the `dev` extra).
"""
from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest

from lmlab.eval.benchmarks import BenchConfig, run
from lmlab.eval.tasks import obqa_tsv_row

FIXTURES = Path(__file__).parent / "fixtures" / "bench"
CHOICE_TASKS = ["openbookqa", "arc_easy", "hellaswag", "boolq", "winogrande"]
MAX_LENGTH = 2048  # above every prompt here, so neither side truncates


def harness_yaml(name: str) -> Path:
    import lm_eval

    return Path(lm_eval.__file__).parent / "tasks" / name


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def write_jsonl(path: Path, rows: list[dict]) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def hub_arc(row: dict) -> dict:
    """The published ARC / OpenBookQA layout → the hub's (what the harness's YAML reads)."""
    q = row["question"]
    return {"question": q["stem"], "question_stem": q["stem"], "answerKey": row["answerKey"],
            "choices": {"text": [c["text"] for c in q["choices"]], "label": [c["label"] for c in q["choices"]]}}


def mmlu_rows(path: Path) -> list[dict]:
    """A subject's CSV (with a header and 0-3, or the original headerless one with A-D) as the hub's rows."""
    from lmlab.eval.tasks import read_mmlu_csv

    return list(read_mmlu_csv(path))


def task_files(root: Path) -> dict[str, tuple[str, dict]]:
    """Harness task name → (the harness YAML it includes, data_files), the mirror's items in the hub's layout."""
    ev = FIXTURES / "eval"
    with (ev / "openbookqa" / "dev.tsv").open(newline="") as fh:
        obqa = [hub_arc(obqa_tsv_row(r)) for r in csv.DictReader(fh, delimiter="\t")]
    boolq = [{**r, "label": int(r["answer"])} for r in read_jsonl(ev / "boolq" / "validation.jsonl")]
    out = {
        "openbookqa": ("openbookqa/openbookqa.yaml", {"test": write_jsonl(root / "obqa.jsonl", obqa)}),
        "arc_easy": ("arc/arc_easy.yaml", {"test": write_jsonl(root / "arc.jsonl", [hub_arc(r) for r in read_jsonl(ev / "arc_easy" / "test.jsonl")])}),
        "hellaswag": ("hellaswag/hellaswag.yaml", {"validation": str(ev / "hellaswag" / "validation.jsonl")}),
        "boolq": ("super_glue/boolq/default.yaml", {"validation": write_jsonl(root / "boolq.jsonl", boolq)}),
        "winogrande": ("winogrande/default.yaml", {"validation": str(ev / "winogrande" / "dev.jsonl")}),
        "gsm8k": ("gsm8k/gsm8k.yaml", {"test": str(ev / "gsm8k" / "test.jsonl"), "train": str(ev / "gsm8k" / "train.jsonl")}),
    }
    for subject in ("anatomy", "astronomy"):
        files = {split: write_jsonl(root / f"mmlu_{subject}_{split}.jsonl",
                                    mmlu_rows(ev / "mmlu" / split / f"{subject}_{split}.csv"))
                 for split in ("test", "dev")}
        out[f"mmlu_{subject}"] = ("mmlu/default/_default_template_yaml", files)
    return out


def write_tasks(root: Path) -> dict[str, str]:
    """One local task per harness task: its own YAML included, the dataset swapped for our json files."""
    import yaml

    names = {}
    for name, (included, files) in task_files(root).items():
        config = {"include": str(harness_yaml(included)), "task": f"local_{name}", "tag": [],
                  "dataset_path": "json", "dataset_name": None, "dataset_kwargs": {"data_files": files}}
        split = next(iter(files))
        config.update({"test_split": split if split == "test" else None,
                       "validation_split": split if split == "validation" else None,
                       "training_split": "train" if "train" in files else None})
        if name.startswith("mmlu_"):
            subject = name.split("_", 1)[1]
            config["description"] = f"The following are multiple choice questions (with answers) about {subject}.\n\n"
        if name == "gsm8k":
            config["generation_kwargs"] = {"until": ["Question:", "</s>", "<|im_end|>"], "do_sample": False,
                                           "temperature": 0.0, "max_gen_toks": 16}
        (root / f"local_{name}.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
        names[name] = f"local_{name}"
    return names


def run_folder(tmp_path_factory, model_dir: Path, stage: str) -> Path:
    """The tiny model as a finished lmlab run of `stage` (its final/ and the stage marker)."""
    run_dir = tmp_path_factory.mktemp("parity") / stage
    shutil.copytree(model_dir, run_dir / "final")
    (run_dir / ".lmlab-run").write_text(stage + "\n")
    return run_dir


@pytest.fixture(scope="module")
def pt_run(tmp_path_factory, tiny_qwen2_dir):
    """A pretraining run: chat_template=auto means plain prompts, as the harness's default."""
    return run_folder(tmp_path_factory, tiny_qwen2_dir, "pt")


@pytest.fixture(scope="module")
def sft_run(tmp_path_factory, tiny_qwen2_dir):
    """An SFT run: its tokenizer's ChatML template is used (chat_template=auto)."""
    return run_folder(tmp_path_factory, tiny_qwen2_dir, "sft")


@pytest.fixture(scope="module")
def llama_like_run(tmp_path_factory, tiny_qwen2_dir):
    """A pretraining run whose tokenizer adds BOS itself (as Llama's does): both sides prefix it by default."""
    from transformers import AutoTokenizer

    run_dir = run_folder(tmp_path_factory, tiny_qwen2_dir, "pt")
    AutoTokenizer.from_pretrained(tiny_qwen2_dir, add_bos_token=True).save_pretrained(run_dir / "final")
    return run_dir


def harness(final: Path, tasks: list[str], root: Path, shots: int, add_bos_token: bool | None,
            chat: bool = False) -> dict:
    from lm_eval import simple_evaluate
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    lm = HFLM(pretrained=str(final), batch_size=1, max_length=MAX_LENGTH, device="cpu",
              **({"add_bos_token": add_bos_token} if add_bos_token is not None else {}))
    manager = TaskManager(include_path=str(root), include_defaults=False)
    return simple_evaluate(model=lm, tasks=tasks, num_fewshot=shots, task_manager=manager, log_samples=True,
                           bootstrap_iters=0, apply_chat_template=chat)


def lmlab(run_dir: Path, tasks: str, out: Path, shots: int, add_bos: str) -> dict:
    cfg = BenchConfig(model=str(run_dir), tasks=tasks, shots=shots, add_bos=add_bos, out=str(out),  # type: ignore[arg-type]
                      max_length=MAX_LENGTH, batch_size=1, max_new_tokens=16, device="cpu")
    return run(cfg)


@pytest.mark.slow
@pytest.mark.parametrize(("folder", "add_bos", "add_bos_token", "prefix"), [
    ("pt_run", "auto", None, "none"),  # the defaults: this tokenizer adds nothing, so no BOS
    ("pt_run", True, True, "<|endoftext|>"),  # BOS asked for on both sides
    ("llama_like_run", "auto", None, "<|endoftext|>"),  # the defaults, with a tokenizer that adds BOS itself
])
def test_multiple_choice_equals_the_harness(request, tmp_path, monkeypatch, folder, add_bos, add_bos_token, prefix):
    """Zero-shot, every multiple-choice format, with and without a BOS token first."""
    pt_run = request.getfixturevalue(folder)
    monkeypatch.setenv("LMLAB_DATA_DIR", str(FIXTURES))
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf"))
    names = write_tasks(tmp_path)
    ours = lmlab(pt_run, ",".join(CHOICE_TASKS), tmp_path / "lmlab", 0, add_bos)
    theirs = harness(pt_run / "final", [names[t] for t in CHOICE_TASKS], tmp_path, 0, add_bos_token)
    for task in CHOICE_TASKS:
        result, samples = theirs["results"][names[task]], theirs["samples"][names[task]]
        rows = read_jsonl(tmp_path / "lmlab" / f"predictions-{task}.jsonl")
        assert len(rows) == len(samples) == ours[task]["n"] >= 2, task
        assert ours[task]["acc"] == pytest.approx(result["acc,none"]), task
        if "acc_norm,none" in result:
            assert ours[task]["acc_norm"] == pytest.approx(result["acc_norm,none"]), task
        for row, sample in zip(rows, sorted(samples, key=lambda s: s["doc_id"]), strict=True):
            assert row["loglik"] == pytest.approx([ll for ll, _ in sample["filtered_resps"]], abs=1e-4), task
        assert ours[task]["bos_prefix"] == prefix


@pytest.mark.slow
def test_mmlu_fewshot_and_gsm8k_generation_equal_the_harness(pt_run, tmp_path, monkeypatch):
    """One shot: MMLU with its subject header and the subject's first dev question; GSM8K greedy
    generation until "Question:", scored by the harness's strict and flexible extractions."""
    monkeypatch.setenv("LMLAB_DATA_DIR", str(FIXTURES))
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf"))
    names = write_tasks(tmp_path)
    ours = lmlab(pt_run, "mmlu,gsm8k", tmp_path / "lmlab", 1, "auto")
    local = [names["mmlu_anatomy"], names["mmlu_astronomy"], names["gsm8k"]]
    theirs = harness(pt_run / "final", local, tmp_path, 1, None)

    rows = read_jsonl(tmp_path / "lmlab" / "predictions-mmlu.jsonl")
    for subject in ("anatomy", "astronomy"):
        samples = sorted(theirs["samples"][names[f"mmlu_{subject}"]], key=lambda s: s["doc_id"])
        mine = [r for r in rows if r["subject"] == subject]
        assert len(mine) == len(samples) == 3
        for row, sample in zip(mine, samples, strict=True):
            assert row["loglik"] == pytest.approx([ll for ll, _ in sample["filtered_resps"]], abs=1e-4)
        assert ours["mmlu"]["subjects"][subject]["acc"] == pytest.approx(theirs["results"][names[f"mmlu_{subject}"]]["acc,none"])

    gsm = read_jsonl(tmp_path / "lmlab" / "predictions-gsm8k.jsonl")
    samples = sorted(theirs["samples"][names["gsm8k"]], key=lambda s: s["doc_id"])
    by_filter = {f: [s for s in samples if s["filter"] == f] for f in ("strict-match", "flexible-extract")}
    assert len(gsm) == 3 and all(r["output"] for r in gsm)  # real generations, not empty strings
    assert [r["output"] for r in gsm] == [s["resps"][0][0] for s in by_filter["strict-match"]]
    invalid = lambda x: x if x is not None else "[invalid]"  # noqa: E731
    assert [invalid(r["pred"]) for r in gsm] == [s["filtered_resps"][0] for s in by_filter["flexible-extract"]]
    assert [invalid(r["pred_strict"]) for r in gsm] == [s["filtered_resps"][0] for s in by_filter["strict-match"]]
    result = theirs["results"][names["gsm8k"]]
    assert ours["gsm8k"]["acc"] == pytest.approx(result["exact_match,flexible-extract"])
    assert ours["gsm8k"]["acc_strict"] == pytest.approx(result["exact_match,strict-match"])


@pytest.mark.slow
def test_chat_template_prompts_equal_the_harness_apply_chat_template(sft_run, tmp_path, monkeypatch):
    """An SFT run is prompted through its chat template by default, as `lm_eval --apply_chat_template`
    prompts it (few-shot as multi-turn, MMLU's header as the system message, choices right after the
    assistant header): equal log-likelihoods on MMLU (one shot) and ARC, equal GSM8K generations."""
    monkeypatch.setenv("LMLAB_DATA_DIR", str(FIXTURES))
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf"))
    names = write_tasks(tmp_path)
    ours = lmlab(sft_run, "mmlu,arc_easy,gsm8k", tmp_path / "lmlab", 1, "auto")
    assert all(ours[t]["chat_template"] for t in ("mmlu", "arc_easy", "gsm8k"))
    local = [names["mmlu_anatomy"], names["mmlu_astronomy"], names["arc_easy"], names["gsm8k"]]
    theirs = harness(sft_run / "final", local, tmp_path, 1, None, chat=True)

    rows = read_jsonl(tmp_path / "lmlab" / "predictions-mmlu.jsonl")
    mmlu = [sorted(theirs["samples"][names[f"mmlu_{s}"]], key=lambda x: x["doc_id"]) for s in ("anatomy", "astronomy")]
    arc = sorted(theirs["samples"][names["arc_easy"]], key=lambda x: x["doc_id"])
    for row, sample in zip(rows + read_jsonl(tmp_path / "lmlab" / "predictions-arc_easy.jsonl"),
                           mmlu[0] + mmlu[1] + arc, strict=True):
        assert row["loglik"] == pytest.approx([ll for ll, _ in sample["filtered_resps"]], abs=1e-4)
    assert ours["arc_easy"]["acc"] == pytest.approx(theirs["results"][names["arc_easy"]]["acc,none"])
    assert ours["arc_easy"]["acc_norm"] == pytest.approx(theirs["results"][names["arc_easy"]]["acc_norm,none"])
    gsm = read_jsonl(tmp_path / "lmlab" / "predictions-gsm8k.jsonl")
    strict = [s for s in sorted(theirs["samples"][names["gsm8k"]], key=lambda x: x["doc_id"]) if s["filter"] == "strict-match"]
    assert [r["output"] for r in gsm] == [s["resps"][0][0] for s in strict]
