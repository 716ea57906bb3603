"""`launcher=ddp`: the real `accelerate launch` with 2 CPU processes (gloo) equals one process with
the same global batch, writes one final/, and its checkpoints resume in one process and vice versa."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from lmlab.errors import ConfigError

BASE = ["train", "pt", "model=transformer:tiny", "data=storyworld/pretrain", "limit=300", "batch_size=4",
        "max_length=64", "vocab_size=300", "device=cpu", "log_every=1", "save_every=2", "schedule=constant",
        "lr=3e-3", "eval_every=0", "keep_best=false", "--quiet"]


def lmlab(*args: str) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "LMLAB_QUIET": "1"}
    out = subprocess.run([sys.executable, "-m", "lmlab", *args], capture_output=True, text=True, env=env, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]


def losses(run: Path) -> list[float]:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [r["loss"] for r in rows if r.get("split") == "train"]


def interrupt_after_checkpoint(run: Path) -> None:
    """What a kill after step 2's checkpoint leaves: no result.json, no final/."""
    (run / "result.json").unlink()
    shutil.rmtree(run / "final")


@pytest.mark.slow
def test_ddp_two_processes_equal_one_and_resume_across_world_sizes(tmp_path):
    one, two, back = tmp_path / "one", tmp_path / "two", tmp_path / "back"
    lmlab(*BASE, "grad_accum=2", "max_steps=4", f"out={one}")
    reference = losses(one)

    # 2 processes × batch 4 × accum 1, stopped after step 2; resumed in 1 process × accum 2
    lmlab(*BASE, "grad_accum=1", "max_steps=2", f"out={two}", "launcher=ddp", "num_processes=2")
    assert sorted(p.name for p in (two / "checkpoints" / "step-2").glob("rng-*.pt")) == ["rng-0.pt", "rng-1.pt"]
    assert (two / "final" / "model.safetensors").exists() and len(losses(two)) == 2  # one process logs
    interrupt_after_checkpoint(two)
    lmlab(*BASE, "grad_accum=2", "max_steps=4", f"out={two}", "--resume")
    assert losses(two) == pytest.approx(reference, rel=1e-5)

    # and the other way: 1 process to step 2, resumed by 2 processes
    lmlab(*BASE, "grad_accum=2", "max_steps=2", f"out={back}")
    interrupt_after_checkpoint(back)
    lmlab(*BASE, "grad_accum=1", "max_steps=4", f"out={back}", "launcher=ddp", "num_processes=2", "--resume")
    assert losses(back) == pytest.approx(reference, rel=1e-5)


def test_launcher_names_and_configs():
    import yaml

    from lmlab.launch import LAUNCHERS, config_path, launch_command

    for name in LAUNCHERS:
        cfg = yaml.safe_load(config_path(name).read_text())
        assert cfg["distributed_type"] in {"MULTI_GPU", "FSDP", "DEEPSPEED"}
    assert yaml.safe_load(config_path("fsdp2").read_text())["fsdp_config"]["fsdp_version"] == 2
    assert yaml.safe_load(config_path("zero3").read_text())["deepspeed_config"]["zero_stage"] == 3
    with pytest.raises(ConfigError, match="did you mean 'fsdp2'"):
        config_path("fsdp")
    argv = launch_command(["train", "sft"], {"model": "m"}, ["--resume"], "ddp", 2, Path("/tmp"))
    assert argv[1:3] == ["-m", "accelerate.commands.launch"]
    assert argv[-6:] == ["-m", "lmlab", "train", "sft", "/tmp/launch-config.yaml", "--resume"]
    assert argv[argv.index("--num_processes") + 1] == "2" and argv[argv.index("--config_file") + 1].endswith("ddp.yaml")


def test_sharded_launchers_need_gpus(monkeypatch):
    import torch

    from lmlab.launch import default_processes

    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    assert default_processes("ddp") == 2
    with pytest.raises(ConfigError, match="launcher=ddp"):
        default_processes("zero3")
