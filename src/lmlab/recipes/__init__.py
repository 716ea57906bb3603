"""Recipes: an experiment as a YAML file of stages, each stage one CLI command with its keys.

    lmlab run recipes/ptb-three-models.yaml rnn.max_steps=200 scale=full

A recipe::

    name: quickstart                # runs go to runs/<name>/<stage>/ (or out: DIR)
    stages:                         # run in order
      tok: {run: tokenizer train, data: storyworld/pretrain, vocab_size: 2048}
      pt:  {run: train pt, model: "transformer:tiny", tokenizer: "${tok}"}
      sft: {run: train sft, model: "${pt}"}
    profiles:                       # `scale=NAME` merges profiles.NAME into the stages
      full: {pt: {max_steps: 20000}}

`${stage}` is that stage's run folder. Every stage is validated before the first one runs, so a
typo in the last stage fails in a second, not after an hour of training. A finished stage
(`result.json` present) is skipped unless `--force`; an interrupted one continues with `--resume`.
"""
from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass, fields
from importlib import resources
from pathlib import Path
from typing import Any

from lmlab.config import ConfigError, build, closest, load_yaml, merge, opt, route_extra_keys
from lmlab.progress import log
from lmlab.runs import RunDir, atomic_write_json

REF = re.compile(r"\$\{([A-Za-z0-9_\-]+)\}")
TOP_KEYS = ("name", "description", "out", "stages", "profiles", "recipes")
# Stage names that imply their command when `run:` is omitted.
IMPLIED = {"tokenizer": "tokenizer train", "report": "report"}


@dataclass
class RunConfig:
    """`lmlab run RECIPE.yaml [stage.key=value ...]`: run a recipe of stages."""

    recipe: str = opt(help="the recipe YAML file")
    scale: str | None = opt(None, "profile to apply (a key of the recipe's `profiles:`), e.g. full")
    out: str | None = opt(None, "root folder of the run; default runs/<recipe name>")
    only: list[str] = opt([], "run only these stages (their inputs must exist)")
    overrides: dict[str, Any] = opt({}, "stage.key=value overrides (any key that is not one of the above)")

    # The CLI routes unknown top-level keys (stage names) into this field.
    EXTRA_KEYS_FIELD = "overrides"


@dataclass
class QuickstartConfig:
    """`lmlab quickstart`: storyworld → tokenizer → pretrain → SFT → eval → report on a laptop CPU."""

    scale: str | None = opt(None, "profile of the quickstart recipe: smoke (seconds, for tests) or full")
    out: str | None = opt(None, "root folder; default runs/quickstart")
    only: list[str] = opt([], "run only these stages")
    overrides: dict[str, Any] = opt({}, "stage.key=value overrides, e.g. pt.max_steps=100")

    EXTRA_KEYS_FIELD = "overrides"


@dataclass
class Stage:
    name: str
    command: str
    keys: dict[str, Any]
    out: Path


def _substitute(value: Any, folders: dict[str, Path], where: str, errors: list[str]) -> Any:
    if isinstance(value, str):
        def repl(m: re.Match[str]) -> str:
            ref = m.group(1)
            if ref not in folders:
                hint = closest(ref, folders)
                errors.append(f"{where}: unknown stage reference ${{{ref}}}" + (f"; did you mean ${{{hint}}}?" if hint else ""))
                return m.group(0)
            return str(folders[ref])

        return REF.sub(repl, value)
    if isinstance(value, list):
        return [_substitute(v, folders, where, errors) for v in value]
    if isinstance(value, dict):
        return {k: _substitute(v, folders, where, errors) for k, v in value.items()}
    return value


