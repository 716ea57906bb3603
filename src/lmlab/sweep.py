"""`lmlab sweep`: hyper-parameter search over one stage of a recipe, with Optuna.

    lmlab sweep recipes/quickstart.yaml space=space.yaml trials=20 stage=pt

SPACE.yaml names stage keys and their ranges::

    lr: {low: 1.0e-4, high: 1.0e-2, log: true}     # a float range (log-uniform)
    warmup_steps: {low: 0, high: 100}              # ints when both bounds are ints
    batch_size: [8, 16, 32]                        # a choice
    lora.rank: [8, 16]                             # nested keys use dots

The stages before `stage` run once (or are reused when finished); each trial then runs `stage`
through its ordinary command with the sampled keys, into <out>/trial-N. The study lives in
<out>/study.db (SQLite), so an interrupted sweep continues where it stopped and `trials=N` means
N trials in total. Trials report their validation loss at every evaluation and the median rule
prunes the hopeless ones (Optuna's MedianPruner). The best keys go to <out>/best.yaml.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from lmlab.config import closest, load_yaml, merge, opt, set_dotted
from lmlab.errors import ConfigError, TrainingDiverged
from lmlab.progress import log
from lmlab.runs import atomic_write_json, atomic_write_yaml
from lmlab.train.trainer import Callback, extra_callbacks


@dataclass
class SweepConfig:
    """`lmlab sweep RECIPE.yaml space=SPACE.yaml trials=N`: search one stage's keys with Optuna."""

    recipe: str = opt(help="the recipe YAML file")
    space: str = opt(help="YAML file: key → {low, high, log?} range or [choices]")
    trials: int = opt(10, "trials in total (an interrupted sweep continues up to this number)")
    stage: str | None = opt(None, "stage to tune; default: the recipe's last training stage")
    metric: str = opt("val_loss", "result key to optimise (val_loss, or any number in the stage's result.json)")
    direction: Literal["minimize", "maximize"] = opt("minimize", "minimize (losses) or maximize (accuracies, rewards)")
    prune: bool = opt(True, "stop trials whose val loss is worse than the median of earlier trials at the same step")
    scale: str | None = opt(None, "recipe profile to apply first (e.g. full)")
    out: str | None = opt(None, "sweep folder; default runs/<recipe name>/sweep-<stage>")
    seed: int = opt(0, "seed of the sampler (TPE), so a sweep is repeatable")
    overrides: dict[str, Any] = opt({}, "stage.key=value overrides of the recipe, as in `lmlab run`")

    EXTRA_KEYS_FIELD = "overrides"

    def validate(self) -> list[str]:
        return [f"trials must be >= 1, got {self.trials}"] if self.trials < 1 else []


# -- the space ------------------------------------------------------------------------------------------
def parse_space(space: dict[str, Any], source: str) -> dict[str, Any]:
    """Check every entry's shape; ranges become {low, high, log, int}."""
    problems, out = [], {}
    for key, spec in space.items():
        if isinstance(spec, list):
            if not spec:
                problems.append(f"{source}: '{key}' has an empty list of choices")
            out[key] = spec
        elif isinstance(spec, dict):
            extra = set(spec) - {"low", "high", "log", "step"}
            if extra or "low" not in spec or "high" not in spec:
                problems.append(f"{source}: '{key}' must be {{low: A, high: B, log: true?}} or a list of choices, got {spec}")
                continue
            low, high = spec["low"], spec["high"]
            if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (low, high)) or low >= high:
                problems.append(f"{source}: '{key}' needs numbers low < high, got low={low!r} high={high!r}")
                continue
            out[key] = {"low": low, "high": high, "log": bool(spec.get("log", False)), "step": spec.get("step"),
                        "int": isinstance(low, int) and isinstance(high, int)}
        else:
            problems.append(f"{source}: '{key}' must be a range {{low, high}} or a list of choices, got {spec!r}")
    if not out and not problems:
        problems.append(f"{source}: the search space is empty")
    if problems:
        raise ConfigError("\n".join(problems))
    return out


def sample(trial: Any, space: dict[str, Any]) -> dict[str, Any]:
    params = {}
    for key, spec in space.items():
        if isinstance(spec, list):
            params[key] = trial.suggest_categorical(key, spec)
        elif spec["int"]:
            params[key] = trial.suggest_int(key, spec["low"], spec["high"], log=spec["log"], step=spec["step"] or 1)
        else:
            params[key] = trial.suggest_float(key, float(spec["low"]), float(spec["high"]), log=spec["log"], step=spec["step"])
    return params


