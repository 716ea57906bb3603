"""The `lmlab` command: a verb table. Parse, build the config, call one function.

Grammar (DESIGN.md, "The command-line contract")::

    lmlab VERB [SUBVERB] [POSITIONAL ...] [CONFIG.yaml] [key=value ...] [--resume] [--force] [--quiet]

Every row of `COMMANDS` names a config dataclass (its fields are the keys), the function that
runs it (imported lazily so `lmlab --help` stays fast), and which keys positional arguments fill.
The same table backs the Python API (`lmlab.api.call`).
"""
from __future__ import annotations

import importlib
import inspect
import os
import sys
from dataclasses import dataclass
from typing import Any

from lmlab.errors import LmlabError

FLAGS = ("--help", "-h", "--resume", "--force", "--quiet")


@dataclass(frozen=True)
class Command:
    name: str
    """Words that select the command, e.g. 'eval ppl'."""
    config: str
    """'module:Class' of the config dataclass."""
    run: str
    """'module:function' called as function(cfg[, resume=, force=])."""
    positional: tuple[str, ...] = ()
    """Keys filled by positional arguments in order; a name ending in '*' takes all the rest."""
    help: str = ""


COMMANDS: list[Command] = [
    Command("quickstart", "lmlab.recipes:QuickstartConfig", "lmlab.recipes:quickstart", (),
            "storyworld → tokenizer → pretrain → SFT → eval → report, minutes on a laptop CPU"),
    Command("run", "lmlab.recipes:RunConfig", "lmlab.recipes:run_recipe", ("recipe",),
            "run a YAML recipe of stages (stage.key=value overrides)"),
    Command("train pt", "lmlab.train.config:PretrainConfig", "lmlab.train.pretrain:run", (),
            "pretrain (from scratch or continued) on text"),
    Command("train sft", "lmlab.train.config:SFTConfig", "lmlab.train.sft:run", (),
            "supervised fine-tuning (full, freeze, LoRA, QLoRA)"),
    Command("train rm", "lmlab.train.config:RewardConfig", "lmlab.train.reward:run", (),
            "Bradley–Terry reward model on preference pairs"),
    Command("train dpo", "lmlab.train.config:DPOConfig", "lmlab.train.preference:run", (),
            "direct preference optimisation from an SFT model (loss=sigmoid|ipo|hinge|robust|…, +sft mixes)"),
    Command("train kto", "lmlab.train.config:KTOConfig", "lmlab.train.preference:run", (),
            "Kahneman–Tversky optimisation on unpaired good/bad examples"),
    Command("train simpo", "lmlab.train.config:SimPOConfig", "lmlab.train.preference:run", (),
            "SimPO / CPO: reference-free, length-normalised preference optimisation"),
    Command("train orpo", "lmlab.train.config:ORPOConfig", "lmlab.train.preference:run", (),
            "ORPO: SFT and odds-ratio preference optimisation in one loss, no reference"),
    Command("train grpo", "lmlab.train.config:GRPOConfig", "lmlab.train.online:run_grpo", (),
            "GRPO / Dr. GRPO / DAPO: online RL with group-relative advantages, no critic (reward=…)"),
    Command("train rloo", "lmlab.train.config:RLOOConfig", "lmlab.train.online:run_rloo", (),
            "RLOO: online REINFORCE with leave-one-out baselines"),
    Command("train ppo", "lmlab.train.config:PPOConfig", "lmlab.train.online:run_ppo", (),
            "PPO with a value head, per-token KL penalty (fixed or adaptive) and GAE"),
    Command("eval reward", "lmlab.eval.reward_analysis:RewardAnalysisConfig", "lmlab.eval.reward_analysis:run", (),
            "reward-model analysis: accuracy, Welch t-test, length bias, readability, keywords, plots"),
    Command("eval compare", "lmlab.eval.compare:CompareConfig", "lmlab.eval.compare:run", (),
            "model A vs B: generate, judge (gold or RM), win rate, paired tests, samples side by side"),
    Command("report", "lmlab.report:ReportConfig", "lmlab.report:report", ("run_dir",),
            "Markdown + self-contained HTML report, plots, CSV/XLSX of a run folder"),
    Command("ablate", "lmlab.train.ablation:AblationConfig", "lmlab.train.ablation:run", (),
            "grid of SFT runs, or plain-text fine-tuning with stage=pt (grid.epochs=[1,2] grid.data_fraction=[0.5,1]): "
            "held-out PPL (pt: per text, before/after) + a sample per cell"),
    Command("eval ppl", "lmlab.eval.perplexity:PerplexityConfig", "lmlab.eval.perplexity:run", (),
            "perplexity and bits per byte, per text or per set, one column per model (sliding windows)"),
    Command("eval gen", "lmlab.eval.text_metrics:GenMetricsConfig", "lmlab.eval.text_metrics:run", (),
            "BLEU, ROUGE-1/2/L, distinct-n, repetition, exact match of hypotheses (files or generated)"),
    Command("eval bench", "lmlab.eval.benchmarks:BenchConfig", "lmlab.eval.benchmarks:run", (),
            "MMLU, OpenBookQA, ARC, HellaSwag, BoolQ, WinoGrande (log-likelihood), GSM8K (exact match)"),
    Command("eval persona", "lmlab.eval.persona:PersonaEvalConfig", "lmlab.eval.persona:run", (),
            "how often replies stay in character: keyword hit rate per persona"),
    Command("chat", "lmlab.chat.terminal:ChatConfig", "lmlab.chat.terminal:run_chat", ("model",),
            "streaming chat in the terminal (personas, RAG, /commands); reads piped input too"),
    Command("serve", "lmlab.chat.server:ServeConfig", "lmlab.chat.server:serve", ("model",),
            "OpenAI-compatible HTTP server with dynamic batching"),
    Command("web", "lmlab.chat.web:WebConfig", "lmlab.chat.web:launch", ("model",),
            "Gradio chat page in the browser"),
    Command("index", "lmlab.chat.rag:IndexConfig", "lmlab.chat.rag:build_index", ("docs*",),
            "chunk and embed documents into a retrieval index for rag=INDEX"),
    Command("data list", "lmlab.data.commands:DataListConfig", "lmlab.data.commands:list_datasets", (),
            "named datasets: kind, splits, where each resolves now (mirror / hub / built-in)"),
    Command("data show", "lmlab.data.commands:DataShowConfig", "lmlab.data.commands:show", ("name",),
            "print the first records of a dataset as lmlab reads them"),
    Command("data stats", "lmlab.data.commands:DataStatsConfig", "lmlab.data.commands:stats", ("path",),
            "rows, fields, length distributions in words (and tokens with tokenizer=)"),
    Command("data compare", "lmlab.data.commands:DataCompareConfig", "lmlab.data.commands:compare", ("a", "b"),
            "word distributions of two corpora: Zipf plot, OOV rate, JS divergence"),
    Command("data pairs", "lmlab.eval.self_pairs:PairsConfig", "lmlab.eval.self_pairs:run", (),
            "a model's own answers ranked by a judge (gold or RM): best vs worst as preference pairs for train rm/dpo"),
    Command("tokenizer train", "lmlab.tokenizers:TokenizerTrainConfig", "lmlab.tokenizers:run_train", (),
            "train a byte-level BPE or char tokenizer; prints its compression"),
    Command("sweep", "lmlab.sweep:SweepConfig", "lmlab.sweep:run", ("recipe",),
            "Optuna search over one recipe stage's keys (space=SPACE.yaml trials=N stage=NAME)"),
    Command("generate", "lmlab.generate:GenerateConfig", "lmlab.generate:run_generate", ("model",),
            "sample continuations of a prompt from any model (temperature, top_k, top_p, beams, n)"),
    Command("export", "lmlab.models.export:ExportConfig", "lmlab.models.export:run_export", ("model",),
            "write a standalone HF model folder (LoRA merged) + tokenizer"),
    # rows added by each module: keep one line per command, grouped by verb
]


