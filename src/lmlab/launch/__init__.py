"""Launch a training command on several processes, GPUs or machines through `accelerate launch`.

accelerate stays the only abstraction: the same loop runs in one process, under DDP, FSDP2 or
DeepSpeed ZeRO-2/3. This package ships one accelerate config per strategy (`ddp.yaml`,
`fsdp2.yaml`, `zero2.yaml`, `zero3.yaml`, next to this file) and re-runs a command under
`accelerate launch` when a training config says `launcher=…`:

    lmlab train sft model=… launcher=ddp num_processes=2      # → accelerate launch --config_file …/ddp.yaml
    accelerate launch --config_file "$(python -m lmlab.launch ddp)" -m lmlab train sft model=…

The relaunched processes get the fully resolved config as a YAML file (so the command means the
same thing in every process), without `launcher`, so they train instead of launching again.
"""
from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import yaml

from lmlab.errors import ConfigError

HERE = Path(__file__).parent
LAUNCHERS = ("ddp", "fsdp2", "zero2", "zero3")


def config_path(launcher: str) -> Path:
    """The accelerate config file for `launcher`: a packaged name or a path to the user's own YAML."""
    if launcher in LAUNCHERS:
        return HERE / f"{launcher}.yaml"
    path = Path(launcher).expanduser()
    if path.suffix in (".yaml", ".yml") and path.is_file():
        return path
    from lmlab.config import closest

    hint = closest(launcher, LAUNCHERS)
    raise ConfigError(f"launcher={launcher!r} is neither a packaged launcher ({', '.join(LAUNCHERS)}) nor an existing "
                      f"accelerate config YAML" + (f"; did you mean '{hint}'?" if hint else ""))


def default_processes(launcher: str) -> int:
    """One process per visible GPU; on a machine without GPUs, 2 CPU processes for ddp."""
    import torch

    gpus = torch.cuda.device_count()
    if gpus:
        return gpus
    if launcher != "ddp":
        raise ConfigError(f"launcher={launcher} shards the model over GPUs and this machine has none (accelerate enables "
                          "FSDP and DeepSpeed only on accelerators); use launcher=ddp to train on several CPU processes")
    return 2


def launch_command(words: list[str], config: dict[str, Any], flags: list[str], launcher: str,
                   num_processes: int | None, workdir: Path) -> list[str]:
    """The `accelerate launch` argv that runs `lmlab <words>` with `config` (written to workdir)."""
    cfg_file = workdir / "launch-config.yaml"
    cfg_file.write_text(yaml.safe_dump(config, sort_keys=False, allow_unicode=True), encoding="utf-8")
    n = num_processes or default_processes(launcher)
    return [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(config_path(launcher)),
            "--num_processes", str(n), "-m", "lmlab", *words, str(cfg_file), *flags]


def relaunch(words: list[str], config: dict[str, Any], flags: list[str]) -> int:
    """Run `lmlab <words>` under accelerate launch with `config` minus its launcher keys; returns the exit code."""
    config = dict(config)
    launcher = config.pop("launcher")
    num_processes = config.pop("num_processes", None)
    with tempfile.TemporaryDirectory(prefix="lmlab-launch-") as tmp:
        argv = launch_command(words, config, flags, launcher, num_processes, Path(tmp))
        env = {**os.environ}
        env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 2) // int(argv[argv.index("--num_processes") + 1]))))
        return subprocess.run(argv, env=env, check=False).returncode


if __name__ == "__main__":  # python -m lmlab.launch ddp → the packaged config's path
    print(config_path(sys.argv[1] if len(sys.argv) > 1 else "ddp"))
