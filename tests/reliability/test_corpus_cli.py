"""Bad-input corpus, command line and data files: every case a clean error (tests/reliability/corpus.py).

Cases run in-process through `lmlab.cli.main` (an uncaught exception would fail the test with its
traceback, which is exactly the bug this corpus looks for); a few run as real subprocesses to see
what a user sees on stderr.
"""
from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
import sys

import pytest
from corpus import DATA_ERRORS, DATA_VALID, chat, check_message, check_nothing_valid, rows, write

from chat_model import ENV
from lmlab.cli import main


@pytest.fixture(scope="module")
def world(tmp_path_factory, model_dir):
    """Good data, a good model and broken copies of it, a user's folder and file."""
    root = tmp_path_factory.mktemp("world")
    (root / "good.jsonl").write_text(rows(*[chat(f"say {i}", f"ok {i}") for i in range(8)]))
    (root / "prefs.jsonl").write_text(rows(*[{"prompt": f"p{i}", "chosen": "good", "rejected": "bad"} for i in range(8)]))
    (root / "texts.txt").write_text("the cat ran to the park.\n\nthe dog found a ball.\n")
    for name, damage in {"trunc": "half", "empty_weights": "empty", "no_config": "config", "bad_config": "json"}.items():
        dst = root / name
        shutil.copytree(model_dir, dst)
        w = dst / "model.safetensors"
        if damage == "half":
            w.write_bytes(w.read_bytes()[: w.stat().st_size // 2])
        elif damage == "empty":
            w.write_bytes(b"")
        elif damage == "config":
            (dst / "config.json").unlink()
        else:
            (dst / "config.json").write_text('{"model_type": "qwen2", ')
    (root / "unfinished").mkdir()
    (root / "unfinished" / "result.json").write_text("{}")
    (root / "mine").mkdir()
    (root / "mine" / "thesis.tex").write_text("years of work")
    (root / "notes.txt").write_text("my notes")
    (root / "broken.yaml").write_text("lr: 0.1\nbatch_size: [1, 2\n")
    (root / "list.yaml").write_text("- lr: 0.1\n")
    (root / "unknown.yaml").write_text("lr: 0.1\nbatchsize: 4\n")
    (root / "recipe_missing_ref.yaml").write_text(
        "name: r\nstages:\n  sft: {run: train sft, model: '${pt}', max_steps: 1}\n")
    (root / "recipe_bad_command.yaml").write_text("name: r\nstages:\n  pt: {run: train pretrain}\n")
    (root / "recipe_bad_key.yaml").write_text("name: r\nstages:\n  pt: {run: train pt, max_stepz: 1}\n")
    (root / "recipe_no_stages.yaml").write_text("name: r\n")
    (root / "recipe_ok.yaml").write_text("name: r\nstages:\n  pt: {run: train pt, max_steps: 1}\n")
    return {"root": root, "model": model_dir}


TRAIN = "train sft model={model} data={root}/good.jsonl max_steps=1 batch_size=2"
# argv template, names the message must hold
CLI_ERRORS: dict[str, tuple[str, list[str]]] = {
    # unknown and misspelt keys, flags, commands
    "unknown key": (TRAIN + " lrr=0.1", ["lrr", "did you mean 'lr'"]),
    "misspelt max_steps": ("train pt max_step=3", ["max_step", "max_steps"]),
    "misspelt nested key": (TRAIN + " lora.rnak=4", ["lora.rnak", "lora.rank"]),
    "unknown rm key": ("train rm marginn=1", ["marginn", "margin"]),
    "unknown loss key": ("train rm loss=hinge", ["loss"]),
    "unknown DPO loss": ("train dpo loss=sigmoidd", ["sigmoidd", "did you mean 'sigmoid'"]),
    "DPO loss weights mismatch": ("train dpo loss=sigmoid+sft loss_weights=1", ["loss_weights"]),
    "misspelt chat key": ("chat {model} temprature=1", ["temprature", "temperature"]),
    "misspelt serve key": ("serve {model} prot=1", ["prot", "port"]),
    "misspelt flag": (TRAIN + " --resmue", ["--resmue", "--resume"]),
    "stray positional": ("train sft extra", ["extra"]),
    "key without value": ("train sft =3", ["=3"]),
    # wrong types
    "batch_size text": ("train sft batch_size=abc", ["batch_size", "integer"]),
    "lr text": ("train sft lr=fast", ["lr", "number"]),
    "packing not bool": ("train sft packing=maybe", ["packing", "true or false"]),
    "max_steps a list": ("train sft max_steps=[1,2]", ["max_steps"]),
    "columns a number": ("train sft columns=5", ["columns", "mapping"]),
    "lora a number": ("train sft lora=3", ["lora", "mapping"]),
    "port text": ("serve {model} port=http", ["port", "integer"]),
    "epochs text": ("train sft epochs=many", ["epochs", "number"]),
    # zero / negative / out-of-range values
    "batch_size 0": ("train sft batch_size=0", ["batch_size", ">= 1"]),
    "grad_accum 0": ("train sft grad_accum=0", ["grad_accum"]),
    "max_steps 0": ("train sft max_steps=0", ["max_steps"]),
    "max_steps negative": ("train sft max_steps=-5", ["max_steps"]),
    "max_length 0 pt": ("train pt max_length=0", ["max_length", "got 0"]),
    "max_length -1 sft": ("train sft max_length=-1", ["max_length", "got -1"]),
    "max_length -1 rm": ("train rm max_length=-1", ["max_length"]),
    "epochs 0": ("train sft epochs=0", ["epochs"]),
    "epochs -1": ("train pt epochs=-1", ["epochs", "got -1"]),
    "epochs inf": ("train pt epochs=.inf", ["epochs"]),
    "lr 0": ("train sft lr=0", ["lr"]),
    "lr negative": ("train sft lr=-1e-3", ["lr"]),
    "lr nan": ("train sft lr=.nan", ["lr"]),
    "val_fraction 1.5": ("train sft val_fraction=1.5", ["val_fraction"]),
    "eval_every negative": ("train sft eval_every=-1", ["eval_every"]),
    "save_every negative": ("train sft save_every=-2", ["save_every"]),
    "log_every 0": ("train sft log_every=0", ["log_every"]),
    "save_total_limit 0": ("train sft save_total_limit=0", ["save_total_limit"]),
    "warmup_ratio 2": ("train sft warmup_ratio=2", ["warmup_ratio"]),
    "warmup_steps negative": ("train sft warmup_steps=-4", ["warmup_steps"]),
    "min_lr_ratio 3": ("train sft min_lr_ratio=3", ["min_lr_ratio"]),
    "clip_grad 0": ("train sft clip_grad=0", ["clip_grad"]),
    "weight_decay negative": ("train sft weight_decay=-1", ["weight_decay"]),
    "betas one number": ("train sft betas=[0.9]", ["betas"]),
    "lora.rank 0": ("train sft tuning=lora lora.rank=0", ["lora.rank", "got 0"]),
    "lora.rank negative": ("train rm tuning=lora lora.rank=-2", ["lora.rank"]),
    "lora.dropout 1.5": ("train sft lora.dropout=1.5", ["lora.dropout"]),
    "lora.alpha 0": ("train sft lora.alpha=0", ["lora.alpha"]),
    "freeze layers negative": ("train sft tuning=freeze freeze.trainable_layers=-1", ["freeze.trainable_layers"]),
    "data_fraction 0": ("train sft data_fraction=0", ["data_fraction"]),
    "limit 0": ("train sft limit=0", ["limit"]),
    "several problems at once": ("train sft batch_size=0 lr=-1", ["batch_size", "lr"]),
    "port 70000": ("serve {model} port=70000", ["port"]),
    "serve max_batch_size 0": ("serve {model} max_batch_size=0", ["max_batch_size"]),
    "serve max_request_bytes 0": ("serve {model} max_request_bytes=0", ["max_request_bytes"]),
    # unknown architecture / size / tuning / schedule / precision
    "unknown architecture pt": ("train pt model=mamba:tiny", ["unknown architecture 'mamba'", "known: rnn, lstm, gru"]),
    "unknown architecture sft": ("train sft model=mamba:tiny", ["unknown architecture 'mamba'"]),
    "misspelt architecture": ("train pt model=transfomer:tiny", ["transfomer", "did you mean 'transformer'"]),
    "unknown size": ("train pt model=transformer:huge", ["huge", "tiny, small"]),
    "unknown arch key": ("train pt model=transformer:tiny arch.num_layerz=2", ["num_layerz"]),
    "arch on a folder model": (TRAIN.replace("train sft", "train pt") + " arch.num_layers=2", ["arch"]),
    "unknown tuning": ("train sft tuning=lorra", ["tuning", "did you mean 'lora'"]),
    "unknown schedule": ("train sft schedule=cosin", ["schedule", "cosine"]),
    "unknown precision": ("train sft precision=fp8", ["precision"]),
    "unknown tokenizer kind": ("train pt tokenizer_kind=word", ["tokenizer_kind"]),
    "chat with an architecture": ("chat transformer:tiny", ["without trained weights"]),
    # missing or corrupt model files, hub ids offline
    "model folder missing": (TRAIN.replace("model={model}", "model={root}/nope/model"), ["nope", "no such folder"]),
    "model folder typo": (TRAIN.replace("model={model}", "model={root}/unfinishd"), ["did you mean", "unfinished"]),
    "model folder without config": (TRAIN.replace("model={model}", "model={root}/no_config"), ["no_config", "config.json"]),
    "model config broken": (TRAIN.replace("model={model}", "model={root}/bad_config"), ["bad_config"]),
    "weights truncated": (TRAIN.replace("model={model}", "model={root}/trunc"),
                          ["trunc/model.safetensors", "corrupt or truncated"]),
    "weights empty": (TRAIN.replace("model={model}", "model={root}/empty_weights"),
                      ["empty_weights/model.safetensors", "corrupt or truncated"]),
    "run folder not finished": (TRAIN.replace("model={model}", "model={root}/unfinished"), ["unfinished", "--resume"]),
    "hub id offline": (TRAIN.replace("model={model}", "model=nobody-here/no-such-model-13"),
                       ["nobody-here/no-such-model-13", "offline"]),
    "chat hub id offline": ("chat nobody-here/no-such-model-13", ["nobody-here/no-such-model-13"]),
    # out= at a file or a user's folder
    "out at a file": (TRAIN + " out={root}/notes.txt", ["notes.txt", "existing file"]),
    "out at a user's folder": (TRAIN + " out={root}/mine", ["mine", "lmlab did not make", "pick another out="]),
    "out at a user's folder --force": (TRAIN + " out={root}/mine --force", ["mine", "lmlab did not make"]),
    "out at a user's folder --resume": (TRAIN + " out={root}/mine --resume", ["mine", "lmlab did not make"]),
    "export out at a user's folder": ("export {model} out={root}/mine", ["mine", "thesis.tex", "pick another out="]),
    "index out at a user's folder": ("index {root}/texts.txt out={root}/mine", ["mine", "thesis.tex"]),
    "export out at a file": ("export {model} out={root}/notes.txt", ["notes.txt", "existing file"]),
    "pt out at a file": ("train pt data={root}/texts.txt model=transformer:tiny out={root}/notes.txt max_steps=1",
                         ["notes.txt"]),
    # YAML and recipes
    "broken YAML": ("train sft {root}/broken.yaml", ["broken.yaml:3", "invalid YAML"]),
    "YAML a list": ("train sft {root}/list.yaml", ["list.yaml", "mapping"]),
    "YAML missing": ("train sft {root}/absent.yaml", ["absent.yaml", "no such file"]),
    "YAML unknown key": ("train sft {root}/unknown.yaml", ["batchsize", "batch_size"]),
    "recipe missing": ("run {root}/absent.yaml", ["absent.yaml"]),
    "recipe names a missing stage": ("run {root}/recipe_missing_ref.yaml out={root}/rr", ["pt"]),
    "recipe unknown command": ("run {root}/recipe_bad_command.yaml out={root}/rr", ["train pretrain"]),
    "recipe misspelt key": ("run {root}/recipe_bad_key.yaml out={root}/rr", ["max_stepz", "max_steps"]),
    "recipe without stages": ("run {root}/recipe_no_stages.yaml out={root}/rr", ["stages"]),
    "recipe only unknown stage": ("run {root}/recipe_ok.yaml only=nosuch out={root}/rr", ["nosuch"]),
    # impossible hardware
    "qlora on CPU": (TRAIN + " tuning=qlora", ["qlora", "CUDA"]),
    "fp16 on CPU": (TRAIN + " precision=fp16 device=cpu", ["fp16", "CUDA"]),
    "unknown device": (TRAIN + " device=tpu", ["device", "tpu"]),
    "unknown data kind": ("data show {root}/good.jsonl kind=dialog", ["dialog", "kinds"]),
    "data name unknown": (TRAIN.replace("data={root}/good.jsonl", "data=storyworld/instrct"), ["storyworld/instrct"]),
}
NEEDS_CPU_ONLY = {"qlora on CPU", "fp16 on CPU"}


def run_cli(argv: str, world, capsys) -> tuple[int, str]:
    args = argv.format(**world).split()
    capsys.readouterr()
    rc = main(args)
    out, err = capsys.readouterr()
    return rc, out + err


@pytest.mark.parametrize("case", list(CLI_ERRORS))
def test_cli_and_config_errors_are_clean(case, world, capsys, monkeypatch):
    if case in NEEDS_CPU_ONLY:
        import torch

        if torch.cuda.is_available():
            pytest.skip("this machine has the hardware")
    monkeypatch.chdir(world["root"])  # a default out= (runs/...) lands in the test's folder
    argv, names = CLI_ERRORS[case]
    names = [n.format(**world) for n in names]
    user_files = {p: p.read_bytes() for p in world["root"].glob("mine/*")} | {world["root"] / "notes.txt": b"my notes"}
    rc, err = run_cli(argv, world, capsys)
    check_message(rc, err, names)
    for path, content in user_files.items():  # the user's files are untouched
        assert path.read_bytes() == content
    for out in [*(world["root"] / "runs").glob("*")] if (world["root"] / "runs").exists() else []:
        check_nothing_valid(out)


@pytest.mark.parametrize("case", list(DATA_ERRORS))
def test_bad_data_files_are_clean_errors(case, tmp_path, capsys):
    name, content, kind, names = DATA_ERRORS[case]
    path = write(tmp_path, name, content)
    capsys.readouterr()
    rc = main(["data", "show", str(path), f"kind={kind}", "n=1000"])
    check_message(rc, capsys.readouterr().err, names)


@pytest.mark.parametrize("case", list(DATA_VALID))
def test_odd_but_valid_data_loads_exactly(case, tmp_path):
    from lmlab.data.loaders import load_records

    name, content, kind, expected = DATA_VALID[case]
    records = [dataclasses.asdict(r) for r in load_records(write(tmp_path, name, content), kind)]
    assert [{k: r[k] for k in e} for r, e in zip(records, expected, strict=True)] == expected


def test_a_5mb_line_loads_whole(tmp_path):
    from lmlab.data.loaders import load_records

    text = "word " * 1_000_000
    path = write(tmp_path, "big.jsonl", rows({"text": "short"}, {"text": text}))
    assert [len(r.text) for r in load_records(path, "text")] == [5, len(text.strip())]


# Training-path data cases: the loader accepts the rows, the stage must refuse the run.
TRAIN_DATA: dict[str, tuple[str, str, list[str]]] = {
    "identical chosen/rejected": ("rm", rows(*[{"prompt": f"p{i}", "chosen": "same", "rejected": "same"} for i in range(4)]),
                                  ["d.jsonl", "chosen", "rejected"]),
    "no assistant message": ("sft", rows(*[{"messages": [{"role": "user", "content": f"x{i}"}]} for i in range(4)]),
                             ["d.jsonl", "no assistant message"]),
    "prompts longer than max_length": ("sft", rows(*[{"prompt": "the cat ran " * 100, "completion": "ok"}] * 4),
                                       ["d.jsonl", "max_length"]),
    "messages a string (stage)": ("sft", '{"messages": "hello"}\n', ["d.jsonl:1", "messages must be a list"]),
    "empty file (stage)": ("sft", "", ["d.jsonl", "no rows"]),
}


@pytest.mark.parametrize("case", list(TRAIN_DATA))
def test_stage_refuses_unusable_data_and_leaves_nothing_valid(case, tmp_path, model_dir, capsys):
    stage, content, names = TRAIN_DATA[case]
    data = write(tmp_path, "d.jsonl", content)
    out = tmp_path / "run"
    capsys.readouterr()
    rc = main(["train", stage, f"model={model_dir}", f"data={data}", f"out={out}", "max_steps=1", "batch_size=2",
               "max_length=64"])
    check_message(rc, capsys.readouterr().err, names)
    check_nothing_valid(out)
    assert json.loads(json.dumps(sorted(p.name for p in out.iterdir()))) in ([], [".lmlab-run", "config.yaml"])


@pytest.mark.parametrize("argv,names", [
    (["train", "sft", "max_length=0"], ["max_length"]),
    (["train", "pt", "model=mamba:tiny"], ["unknown architecture 'mamba'"]),
    (["data", "show", "{root}/x.parquet"], ["x.parquet"]),
], ids=["config", "architecture", "data"])
def test_subprocess_sees_one_message_and_no_traceback(argv, names, world, tmp_path):
    (world["root"] / "x.parquet").write_text("text, not parquet")
    proc = subprocess.run([sys.executable, "-m", "lmlab", *[a.format(**world) for a in argv]], capture_output=True,
                          text=True, env=ENV, cwd=tmp_path, timeout=120)
    check_message(proc.returncode, proc.stderr, names)
    assert proc.returncode == 2 and not list(tmp_path.iterdir())