def _load(ref: str) -> Any:
    module, _, attr = ref.partition(":")
    return getattr(importlib.import_module(module), attr)


def find_command(words: list[str]) -> tuple[Command | None, int]:
    """The command whose name matches the most leading words."""
    best, used = None, 0
    for cmd in COMMANDS:
        parts = cmd.name.split()
        if words[: len(parts)] == parts and len(parts) > used:
            best, used = cmd, len(parts)
    return best, used


def usage() -> str:
    width = max(len(c.name) + sum(len(p) + 3 for p in c.positional) for c in COMMANDS) + 2
    rows = []
    for c in COMMANDS:
        sig = c.name + "".join(f" {p.rstrip('*').upper()}{'...' if p.endswith('*') else ''}" for p in c.positional)
        rows.append(f"  lmlab {sig:<{width}} {c.help}")
    return (
        "lmlab — the whole life of a small language model.\n\n"
        "usage: lmlab COMMAND [ARGS] [CONFIG.yaml] [key=value ...] [--resume] [--force] [--quiet]\n\n"
        "commands:\n" + "\n".join(rows) + "\n\n"
        "`lmlab COMMAND --help` lists a command's keys. Nested keys use dots: lora.rank=16."
    )


def group_commands(word: str) -> list[Command]:
    """The commands under a group word (`train` → train pt, train sft, …); [] if it is no group."""
    return [c for c in COMMANDS if len(c.name.split()) > 1 and c.name.split()[0] == word]