def nested(params: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in params.items():
        set_dotted(out, key, value)
    return out


class PruneOnVal(Callback):
    """Report each evaluation's val loss to the trial; raise TrialPruned when the pruner says so."""

    def __init__(self, trial: Any):
        self.trial = trial

    def on_eval(self, trainer: Any, row: dict[str, Any]) -> None:
        import optuna

        self.trial.report(float(row["loss"]), step=int(row["step"]))
        if self.trial.should_prune():
            raise optuna.TrialPruned(f"val loss {row['loss']:.4f} at step {row['step']} is worse than the median")


# -- the command ----------------------------------------------------------------------------------------
def run(cfg: SweepConfig) -> dict[str, Any]:
    import optuna

    from lmlab.cli import COMMANDS, _load, call
    from lmlab.config import build, route_extra_keys
    from lmlab.recipes import execute, plan

    recipe = load_yaml(cfg.recipe)
    name, root, stages = plan(recipe, source=cfg.recipe, scale=cfg.scale, overrides=cfg.overrides, out=None)
    names = [s.name for s in stages]
    if cfg.stage is None:
        trainable = [s for s in stages if s.command.startswith("train ")]
        if not trainable:
            raise ConfigError(f"{cfg.recipe}: no training stage to tune; name one with stage=NAME (stages: {', '.join(names)})")
        target = trainable[-1]
    elif cfg.stage not in names:
        hint = closest(cfg.stage, names)
        raise ConfigError(f"stage={cfg.stage}: no such stage in {cfg.recipe}" + (f"; did you mean '{hint}'?" if hint else f" (stages: {', '.join(names)})"))
    else:
        target = stages[names.index(cfg.stage)]
    space = parse_space(load_yaml(cfg.space), cfg.space)
    cmd = next(c for c in COMMANDS if c.name == target.command)
    klass = _load(cmd.config)
    # every key of the space must be a key of the stage: check with each range's low / first choice
    probe = nested({k: (v[0] if isinstance(v, list) else v["low"]) for k, v in space.items()})
    build(klass, route_extra_keys(klass, merge(target.keys, probe)), where=f"{cfg.space} (stage '{target.name}')")

    out = Path(cfg.out or root / f"sweep-{target.name}")
    out.mkdir(parents=True, exist_ok=True)
    earlier = stages[: names.index(target.name)]
    if earlier:
        execute(name, root, earlier, only=[], resume=False, force=False)

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    pruner = optuna.pruners.MedianPruner(n_startup_trials=1, n_warmup_steps=0) if cfg.prune else optuna.pruners.NopPruner()
    study = optuna.create_study(study_name=f"{name}-{target.name}", storage=f"sqlite:///{(out / 'study.db').resolve()}",
                                load_if_exists=True, direction=cfg.direction,
                                sampler=optuna.samplers.TPESampler(seed=cfg.seed), pruner=pruner)
    finished = optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED, optuna.trial.TrialState.FAIL
    done = len(study.get_trials(deepcopy=False, states=finished))

    def objective(trial: Any) -> float:
        params = sample(trial, space)
        keys = merge(target.keys, nested(params))
        keys["out"] = str(out / f"trial-{trial.number}")
        log(f"[bold]trial {trial.number}[/bold]: {params}")
        callbacks = [PruneOnVal(trial)] if cfg.prune and cfg.metric == "val_loss" else []
        with extra_callbacks(callbacks):
            result = call(cmd, keys, force=True, where=f"sweep {name}/{target.name} trial {trial.number}")
        metrics = getattr(result, "metrics", result)
        value = metrics.get(cfg.metric) if isinstance(metrics, dict) else None
        if value is None:
            raise ConfigError(f"stage '{target.name}' reported no '{cfg.metric}' (keys: {', '.join(metrics)}); "
                              "for val_loss give eval_data or val_fraction > 0")
        return float(value)

    if cfg.trials > done:
        study.optimize(objective, n_trials=cfg.trials - done, catch=(TrainingDiverged,))
    else:
        log(f"{out}: {done} trials already finished (trials={cfg.trials})")
    return summarize(study, cfg, target, out)


def summarize(study: Any, cfg: SweepConfig, target: Any, out: Path) -> dict[str, Any]:
    """Print the trials table; write best.yaml (the stage's keys with the best values) and result.json."""
    import optuna
    from rich.console import Console
    from rich.table import Table

    trials = study.get_trials(deepcopy=False)
    keys = sorted({k for t in trials for k in t.params})
    table = Table(title=f"sweep {target.name}: {cfg.metric} ({cfg.direction})")
    for col in ("trial", "state", *keys, cfg.metric):
        table.add_column(col, justify="right")
    for t in trials:
        table.add_row(str(t.number), t.state.name.lower(), *(f"{t.params[k]:.4g}" if isinstance(t.params.get(k), float)
                      else str(t.params.get(k, "-")) for k in keys), f"{t.value:.4f}" if t.value is not None else "-")
    Console().print(table)
    complete = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    summary: dict[str, Any] = {"stage": target.name, "metric": cfg.metric, "direction": cfg.direction,
                               "trials": len(trials), "complete": len(complete),
                               "pruned": sum(t.state == optuna.trial.TrialState.PRUNED for t in trials)}
    if complete:
        best = study.best_trial
        config = {k: v for k, v in merge(target.keys, nested(best.params)).items() if k != "out"}
        summary.update(best_trial=best.number, best_value=best.value, best_params=best.params,
                       best_run=str(out / f"trial-{best.number}"))
        atomic_write_yaml(out / "best.yaml", {"stage": target.name, "metric": cfg.metric, "value": best.value,
                                              "trial": best.number, "params": best.params, "config": config})
        print(f"best: trial {best.number}, {cfg.metric} {best.value:.4f}, {best.params} → {out / 'best.yaml'}")
    atomic_write_json(out / "result.json", summary)
    return summary
