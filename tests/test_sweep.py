"""`lmlab sweep`: trials through the real stage command, resumable study, best.yaml, pruning hook."""
from __future__ import annotations

import optuna
import pytest
import yaml

from conftest import corpus
from lmlab.cli import main
from lmlab.errors import ConfigError
from lmlab.sweep import PruneOnVal, parse_space


@pytest.fixture
def recipe(tmp_path, tiny_tokenizer_dir, monkeypatch):
    monkeypatch.setenv("LMLAB_CACHE", str(tmp_path / "cache"))
    data = tmp_path / "stories.txt"
    data.write_text("\n\n".join(corpus(300)), encoding="utf-8")
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump({"name": "tiny", "out": str(tmp_path / "runs"), "stages": {"pt": {
        "run": "train pt", "model": "transformer:tiny", "data": str(data), "tokenizer": str(tiny_tokenizer_dir),
        "max_steps": 3, "eval_every": 3, "eval_batches": 2, "batch_size": 4, "max_length": 16,
        "arch": {"hidden_size": 32, "num_layers": 1}}}}))
    space = tmp_path / "space.yaml"
    space.write_text("lr: {low: 1.0e-4, high: 1.0e-2, log: true}\nbatch_size: [2, 4]\n")
    return path, space


def test_sweep_runs_trials_writes_best_and_resumes(recipe, tmp_path):
    path, space = recipe
    out = tmp_path / "sweep"
    assert main(["sweep", str(path), f"space={space}", "trials=2", "stage=pt", f"out={out}", "--quiet"]) == 0
    best = yaml.safe_load((out / "best.yaml").read_text())
    study = optuna.load_study(study_name="tiny-pt", storage=f"sqlite:///{out / 'study.db'}")
    assert len(study.trials) == 2
    values = {t.number: t.value for t in study.trials if t.value is not None}  # a pruned trial has none
    assert best["value"] == min(values.values())
    assert 1e-4 <= best["params"]["lr"] <= 1e-2 and best["params"]["batch_size"] in (2, 4)
    assert best["config"]["lr"] == best["params"]["lr"] and best["config"]["model"] == "transformer:tiny"
    # each trial is an ordinary run folder whose result matches what the study recorded
    import json

    for n, v in values.items():
        assert json.loads((out / f"trial-{n}" / "result.json").read_text())["val_loss"] == pytest.approx(v)
    # resumable: trials=2 again runs nothing, trials=3 adds exactly one
    assert main(["sweep", str(path), f"space={space}", "trials=2", f"out={out}", "--quiet"]) == 0
    assert len(optuna.load_study(study_name="tiny-pt", storage=f"sqlite:///{out / 'study.db'}").trials) == 2
    assert main(["sweep", str(path), f"space={space}", "trials=3", f"out={out}", "--quiet"]) == 0
    assert len(optuna.load_study(study_name="tiny-pt", storage=f"sqlite:///{out / 'study.db'}").trials) == 3


def test_space_errors_name_the_key(recipe, tmp_path):
    with pytest.raises(ConfigError, match="'lr' needs numbers low < high"):
        parse_space({"lr": {"low": 1.0, "high": 0.1}}, "space.yaml")
    with pytest.raises(ConfigError, match="'warmup' must be"):
        parse_space({"warmup": 3}, "space.yaml")
    path, _ = recipe
    bad = tmp_path / "bad.yaml"
    bad.write_text("lrr: [0.1, 0.2]\n")
    from lmlab.api import call

    with pytest.raises(ConfigError, match="did you mean 'lr'"):
        call("sweep", recipe=str(path), space=str(bad), trials=1, out=str(tmp_path / "s2"))


def test_prune_callback_reports_and_prunes():
    study = optuna.create_study(pruner=optuna.pruners.MedianPruner(n_startup_trials=1, n_warmup_steps=0))
    first = study.ask()
    PruneOnVal(first).on_eval(None, {"step": 2, "loss": 1.0})
    study.tell(first, 1.0)
    worse = study.ask()
    with pytest.raises(optuna.TrialPruned):
        PruneOnVal(worse).on_eval(None, {"step": 2, "loss": 5.0})
    assert worse.storage.get_trial(worse._trial_id).intermediate_values == {2: 5.0}
    better = study.ask()
    PruneOnVal(better).on_eval(None, {"step": 2, "loss": 0.5})  # better than the median: goes on