def group_usage(word: str) -> str:
    """`lmlab train --help`: the group's commands, one line each, from the table."""
    subs = group_commands(word)
    width = max(len(c.name) for c in subs) + 2
    rows = "\n".join(f"  lmlab {c.name:<{width}} {c.help}" for c in subs)
    return (f"usage: lmlab {word} {'STAGE' if word == 'train' else 'SUBCOMMAND'} [CONFIG.yaml] [key=value ...]\n\n"
            f"{rows}\n\n`lmlab {subs[0].name} --help` lists a command's keys.")


def unknown_in_group(word: str, sub: str) -> str:
    """A missing subcommand: suggest only a near-certain typo (a stage that does not exist yet,
    such as a planned `train ppo`, must not be sent to a different, merely similar-looking stage)."""
    import difflib

    names = [c.name.split()[1] for c in group_commands(word)]
    hint = difflib.get_close_matches(sub, names, n=1, cutoff=0.8)
    return (f"lmlab: '{word} {sub}' is not a command" + (f"; did you mean 'lmlab {word} {hint[0]}'?" if hint else "")
            + f"\n{word} commands: {', '.join(names)} (`lmlab {word} --help` describes them)")


def parse_args(cmd: Command, args: list[str]) -> tuple[dict[str, Any], set[str]]:
    """Split args into a key mapping (YAML file, positionals, key=value) and flags."""
    from lmlab.config import load_yaml, merge, parse_overrides

    flags = {a for a in args if a.startswith("--")}
    unknown = flags - set(FLAGS)
    if unknown:
        from lmlab.config import closest

        bad = sorted(unknown)[0]
        hint = closest(bad, FLAGS)
        raise LmlabError(
            f"unknown flag {bad}" + (f"; did you mean {hint}?" if hint else "")
            + f" (flags: {', '.join(FLAGS)}; everything else is key=value)"
        )
    rest = [a for a in args if not a.startswith("--") and a != "-h"]
    pairs = [a for a in rest if "=" in a and not a.startswith("=")]
    loose = [a for a in rest if a not in pairs]
    mapping: dict[str, Any] = {}
    # A trailing YAML file is a config for commands that take no YAML positional.
    if loose and loose[-1].endswith((".yaml", ".yml")) and not any(p.rstrip("*") in ("recipe",) for p in cmd.positional):
        mapping = load_yaml(loose.pop())
    positional: dict[str, Any] = {}
    names = list(cmd.positional)
    for i, name in enumerate(names):
        if name.endswith("*"):
            positional[name[:-1]] = loose[i:]
            loose = loose[:i]
            break
        if i < len(loose):
            positional[name] = loose[i]
    if len(loose) > len([n for n in names if not n.endswith("*")]):
        extra = loose[len(names):]
        raise LmlabError(f"lmlab {cmd.name}: unexpected argument(s) {' '.join(extra)}; options are key=value")
    mapping = merge(mapping, positional)
    mapping = merge(mapping, parse_overrides(pairs))
    return mapping, flags


