"""The LM head on the reply window only (train/forward.py): same log-probs, same losses, fewer logits."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from lmlab.train.forward import accepts, align_labels, reply_window, window_kwargs
from lmlab.train.objectives import IGNORE_INDEX, sequence_logps

X = IGNORE_INDEX


def test_reply_window_by_hand():
    # row 0: labels from position 3; row 1: from position 2 -> the earliest label is at 2, its logit at 1:
    # the window is positions 1..5, k = 5
    labels = torch.tensor([[X, X, X, 7, 8, X], [X, X, 5, 6, X, X]])
    assert reply_window(labels) == 5
    assert align_labels(labels, torch.zeros(2, 5, 3)).tolist() == labels[:, 1:].tolist()
    # a label at position 1 needs the logit at 0: the whole row
    assert reply_window(torch.tensor([[X, 4, 5]])) == 3
    assert reply_window(torch.full((2, 4), X)) == 4  # nothing counted: nothing to cut


def _batch(vocab: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Right-padded rows whose prompts (5..9 tokens) and replies differ in length."""
    g = torch.Generator().manual_seed(seed)
    T = 24
    ids = torch.randint(3, vocab, (4, T), generator=g)
    mask = torch.ones(4, T, dtype=torch.long)
    labels = torch.full((4, T), X)
    for i, (prompt, total) in enumerate([(5, 20), (9, 24), (7, 15), (6, 22)]):
        labels[i, prompt:total] = ids[i, prompt:total]
        mask[i, total:] = 0
        ids[i, total:] = 0
    return ids, mask, labels


@pytest.mark.parametrize("arch", ["qwen2", "lstm", "lora"])
def test_windowed_logps_equal_the_full_forward(tiny_qwen2_dir, arch):
    from transformers import AutoModelForCausalLM

    import lmlab.models as zoo

    torch.manual_seed(0)
    if arch == "lstm":
        model = zoo.build_model("lstm:tiny", 40, overrides={"hidden_size": 32, "num_layers": 2},
                                bos_token_id=1, eos_token_id=2, pad_token_id=0)
    else:
        model = AutoModelForCausalLM.from_pretrained(tiny_qwen2_dir)
        if arch == "lora":
            from peft import LoraConfig, get_peft_model

            model = get_peft_model(model, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], lora_dropout=0.0))
    model.eval()
    ids, mask, labels = _batch(40)
    kw = window_kwargs(model, labels)
    assert kw == {"logits_to_keep": 20}  # earliest reply label at 5 -> logits from position 4 on
    full = model(input_ids=ids, attention_mask=mask).logits
    cut = model(input_ids=ids, attention_mask=mask, **kw).logits
    assert cut.shape[1] == 20 and full.shape[1] == 24
    want = sequence_logps(full, labels)
    got = sequence_logps(cut, align_labels(labels, cut))
    assert torch.allclose(got[0], want[0], atol=1e-5) and torch.equal(got[1], want[1])


def test_a_model_without_the_argument_gets_the_full_forward():
    class Plain(nn.Module):
        def forward(self, input_ids, attention_mask=None):  # no logits_to_keep
            return input_ids

    class Wrapped(nn.Module):  # a DDP-like wrapper around it
        def __init__(self):
            super().__init__()
            self.module = Plain()

    labels = torch.tensor([[X, X, 3, 4]])
    assert not accepts(Wrapped(), "logits_to_keep") and window_kwargs(Wrapped(), labels) == {}
    assert window_kwargs(None, labels) == {}


def _pairs_batch(tok, n: int = 4) -> dict:
    from lmlab.data.alignment_batches import EncodeOptions, PolicyPairBatches, encode_policy_pairs
    from lmlab.data.loaders import load_records

    records = load_records("storyworld/prefs", "preference", limit=n)
    pairs, _ = encode_policy_pairs(tok, records, EncodeOptions(max_length=256))
    return PolicyPairBatches(pairs, n, tok.pad_token_id, seed=0).get(0)


@pytest.mark.parametrize("stage", ["dpo", "simpo", "orpo", "orpo_prompt"])
def test_preference_steps_equal_with_and_without_the_window(tiny_qwen2_dir, stage, monkeypatch):
    """The same loss and gradient whether the head runs on the reply window or on every position."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from lmlab.train import preference_steps as ps
    from lmlab.train.companions import freeze
    from lmlab.train.steps import StepContext

    tok = AutoTokenizer.from_pretrained(tiny_qwen2_dir)
    batch = _pairs_batch(tok)
    assert reply_window(batch["labels"]) < batch["labels"].size(1)  # the prompt really is cut off
    options = {"dpo": {"beta": 0.1}, "simpo": {"beta": 2.0, "gamma": 0.5}, "orpo": {"beta": 0.1},
               "orpo_prompt": {"beta": 0.1, "nll_on_prompt": True}}[stage]
    step = ps.PREFERENCE_STEPS[stage.split("_")[0]]

    def run(windowed: bool) -> tuple[float, torch.Tensor]:
        if not windowed:
            monkeypatch.setattr(ps, "window_kwargs", lambda model, labels: {})
        torch.manual_seed(0)
        model = AutoModelForCausalLM.from_pretrained(tiny_qwen2_dir)
        ref = freeze(AutoModelForCausalLM.from_pretrained(tiny_qwen2_dir))
        with torch.no_grad():  # a reference different from the policy, so the log-ratios are not 0
            for p in ref.parameters():
                p.add_(0.01 * torch.randn_like(p))
        ctx = StepContext(options=options, ref_model=ref if stage == "dpo" else None)
        out = step(model, batch, ctx)
        out.loss.backward()
        monkeypatch.undo()
        return float(out.loss.detach()), model.model.embed_tokens.weight.grad.clone()

    # the logits are bitwise the same; sums of ~200 log-probs of size ~5 over rows of another length
    # round differently (one ulp of 1,000 is 6e-5), hence the tolerance. Dropping one reply token
    # would move a log-prob sum by nats.
    (loss_w, grad_w), (loss_f, grad_f) = run(True), run(False)
    assert loss_w == pytest.approx(loss_f, rel=1e-5, abs=1e-5)
    assert torch.allclose(grad_w, grad_f, rtol=1e-3, atol=1e-6)
    assert grad_w.abs().sum() > 0
