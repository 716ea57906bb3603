"""The benchmark plumbing: medians over rounds, Meter arithmetic, ratio naming, the plain arm's
collation (it must train on exactly lmlab's tokens and targets) and run_all's table rows."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

import common
import run_all
import sft

from lmlab.data.chat import EncodedExample
from lmlab.data.collate import pack_collate, pad_collate


def test_medians_take_the_middle_round_and_keep_the_spread():
    rounds = [{"tokens_per_s": 30.0, "steps": 4, "name": "a", "inner": {"x": 5.0}},
              {"tokens_per_s": 10.0, "steps": 4, "name": "a", "inner": {"x": 1.0}},
              {"tokens_per_s": 20.0, "steps": 4, "name": "a", "inner": {"x": 3.0}}]
    out = common.medians(rounds, spread=("tokens_per_s", "x"))
    assert out["tokens_per_s"] == 20.0 and out["tokens_per_s_min"] == 10.0 and out["tokens_per_s_max"] == 30.0
    assert out["inner"]["x"] == 3.0 and out["inner"]["x_min"] == 1.0 and out["inner"]["x_max"] == 5.0
    assert out["rounds"] == 3 and "name" not in out  # strings are not averaged


def test_meter_report_times_the_steps_after_warmup():
    meter = common.Meter(torch.nn.Linear(2, 2), pad_id=0)
    # forwards at t = 0, 1, 3, 4, 6 s (CPU 0, .5, 1.5, 2, 3 s) with 10, 20, 30, 40, 50 real tokens; warmup 1:
    # timed steps 1..3 (t 1 → 6 s = 5 s, 3 steps), tokens of forwards 1..3 = 20 + 30 + 40 = 90
    meter.stamps = [(0.0, 0.0, 10), (1.0, 0.5, 20), (3.0, 1.5, 30), (4.0, 2.0, 40), (6.0, 3.0, 50)]
    rep = meter.report(warmup=1)
    assert rep["tokens_per_s"] == pytest.approx(90 / 5)
    assert rep["tokens_per_cpu_s"] == pytest.approx(90 / 2.5)
    assert rep["steps_timed"] == 3 and rep["s_per_step"] == pytest.approx(5 / 3)
    assert rep["median_step_s"] == pytest.approx(2.0)  # steps of 2, 1, 2 s
    assert rep["first_step_s"] == pytest.approx(1.0)
    assert all(isinstance(v, (int, float)) for v in rep.values())  # bench scripts take medians of every key


def test_meter_counts_real_tokens_only():
    model = torch.nn.Embedding(10, 2)
    model.train()
    meter = common.Meter(model, pad_id=0)
    model(torch.tensor([[5, 6, 0, 0], [7, 0, 0, 0]]))
    with torch.no_grad():
        model.eval()
        model(torch.tensor([[1, 2, 3, 4]]))  # evaluation forwards are not counted
    meter._stop = True
    assert [n for _, _, n in meter.stamps] == [3]


def arms(**tps: tuple[float, float, float]) -> dict[str, dict[str, float]]:
    return {arm: {"tokens_per_s": a, "tokens_per_cpu_s": b, "peak_rss_mb": c} for arm, (a, b, c) in tps.items()}


def test_sft_ratios_compare_like_with_like_and_best_with_best():
    res = arms(lmlab_padded=(300.0, 600.0, 100.0), lmlab_packed=(240.0, 500.0, 90.0), plain_padded=(320.0, 640.0, 110.0),
               trl_padded=(150.0, 400.0, 200.0), trl_packed=(200.0, 300.0, 250.0))
    out = sft.ratios(res, "peak_rss_mb")
    assert out["tokens_per_s_vs_plain"] == pytest.approx(300 / 320)
    assert out["tokens_per_cpu_s_vs_plain"] == pytest.approx(600 / 640)
    # best lmlab arm (padded, 300) vs best TRL arm (packed, 200), memory of those two arms
    assert out["tokens_per_s_vs_trl"] == pytest.approx(1.5) and out["peak_mem_vs_trl"] == pytest.approx(100 / 250)
    assert out["tokens_per_s_vs_trl_padded"] == pytest.approx(2.0)
    assert out["plain_tokens_per_s_vs_trl"] == pytest.approx(320 / 200)
    assert "tokens_per_s_packed_vs_plain_packed" not in out  # no plain_packed arm ran


def examples() -> list[EncodedExample]:
    return [EncodedExample([5, 6, 7], [-100, 6, 7]), EncodedExample([8, 9], [-100, 9]),
            EncodedExample([3, 4, 5, 6, 7], [-100, -100, 5, 6, 7])]


def tensors(exs: list[EncodedExample]) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [(torch.tensor(e.input_ids), torch.tensor(e.labels)) for e in exs]


@pytest.mark.parametrize("multiple", [0, 4])
def test_plain_padded_batch_equals_lmlab_pad_collate(multiple):
    exs = examples()
    plain = sft.plain_padded_batch(tensors(exs), [2, 0, 1], pad=1, multiple=multiple)
    ours = pad_collate([exs[2], exs[0], exs[1]], pad_id=1, pad_to_multiple_of=multiple or None)
    assert plain["input_ids"].shape == (3, 8 if multiple else 5)
    for k in ("input_ids", "attention_mask", "labels"):
        assert torch.equal(plain[k], ours[k]), k


def test_plain_packed_batch_has_lmlab_tokens_targets_and_positions():
    exs = examples()
    plain = sft.plain_packed_batch(tensors(exs), [[0, 1], [2]], pad=1)
    ours = pack_collate([[exs[0], exs[1]], [exs[2]]], pad_id=1)
    assert torch.equal(plain["input_ids"], ours["input_ids"])
    assert torch.equal(plain["labels"], ours["labels"])
    assert plain["labels"][0].tolist() == [-100, 6, 7, -100, 9]  # each example's first token is no target
    real = ours["labels"] != -100  # positions may differ only on the pad tail, which has no targets
    assert torch.equal(plain["position_ids"][real], ours["position_ids"][real])
    assert plain["position_ids"][0].tolist() == [0, 1, 2, 0, 1]


def test_run_all_sft_rows_put_each_arm_beside_its_plain_and_trl_twin():
    out = {"arms": {arm: {**r, "tokens_per_s_min": r["tokens_per_s"], "tokens_per_s_max": r["tokens_per_s"], "mfu": 0.1,
                          "first_step_s": 1.0}
                    for arm, r in arms(lmlab_padded=(300.0, 600.0, 100.0), plain_padded=(200.0, 640.0, 110.0),
                                       trl_padded=(150.0, 400.0, 200.0)).items()},
           "tokens_per_s_vs_trl": 2.0, "peak_mem_vs_trl": 0.5}
    rows = {r["arm"]: r for r in run_all.rows_sft(out)}
    assert rows["lmlab_padded"]["vs plain"] == 1.5 and rows["lmlab_padded"]["vs TRL"] == 2.0
    assert rows["plain_padded"]["vs TRL"] == 1.33  # 200 / 150, shown to 3 significant digits
    assert rows["best lmlab / best TRL"]["median"] == 2.0
