"""RNN / LSTM / GRU checkpoints load in plain transformers with trust_remote_code=True, lmlab absent.

The model code is saved beside the weights and config.json maps the Auto classes to it (the hub's
custom-code convention), so a student can share a checkpoint with someone who has no lmlab.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

LOADER = """
import sys
sys.modules["lmlab"] = None  # `import lmlab` now fails: only the files beside the weights may be used
import json, torch
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification
folder, kind, ids = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
auto = AutoModelForCausalLM if kind == "lm" else AutoModelForSequenceClassification
model = auto.from_pretrained(folder, trust_remote_code=True).eval()
assert not any(m.startswith("lmlab") for m in sys.modules if sys.modules[m] is not None)
with torch.no_grad():
    out = model(input_ids=torch.tensor(ids)).logits
print(json.dumps({"cls": type(model).__module__ + "." + type(model).__name__, "logits": out.tolist()}))
"""


def load_elsewhere(folder, kind: str, ids: list[list[int]], tmp_path) -> dict:
    env = {**os.environ, "HF_MODULES_CACHE": str(tmp_path / "hf_modules"), "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-c", LOADER, str(folder), kind, json.dumps(ids)], capture_output=True,
                          text=True, env=env, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("arch", ["rnn:tiny", "lstm:tiny", "gru:tiny"])
def test_recurrent_checkpoint_loads_without_lmlab(arch, tmp_path):
    from lmlab.models import build_model

    torch.manual_seed(0)
    model = build_model(arch, 50, bos_token_id=1, eos_token_id=2, pad_token_id=0).eval()
    model.save_pretrained(tmp_path / "ckpt")
    config = json.loads((tmp_path / "ckpt" / "config.json").read_text())
    assert set(config["auto_map"]) >= {"AutoConfig", "AutoModelForCausalLM"}
    ids = [[1, 5, 9, 13, 7, 3], [1, 4, 4, 8, 20, 11]]
    with torch.no_grad():
        want = model(input_ids=torch.tensor(ids)).logits
    got = load_elsewhere(tmp_path / "ckpt", "lm", ids, tmp_path)
    assert got["cls"].startswith("transformers_modules.")  # the saved code, not an installed package
    torch.testing.assert_close(torch.tensor(got["logits"]), want, rtol=1e-5, atol=1e-5)


def test_recurrent_reward_model_loads_without_lmlab(tmp_path):
    from transformers import AutoModelForSequenceClassification

    from lmlab.models import build_model

    torch.manual_seed(0)
    build_model("lstm:tiny", 50, bos_token_id=1, eos_token_id=2, pad_token_id=0).save_pretrained(tmp_path / "lm")
    rm = AutoModelForSequenceClassification.from_pretrained(tmp_path / "lm", num_labels=1).eval()
    rm.save_pretrained(tmp_path / "rm")
    ids = [[1, 5, 9, 13]]
    with torch.no_grad():
        want = rm(input_ids=torch.tensor(ids)).logits
    got = load_elsewhere(tmp_path / "rm", "cls", ids, tmp_path)
    torch.testing.assert_close(torch.tensor(got["logits"]), want, rtol=1e-5, atol=1e-5)
