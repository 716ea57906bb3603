"""Config machinery: overrides, type coercion, every error at once with the closest key."""
from __future__ import annotations

import pytest

from lmlab.config import build, load_yaml, parse_overrides
from lmlab.errors import ConfigError
from lmlab.train.config import PretrainConfig, SFTConfig


def test_overrides_nest_and_type():
    got = parse_overrides(["lora.rank=8", "lr=1e-3", "packing=true", "model=a,b", "samples=[x, y]"])
    assert got == {"lora": {"rank": 8}, "lr": "1e-3", "packing": True, "model": "a,b", "samples": ["x", "y"]}
    cfg = build(SFTConfig, got)
    assert cfg.lora.rank == 8 and cfg.lr == pytest.approx(1e-3) and cfg.packing is True
    assert cfg.lora.alpha == 32.0  # untouched nested defaults survive


def test_every_problem_reported_with_closest_key():
    with pytest.raises(ConfigError) as err:
        build(SFTConfig, parse_overrides(["lora.rnak=8", "lrr=1", "tuning=lorra", "batch_size=x"]), where="cli")
    msg = str(err.value)
    assert "unknown key 'lora.rnak'; did you mean 'lora.rank'?" in msg
    assert "unknown key 'lrr'; did you mean 'lr'?" in msg
    assert "did you mean 'lora'?" in msg
    assert "'batch_size' must be an integer, got 'x'" in msg
    assert msg.count("\n") == 3  # four problems, one line each


def test_validate_hook_runs():
    with pytest.raises(ConfigError, match="grad_accum must be >= 1"):
        build(PretrainConfig, {"grad_accum": 0})


def test_bad_override_syntax():
    with pytest.raises(ConfigError, match="expected key=value"):
        parse_overrides(["max_steps"])


def test_yaml_error_names_line(tmp_path):
    p = tmp_path / "r.yaml"
    p.write_text("a: 1\nb: [1, 2\nc: 3\n")
    with pytest.raises(ConfigError, match=r"r\.yaml:\d+: invalid YAML"):
        load_yaml(p)


def test_inherited_decoding_keys_keep_defaults_checks_and_refusals():
    """Command configs extend DecodingConfig: their own defaults and help, the parent's checks,
    and keys pinned with `fixed` are refused and left out of --help."""
    from lmlab.chat.terminal import ChatConfig
    from lmlab.config import help_text
    from lmlab.decoding import DecodingConfig, decoding_of
    from lmlab.eval.persona import PersonaEvalConfig
    from lmlab.eval.text_metrics import GenMetricsConfig

    cfg = build(ChatConfig, {"model": "m", "temperature": 0.2})
    assert decoding_of(cfg, top_k=5) == DecodingConfig(max_new_tokens=128, temperature=0.2, top_k=5, top_p=0.9,
                                                       repetition_penalty=1.1)
    with pytest.raises(ConfigError, match="unknown key 'beams'"):
        build(ChatConfig, {"model": "m", "beams": 2})
    with pytest.raises(ConfigError, match=r"top_p must be in \(0, 1\]"):
        build(ChatConfig, {"model": "m", "top_p": 2})
    assert "beams" not in help_text(ChatConfig) and "longest reply in tokens [default: 128]" in help_text(ChatConfig)
    with pytest.raises(ConfigError, match="unknown key 'stop'"):
        build(PersonaEvalConfig, {"model": "m", "stop": "x"})
    with pytest.raises(ConfigError, match="temperature must be >= 0"):
        build(PersonaEvalConfig, {"model": "m", "temperature": -1})
    gen = build(GenMetricsConfig, {"model": "m", "prompts": "p.txt", "beams": 3})
    assert decoding_of(gen) == DecodingConfig(max_new_tokens=128, temperature=0.0, beams=3, seed=0)
    with pytest.raises(ConfigError, match="unknown key 'n'"):
        build(GenMetricsConfig, {"model": "m", "prompts": "p.txt", "n": 2})
