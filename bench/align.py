"""Preference training throughput and peak memory: lmlab DPO / reward model vs TRL's DPOTrainer / RewardTrainer.

    .venv/bin/python bench/align.py [steps=20 warmup=3 batch_size=8 max_length=256 n=400 hidden=128 layers=2 rounds=1]

Same model (a Qwen2 built locally and saved once, loaded by every arm from that folder), same
tokenizer, same data (storyworld/prefs rendered through the ChatML template once; lmlab gets the
rendered rows, TRL the same prompt and reply texts, which it tokenizes itself), same batch size
(B pairs = 2B rows per forward in both), max length, steps, learning rate, AdamW, fp32 on CPU.

Arms (each in its own subprocess so its peak memory is its own):
- `lmlab_dpo`: `train dpo` parts with `precompute_ref=true` (the reference pass runs first and is
  not timed; the reference model is then not in memory); `trl_dpo`: DPOTrainer with
  `precompute_ref_log_probs=True` (the same: precomputed before training, no reference model).
- `lmlab_dpo_live` / `trl_dpo_live`: the reference model in memory, one extra forward per step.
- `lmlab_sft`: the same 2B rows per step through `lm_step` (the memory baseline of the target
  "DPO with precomputed reference ≤ 1.1 × SFT peak memory").
- `lmlab_rm` / `trl_rm`: Bradley–Terry reward model (`train rm` parts vs RewardTrainer).
- `lmlab_dpo_grouped` / `lmlab_rm_grouped`: the same with `group_by_length=true` (pairs of similar
  length batched together, as a user can choose): same data and batch size, other batch
  compositions, less padding. Reported beside, never instead of, the same-batches ratios.

Timing is the shared forward pre-hook `Meter` of bench/sft.py (wall and CPU time of every training
forward, `warmup` steps excluded); pairs/s = pairs per step × timed steps / span. Prints one JSON
object; headlines `pairs_per_s_vs_trl` (lmlab_dpo vs trl_dpo), `rm_pairs_per_s_vs_trl`,
`peak_mem_vs_trl`, `dpo_peak_mem_vs_sft`.
"""
from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

DEFAULTS: dict[str, Any] = {"steps": 20, "warmup": 3, "batch_size": 8, "max_length": 256, "n": 400, "hidden": 128,
                            "layers": 2, "vocab_size": 2048, "lr": 1e-5, "beta": 0.1, "seed": 0}
ARMS = ("lmlab_dpo", "trl_dpo", "lmlab_dpo_live", "trl_dpo_live", "lmlab_sft", "lmlab_rm", "trl_rm",
        "lmlab_dpo_grouped", "lmlab_rm_grouped")