def plan(recipe: dict[str, Any], *, source: str, scale: str | None, overrides: dict[str, Any], out: str | None) -> tuple[str, Path, list[Stage]]:
    """Turn a recipe mapping into validated stages; raise one ConfigError listing every problem."""
    from lmlab.cli import COMMANDS, _load

    errors: list[str] = []
    for key in recipe:
        if key not in TOP_KEYS:
            hint = closest(key, TOP_KEYS)
            errors.append(f"{source}: unknown top-level key '{key}'" + (f"; did you mean '{hint}'?" if hint else ""))
    name = str(recipe.get("name") or Path(source).stem)
    stages_raw = recipe.get("stages") or {}
    if not isinstance(stages_raw, dict) or not stages_raw:
        raise ConfigError(f"{source}: 'stages' must be a non-empty mapping of stage name → keys")
    if scale:
        profiles = recipe.get("profiles") or {}
        if scale not in profiles:
            hint = closest(scale, profiles)
            raise ConfigError(f"{source}: no profile '{scale}'" + (f"; did you mean '{hint}'?" if hint else f" (profiles: {', '.join(profiles) or 'none'})"))
        stages_raw = merge(stages_raw, profiles[scale])
    for stage_name in overrides:
        if stage_name not in stages_raw:
            hint = closest(stage_name, stages_raw)
            errors.append(f"override '{stage_name}.…': no stage '{stage_name}'" + (f"; did you mean '{hint}'?" if hint else f" (stages: {', '.join(stages_raw)})"))
    stages_raw = merge(stages_raw, {k: v for k, v in overrides.items() if k in stages_raw})
    root = Path(out or recipe.get("out") or Path("runs") / name)
    folders = {s: root / s for s in stages_raw}
    by_name = {c.name: c for c in COMMANDS}
    stages: list[Stage] = []
    for stage_name, raw in stages_raw.items():
        where = f"{source}: stage '{stage_name}'"
        raw = dict(raw or {})
        command = raw.pop("run", None) or IMPLIED.get(stage_name) or (f"train {stage_name}" if f"train {stage_name}" in by_name else None)
        if command not in by_name:
            hint = closest(str(command), by_name)
            errors.append(f"{where}: unknown command run: {command!r}" + (f"; did you mean '{hint}'?" if hint else ""))
            continue
        keys = _substitute(raw, folders, where, errors)
        cmd = by_name[command]
        klass = _load(cmd.config)
        names = {f.name for f in fields(klass)}
        if "out" in names:
            keys.setdefault("out", str(folders[stage_name]))
        if "run_dir" in names:
            keys.setdefault("run_dir", str(root))
        try:
            build(klass, route_extra_keys(klass, keys), where=where)
        except ConfigError as exc:
            errors.append(str(exc))
        stages.append(Stage(stage_name, command, keys, folders[stage_name]))
    if errors:
        raise ConfigError("\n".join(errors))
    return name, root, stages


def execute(name: str, root: Path, stages: list[Stage], *, only: list[str], resume: bool, force: bool) -> dict[str, Any]:
    """Run the stages in order; returns {stage: result}."""
    from lmlab.cli import COMMANDS, call

    by_name = {c.name: c for c in COMMANDS}
    unknown = [s for s in only if s not in {st.name for st in stages}]
    if unknown:
        raise ConfigError(f"only={unknown[0]}: no such stage (stages: {', '.join(st.name for st in stages)})")
    results: dict[str, Any] = {}
    t_all = time.time()
    for stage in stages:
        if only and stage.name not in only:
            continue
        run = RunDir(stage.out)
        if run.is_done() and not force and stage.command != "report":
            log(f"[dim]{name}/{stage.name}: finished earlier, skipped (--force re-runs it)[/dim]")
            results[stage.name] = run.result()
            continue
        log(f"[bold cyan]▶ {name}/{stage.name}[/bold cyan]: lmlab {stage.command}")
        t0 = time.time()
        result = call(by_name[stage.command], stage.keys, resume=resume, force=force, where=f"{name}/{stage.name}")
        metrics = getattr(result, "metrics", result)
        if stage.command != "report" and not run.is_done():
            atomic_write_json(run.result_path, metrics if isinstance(metrics, dict) else {"result": str(metrics)})
        results[stage.name] = metrics
        log(f"[green]✔ {name}/{stage.name}[/green] in {time.time() - t0:.0f}s")
    log(f"{name}: all stages done in {time.time() - t_all:.0f}s → {root}")
    return results


