"""The command line: verb table, help, suggestions, clean errors with exit status 2."""
from __future__ import annotations

import subprocess
import sys

from lmlab import cli


def test_help_lists_every_command(capsys):
    assert cli.main(["--help"]) == 0
    out = capsys.readouterr().out
    for cmd in cli.COMMANDS:
        assert f"lmlab {cmd.name}" in out


def test_command_help_lists_keys_with_defaults(capsys):
    assert cli.main(["train", "sft", "--help"]) == 0
    out = capsys.readouterr().out
    assert "lora.rank" in out and "[default: 16]" in out and "train_on_prompt" in out


def test_unknown_command_suggests(capsys):
    assert cli.main(["trian", "pt"]) == 2
    assert "did you mean 'lmlab train pt'?" in capsys.readouterr().err


def test_group_help_lists_its_stages(capsys):
    assert cli.main(["train", "--help"]) == 0
    out = capsys.readouterr().out
    stages = [c.name for c in cli.COMMANDS if c.name.startswith("train ")]
    assert len(stages) >= 3 and all(f"lmlab {name}" in out for name in stages)
    assert "did you mean" not in out
    assert cli.main(["train"]) == 2 and "lmlab train sft" in capsys.readouterr().err


def test_missing_stage_is_not_sent_to_a_similar_one(capsys):
    stages = {c.name.split()[1] for c in cli.COMMANDS if c.name.startswith("train ")}
    for missing in ("ppo", "grpo", "rloo", "bogus"):
        if missing in stages:
            continue
        assert cli.main(["train", missing]) == 2
        err = capsys.readouterr().err
        assert "did you mean" not in err and f"'train {missing}' is not a command" in err
        assert all(name in err for name in stages)  # the stages that do exist are listed
    assert cli.main(["train", "sftt"]) == 2  # a one-letter typo still gets its hint
    assert "did you mean 'lmlab train sft'?" in capsys.readouterr().err


def test_unknown_flag_and_key_fail_before_work(capsys):
    assert cli.main(["train", "pt", "--resum"]) == 2
    assert "unknown flag --resum; did you mean --resume?" in capsys.readouterr().err
    assert cli.main(["train", "pt", "max_step=3"]) == 2
    assert "unknown key 'max_step'; did you mean 'max_steps'?" in capsys.readouterr().err


def test_every_command_row_resolves():
    """Each row's config class and function import, so no command is a dead end."""
    for cmd in cli.COMMANDS:
        klass = cli._load(cmd.config)
        fn = cli._load(cmd.run)
        assert callable(fn) and hasattr(klass, "__dataclass_fields__"), cmd.name


def test_console_script_runs_as_module():
    proc = subprocess.run([sys.executable, "-m", "lmlab", "--help"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "usage: lmlab COMMAND" in proc.stdout
