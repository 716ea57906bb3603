"""The Python API survives any number of calls and re-imports (notebook cells run again)."""
from __future__ import annotations

import importlib
import subprocess
import sys


def test_api_names_stay_functions_after_submodule_imports():
    import lmlab
    import lmlab.generate
    import lmlab.train.sft
    from lmlab import generate, train

    assert callable(train) and train is lmlab.api.train
    assert callable(generate) and generate is lmlab.api.generate
    importlib.reload(importlib.import_module("lmlab.train.trainer"))
    assert lmlab.train is lmlab.api.train


def test_train_twice_in_one_process_like_a_rerun_cell(tmp_path, tiny_qwen2_dir):
    """Two `from lmlab import train; train(...)` cells: the second used to fail with
    "'module' object is not callable" because the first imported lmlab.train.sft."""
    data = tmp_path / "chat.jsonl"
    row = '{{"messages": [{{"role": "user", "content": "hi {}"}}, {{"role": "assistant", "content": "the cat ran"}}]}}\n'
    data.write_text("".join(row.format(i) for i in range(16)))
    code = f"""
import os
os.environ["LMLAB_QUIET"] = "1"
for i in range(2):
    from lmlab import train
    res = train("sft", model={str(tiny_qwen2_dir)!r}, data={str(data)!r}, max_steps=1, batch_size=4,
                out={str(tmp_path)!r} + f"/run{{i}}", device="cpu")
    print("steps", res.metrics["steps"])
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.count("steps 1") == 2