def run_recipe(cfg: RunConfig, *, resume: bool = False, force: bool = False) -> dict[str, Any]:
    recipe = load_yaml(cfg.recipe)
    if "recipes" in recipe:
        return run_course(cfg, recipe, resume=resume, force=force)
    name, root, stages = plan(recipe, source=cfg.recipe, scale=cfg.scale, overrides=cfg.overrides, out=cfg.out)
    return execute(name, root, stages, only=cfg.only, resume=resume, force=force)


def run_course(cfg: RunConfig, course: dict[str, Any], *, resume: bool, force: bool) -> dict[str, Any]:
    """A recipe of recipes (`recipes: [a.yaml, b.yaml]`, paths relative to the course file): each part
    runs into `<out>/<part name>/` with the same `scale=`; overrides are `PART.STAGE.key=value`.
    Every part is planned (validated) before the first runs; then one combined report of all parts.
    """
    from lmlab.report import ReportConfig, report

    here = Path(cfg.recipe).parent
    root = Path(cfg.out or course.get("out") or Path("runs") / str(course.get("name") or Path(cfg.recipe).stem))
    parts = []
    for item in course["recipes"] or []:
        # a part is a file name, or {recipe: FILE, overrides: {STAGE: {key: value}}}; ${course} is the run root
        item = item if isinstance(item, dict) else {"recipe": item}
        path = here / str(item["recipe"])
        sub = load_yaml(path)
        name = str(sub.get("name") or path.stem)
        # ${course} now; any other ${stage} stays for the part's own plan (so its "unknown" notes are dropped)
        own = _substitute(item.get("overrides") or {}, {"course": root}, str(path), [])
        overrides = merge(own, cfg.overrides.get(name, {}))
        parts.append((name, *plan(sub, source=str(path), scale=cfg.scale, overrides=overrides, out=str(root / name))[1:]))
    unknown = set(cfg.overrides) - {name for name, _, _ in parts}
    if unknown:
        raise ConfigError(f"{cfg.recipe}: overrides for unknown part(s) {', '.join(sorted(unknown))} "
                          f"(parts: {', '.join(name for name, _, _ in parts)}); write PART.STAGE.key=value")
    # seconds per part, written after every part (a crash keeps the parts before it); a resumed
    # course adds this invocation's seconds to the earlier ones, so the file says what the course cost
    timing = root / "course.json"
    earlier = json.loads(timing.read_text()) if resume and timing.exists() else {}
    seconds = dict(earlier.get("seconds_per_part", {}))
    results, started = {}, time.time()
    for name, part_root, stages in parts:
        t0 = time.time()
        results[name] = execute(name, part_root, stages, only=cfg.only, resume=resume, force=force)
        seconds[name] = round(seconds.get(name, 0.0) + time.time() - t0, 1)
        atomic_write_json(timing, {"seconds_per_part": seconds, "seconds": round(sum(seconds.values()), 1),
                                   "invocations": int(earlier.get("invocations", 0)) + 1, "scale": cfg.scale})
    report(ReportConfig(run_dir=str(root)))
    log(f"course: {len(parts)} parts in {time.time() - started:.0f}s → {root / 'report.html'}")
    return results


def quickstart_recipe() -> Path:
    return Path(str(resources.files("lmlab.recipes") / "quickstart.yaml"))


def quickstart(cfg: QuickstartConfig, *, resume: bool = False, force: bool = False) -> dict[str, Any]:
    path = quickstart_recipe()
    recipe = load_yaml(path)
    name, root, stages = plan(recipe, source="quickstart", scale=cfg.scale, overrides=cfg.overrides, out=cfg.out)
    results = execute(name, root, stages, only=cfg.only, resume=resume, force=force)
    final_model = next((s.out for s in reversed(stages) if s.command.startswith("train ")), None)
    report = root / "report.html"
    print(f"\nquickstart finished: {root}")
    if report.exists():
        print(f"  report: {report} (and {root / 'report.md'})")
    if final_model is not None:
        print(f"  chat with the result: lmlab chat {final_model}")
    return results