# -- shared setup (parent) -------------------------------------------------------------------------
def prepare(opts: dict[str, Any], root: Path) -> None:
    """Tokenizer + model folder, and the pairs as prompt/reply texts (data.jsonl)."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from lmlab.data.chat import render_prompt
    from lmlab.data.loaders import load_records, load_texts
    from lmlab.tokenizers import train_tokenizer

    records = load_records("storyworld/prefs", "preference", limit=opts["n"])
    tok = train_tokenizer(load_texts("storyworld/pretrain", limit=2000), vocab_size=opts["vocab_size"], out=root / "model")
    h = opts["hidden"]
    cfg = Qwen2Config(vocab_size=len(tok), hidden_size=h, intermediate_size=3 * h, num_hidden_layers=opts["layers"],
                      num_attention_heads=max(1, h // 64), num_key_value_heads=max(1, h // 128),
                      max_position_embeddings=opts["max_length"] * 8, tie_word_embeddings=True,
                      bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    torch.manual_seed(opts["seed"])
    Qwen2ForCausalLM(cfg).save_pretrained(root / "model")
    rows = [{"prompt": render_prompt(tok, r.prompt), "chosen": r.chosen, "rejected": r.rejected,
             "messages": [{"role": m.role, "content": m.content} for m in r.prompt]} for r in records]
    (root / "data.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


# -- arms (child) ----------------------------------------------------------------------------------
def _records(root: Path) -> list[Any]:
    from lmlab.data.formats import Message, PreferenceRecord

    rows = [json.loads(x) for x in (root / "data.jsonl").read_text().splitlines()]
    return [PreferenceRecord([Message(**m) for m in r["messages"]], r["chosen"], r["rejected"]) for r in rows]


def _policy(root: Path) -> tuple[Any, Any]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(root / "model")
    model = AutoModelForCausalLM.from_pretrained(root / "model", attn_implementation="sdpa")
    model.config.use_cache = False
    return model, tok


def _cfg(opts: dict[str, Any], klass: Any, **kw: Any) -> Any:
    """A stage config with the shared loop settings (one step more than timed: the Meter needs its end stamp)."""
    if "judge_prompts" in klass.__dataclass_fields__:
        kw["judge_prompts"] = 0
    return klass(model="bench", max_steps=opts["steps"] + opts["warmup"] + 1, batch_size=opts["batch_size"],
                 max_length=opts["max_length"], lr=opts["lr"], warmup_steps=0, log_every=10**9, keep_best=False,
                 save_every=0, weight_decay=0.0, clip_grad=1.0, device="auto", **kw)


def run_lmlab_dpo(root: Path, opts: dict[str, Any], precompute: bool, sft: bool = False, grouped: bool = False
                  ) -> dict[str, Any]:
    """The `train dpo` pipeline minus loading by name: pairs → (reference pass) → Trainer(dpo_step)."""
    import torch
    from sft import Meter

    from lmlab.data.alignment_batches import EncodeOptions, PolicyPairBatches, encode_policy_pairs
    from lmlab.data.collate import PaddedBatches
    from lmlab.runs import RunDir
    from lmlab.train.companions import freeze
    from lmlab.train.config import DPOConfig, SFTConfig
    from lmlab.train.preference_steps import dpo_step, reference_logps
    from lmlab.train.refcache import precompute as precompute_ref
    from lmlab.train.steps import StepContext, lm_step
    from lmlab.train.trainer import Trainer

    model, tok = _policy(root)
    pairs, _ = encode_policy_pairs(tok, _records(root), EncodeOptions(max_length=opts["max_length"]))
    out = Path(tempfile.mkdtemp(prefix="lmlab-bench-align-"))
    if sft:  # the same 2B rows per step, as token likelihood
        rows = [r for p in pairs for r in (p.chosen, p.rejected)]
        meter = Meter(model, tok.pad_token_id)
        src = PaddedBatches(rows, 2 * opts["batch_size"], tok.pad_token_id, seed=opts["seed"])
        Trainer(model, lm_step, src, _cfg(opts, SFTConfig), RunDir(out / "run")).fit()
        return meter.report(opts["warmup"])
    src = PolicyPairBatches(pairs, opts["batch_size"], tok.pad_token_id, seed=opts["seed"], group_by_length=grouped)
    ctx = StepContext(options={"beta": opts["beta"], "kinds": ["sigmoid"]})
    ref = freeze(_policy(root)[0])
    if precompute:
        ctx.ref_model = ref
        with torch.no_grad():
            src.ref = precompute_ref(src, lambda b: reference_logps(ctx, b), out / "ref_logps.pt", "bench")
        ctx.ref_model = ref = None
    meter = Meter(model, tok.pad_token_id)
    cfg = _cfg(opts, DPOConfig, beta=opts["beta"], precompute_ref=precompute)
    Trainer(model, dpo_step, src, cfg, RunDir(out / "run"), ctx=ctx, companions={"ref": ref} if ref is not None else None).fit()
    return meter.report(opts["warmup"])


def run_trl_dpo(root: Path, opts: dict[str, Any], precompute: bool) -> dict[str, Any]:
    import datasets
    from sft import Meter
    from trl import DPOConfig, DPOTrainer

    model, tok = _policy(root)
    rows = [json.loads(x) for x in (root / "data.jsonl").read_text().splitlines()]
    # the reply ends its turn exactly as lmlab renders it; TRL appends eos itself
    ds = datasets.Dataset.from_list([{"prompt": r["prompt"], "chosen": r["chosen"] + "<|im_end|>\n",
                                      "rejected": r["rejected"] + "<|im_end|>\n"} for r in rows])
    ref = None if precompute else _policy(root)[0]
    args = DPOConfig(output_dir=tempfile.mkdtemp(prefix="trl-bench-align-"), max_steps=opts["steps"] + opts["warmup"] + 1,
                     per_device_train_batch_size=opts["batch_size"], max_length=opts["max_length"],
                     learning_rate=opts["lr"], lr_scheduler_type="cosine", warmup_steps=0, weight_decay=0.0,
                     max_grad_norm=1.0, logging_steps=10**9, save_strategy="no", report_to=[], beta=opts["beta"],
                     precompute_ref_log_probs=precompute, seed=opts["seed"], dataloader_num_workers=0, bf16=False,
                     use_cpu=True, disable_tqdm=True, gradient_checkpointing=False)
    trainer = DPOTrainer(model=model, ref_model=ref, args=args, train_dataset=ds, processing_class=tok)
    meter = Meter(model, tok.pad_token_id)  # after TRL's reference pass, as for lmlab
    trainer.train()
    return meter.report(opts["warmup"])


def run_lmlab_rm(root: Path, opts: dict[str, Any], grouped: bool = False) -> dict[str, Any]:
    from sft import Meter
    from transformers import AutoModelForSequenceClassification

    from lmlab.data.preference import PairBatches, encode_pairs
    from lmlab.runs import RunDir
    from lmlab.train.config import RewardConfig
    from lmlab.train.steps import reward_step
    from lmlab.train.trainer import Trainer

    _, tok = _policy(root)
    model = AutoModelForSequenceClassification.from_pretrained(root / "model", num_labels=1, attn_implementation="sdpa")
    model.config.pad_token_id = tok.pad_token_id
    pairs = encode_pairs(tok, _records(root), opts["max_length"], "auto", "bench")
    meter = Meter(model, tok.pad_token_id)
    src = PairBatches(pairs, opts["batch_size"], tok.pad_token_id, seed=opts["seed"], group_by_length=grouped)
    out = Path(tempfile.mkdtemp(prefix="lmlab-bench-rm-"))
    Trainer(model, reward_step, src, _cfg(opts, RewardConfig), RunDir(out / "run")).fit()
    return meter.report(opts["warmup"])


def run_trl_rm(root: Path, opts: dict[str, Any]) -> dict[str, Any]:
    import datasets
    from sft import Meter
    from transformers import AutoModelForSequenceClassification
    from trl import RewardConfig, RewardTrainer

    _, tok = _policy(root)
    model = AutoModelForSequenceClassification.from_pretrained(root / "model", num_labels=1, attn_implementation="sdpa")
    model.config.pad_token_id = tok.pad_token_id
    rows = [json.loads(x) for x in (root / "data.jsonl").read_text().splitlines()]
    ds = datasets.Dataset.from_list([{"chosen": r["prompt"] + r["chosen"] + "<|im_end|>\n",
                                      "rejected": r["prompt"] + r["rejected"] + "<|im_end|>\n"} for r in rows])
    args = RewardConfig(output_dir=tempfile.mkdtemp(prefix="trl-bench-rm-"), max_steps=opts["steps"] + opts["warmup"] + 1,
                        per_device_train_batch_size=opts["batch_size"], max_length=opts["max_length"],
                        learning_rate=opts["lr"], lr_scheduler_type="cosine", warmup_steps=0, weight_decay=0.0,
                        max_grad_norm=1.0, logging_steps=10**9, save_strategy="no", report_to=[], seed=opts["seed"],
                        dataloader_num_workers=0, bf16=False, use_cpu=True, disable_tqdm=True, gradient_checkpointing=False)
    meter = Meter(model, tok.pad_token_id)
    RewardTrainer(model=model, args=args, train_dataset=ds, processing_class=tok).train()
    return meter.report(opts["warmup"])


def child(arm: str, root: Path, opts: dict[str, Any]) -> None:
    os.environ.setdefault("LMLAB_QUIET", "1")
    runs = {"lmlab_dpo": lambda: run_lmlab_dpo(root, opts, True), "lmlab_dpo_live": lambda: run_lmlab_dpo(root, opts, False),
            "lmlab_sft": lambda: run_lmlab_dpo(root, opts, False, sft=True),
            "trl_dpo": lambda: run_trl_dpo(root, opts, True), "trl_dpo_live": lambda: run_trl_dpo(root, opts, False),
            "lmlab_rm": lambda: run_lmlab_rm(root, opts), "trl_rm": lambda: run_trl_rm(root, opts),
            "lmlab_dpo_grouped": lambda: run_lmlab_dpo(root, opts, True, grouped=True),
            "lmlab_rm_grouped": lambda: run_lmlab_rm(root, opts, grouped=True)}
    result = runs[arm]()
    result["pairs_per_s"] = opts["batch_size"] / result["s_per_step"]
    print("RESULT " + json.dumps(result))


# -- driver ----------------------------------------------------------------------------------------
def main(argv: list[str]) -> None:
    from lmlab.config import parse_overrides

    if argv and argv[0] == "--child":
        sys.path.insert(0, str(Path(__file__).parent))
        child(argv[1], Path(argv[2]), json.loads(argv[3]))
        return
    opts = {**DEFAULTS, **parse_overrides(argv)}
    arms = str(opts.pop("arms", ",".join(ARMS))).split(",")
    rounds = int(opts.pop("rounds", 1))
    root = Path(tempfile.mkdtemp(prefix="bench-align-"))
    prepare(opts, root)
    runs: dict[str, list[dict[str, Any]]] = {arm: [] for arm in arms}
    for r in range(rounds):
        for arm in (arms if r % 2 == 0 else arms[::-1]):  # alternate so load drift hits every arm alike
            proc = subprocess.run([sys.executable, __file__, "--child", arm, str(root), json.dumps(opts)],
                                  capture_output=True, text=True, env={**os.environ, "LMLAB_QUIET": "1"})
            line = next((x for x in proc.stdout.splitlines() if x.startswith("RESULT ")), None)
            if proc.returncode != 0 or line is None:
                print(proc.stderr[-3000:], file=sys.stderr)
                raise SystemExit(f"arm {arm} failed (exit {proc.returncode})")
            runs[arm].append(json.loads(line[len("RESULT "):]))
            print(f"round {r}: {arm}: {runs[arm][-1]['pairs_per_s']:.2f} pairs/s, peak RSS {runs[arm][-1]['peak_rss_mb']:.0f} MB",
                  file=sys.stderr)
    res = {arm: {k: statistics.median(x[k] for x in rs) for k in rs[0]} for arm, rs in runs.items()}
    mem = "peak_cuda_mb" if "peak_cuda_mb" in res[arms[0]] else "peak_rss_mb"
    summary: dict[str, Any] = {"config": opts, "rounds": rounds, "memory_metric": mem, "arms": res}

    def ratio(a: str, b: str, key: str, name: str) -> None:
        if a in res and b in res:
            summary[name] = res[a][key] / res[b][key]

    ratio("lmlab_dpo", "trl_dpo", "pairs_per_s", "pairs_per_s_vs_trl")
    ratio("lmlab_dpo", "trl_dpo", "tokens_per_cpu_s", "tokens_per_cpu_s_vs_trl")
    ratio("lmlab_dpo", "trl_dpo", mem, "peak_mem_vs_trl")
    ratio("lmlab_dpo_live", "trl_dpo_live", "pairs_per_s", "pairs_per_s_vs_trl_live")
    ratio("lmlab_dpo_live", "trl_dpo_live", mem, "peak_mem_vs_trl_live")
    ratio("lmlab_dpo", "lmlab_sft", mem, "dpo_peak_mem_vs_sft")
    ratio("lmlab_dpo", "lmlab_sft", "peak_rss_above_model_mb", "dpo_peak_mem_above_model_vs_sft")
    ratio("lmlab_rm", "trl_rm", "pairs_per_s", "rm_pairs_per_s_vs_trl")
    ratio("lmlab_rm", "trl_rm", mem, "rm_peak_mem_vs_trl")
    ratio("lmlab_dpo_grouped", "trl_dpo", "pairs_per_s", "grouped_pairs_per_s_vs_trl")
    ratio("lmlab_rm_grouped", "trl_rm", "pairs_per_s", "grouped_rm_pairs_per_s_vs_trl")
    print(json.dumps(summary))


if __name__ == "__main__":
    main(sys.argv[1:])