def call(cmd: Command, mapping: dict[str, Any], *, resume: bool = False, force: bool = False, where: str | None = None) -> Any:
    """Validate `mapping` against the command's config and run it."""
    from lmlab.config import build, route_extra_keys

    klass = _load(cmd.config)
    cfg = build(klass, route_extra_keys(klass, mapping), where=where or f"lmlab {cmd.name}")
    if getattr(cfg, "launcher", None):
        from lmlab.devices import world_size

        if world_size() == 1:  # not yet launched: run this very command under `accelerate launch`
            return _launch(cmd, cfg, resume=resume, force=force)
    fn = _load(cmd.run)
    params = inspect.signature(fn).parameters
    kwargs = {k: v for k, v in (("resume", resume), ("force", force)) if k in params}
    return fn(cfg, **kwargs)


def _launch(cmd: Command, cfg: Any, *, resume: bool, force: bool) -> Any:
    """`launcher=…`: the same command on several processes; returns the run's result like a plain call."""
    from lmlab.config import to_dict
    from lmlab.launch import relaunch
    from lmlab.runs import RunDir, RunResult, default_out

    config = to_dict(cfg)
    config["out"] = config.get("out") or default_out(cmd.name.split()[-1], config["model"])
    flags = [f for f, on in (("--resume", resume), ("--force", force)) if on]
    code = relaunch(cmd.name.split(), config, flags)
    run = RunDir(config["out"])
    if code != 0 or not run.is_done():
        raise LmlabError(f"lmlab {cmd.name} under launcher={cfg.launcher} failed (exit code {code}); its processes' "
                         "messages are above")
    return RunResult(run.path, run.result())


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    words = [a for a in argv if not a.startswith("-")]
    if not argv or argv[0] in ("--help", "-h", "help"):
        print(usage())
        return 0
    if "--quiet" in argv:
        os.environ["LMLAB_QUIET"] = "1"
    cmd, used = find_command(words)
    if cmd is None and words and group_commands(words[0]):
        if len(words) == 1:  # `lmlab train` / `lmlab train --help`: the group's commands
            help_asked = "--help" in argv or "-h" in argv
            print(group_usage(words[0]), file=sys.stdout if help_asked else sys.stderr)
            return 0 if help_asked else 2
        print(unknown_in_group(words[0], words[1]), file=sys.stderr)
        return 2
    if cmd is None:
        from lmlab.config import closest

        names = sorted({c.name for c in COMMANDS} | {c.name.split()[0] for c in COMMANDS})
        guess = closest(" ".join(words[:2]), names) or closest(words[0] if words else "", names)
        print(f"lmlab: unknown command '{' '.join(words[:2])}'" + (f"; did you mean 'lmlab {guess}'?" if guess else ""), file=sys.stderr)
        print(usage(), file=sys.stderr)
        return 2
    # drop the command words (first occurrences) from argv, keep the rest in order
    rest = list(argv)
    for w in cmd.name.split()[:used]:
        rest.remove(w)
    if "--help" in rest or "-h" in rest:
        from lmlab.config import help_text

        klass = _load(cmd.config)
        pos = " ".join(p.rstrip("*").upper() + ("..." if p.endswith("*") else "") for p in cmd.positional)
        print(f"usage: lmlab {cmd.name} {pos} [key=value ...]\n\n{cmd.help}\n\n{(klass.__doc__ or '').strip()}\n\nkeys:\n{help_text(klass)}")
        return 0
    try:
        mapping, flags = parse_args(cmd, rest)
        call(cmd, mapping, resume="--resume" in flags, force="--force" in flags)
    except LmlabError as exc:
        prefix = f"lmlab {cmd.name}: "
        message = "\n".join(line.removeprefix(prefix) for line in str(exc).splitlines())  # where= already says it
        print(f"{prefix}error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"\nlmlab {cmd.name}: interrupted; finished checkpoints are kept (rerun with --resume)", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
