"""Recipe planning: references, profiles, overrides, every error before any stage runs."""
from __future__ import annotations

from dataclasses import dataclass

import pytest

from lmlab import cli
from lmlab.config import opt
from lmlab.errors import ConfigError
from lmlab.recipes import execute, plan


@dataclass
class EchoConfig:
    out: str = opt(help="run folder")
    text: str = opt("hi", "what to echo")
    times: int = opt(1, "how often")


CALLS: list[tuple[str, int]] = []


def echo(cfg: EchoConfig) -> dict:
    CALLS.append((cfg.text, cfg.times))
    return {"echoed": cfg.text * cfg.times}


@pytest.fixture
def echo_command(monkeypatch):
    CALLS.clear()
    cmd = cli.Command("test echo", f"{__name__}:EchoConfig", f"{__name__}:echo")
    monkeypatch.setattr(cli, "COMMANDS", [*cli.COMMANDS, cmd])
    return cmd


RECIPE = {
    "name": "demo",
    "stages": {
        "a": {"run": "test echo", "text": "x"},
        "b": {"run": "test echo", "text": "${a}/final", "times": 2},
    },
    "profiles": {"big": {"a": {"times": 5}}},
}


def test_plan_resolves_references_profiles_overrides(echo_command, tmp_path):
    name, root, stages = plan(RECIPE, source="r.yaml", scale="big", overrides={"b": {"times": 3}}, out=str(tmp_path))
    assert name == "demo" and root == tmp_path
    a, b = stages
    assert a.keys == {"text": "x", "times": 5, "out": str(tmp_path / "a")}
    assert b.keys["text"] == f"{tmp_path / 'a'}/final" and b.keys["times"] == 3


def test_plan_reports_every_problem(echo_command):
    bad = {
        "name": "demo",
        "stagse": {},
        "stages": {
            "a": {"run": "test echo", "txt": "x"},
            "b": {"run": "test ecko"},
            "c": {"run": "test echo", "text": "${aa}"},
        },
    }
    with pytest.raises(ConfigError) as err:
        plan(bad, source="r.yaml", scale=None, overrides={"d": {"times": 1}}, out=None)
    msg = str(err.value)
    assert "unknown top-level key 'stagse'; did you mean 'stages'?" in msg
    assert "unknown key 'txt'; did you mean 'text'?" in msg
    assert "did you mean 'test echo'?" in msg
    assert "unknown stage reference ${aa}; did you mean ${a}?" in msg
    assert "no stage 'd'" in msg


def test_unknown_profile(echo_command):
    with pytest.raises(ConfigError, match="no profile 'bgi'; did you mean 'big'"):
        plan(RECIPE, source="r.yaml", scale="bgi", overrides={}, out=None)


def test_execute_skips_finished_stages_unless_forced(echo_command, tmp_path):
    name, root, stages = plan(RECIPE, source="r.yaml", scale=None, overrides={}, out=str(tmp_path))
    results = execute(name, root, stages, only=[], resume=False, force=False)
    assert results["a"] == {"echoed": "x"} and len(CALLS) == 2
    assert (tmp_path / "a" / "result.json").exists()
    execute(name, root, stages, only=[], resume=False, force=False)
    assert len(CALLS) == 2  # both skipped
    execute(name, root, stages, only=["b"], resume=False, force=True)
    assert len(CALLS) == 3


def test_cli_routes_stage_overrides(echo_command, tmp_path, monkeypatch):
    import yaml

    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(RECIPE))
    rc = cli.main(["run", str(path), f"out={tmp_path / 'o'}", "a.times=4", "--quiet"])
    assert rc == 0 and CALLS[0] == ("x", 4)
    rc = cli.main(["run", str(path), "a.tims=4"])
    assert rc == 2
