#!/usr/bin/env python3
"""Writes tests/data/dpo_reference/reference.safetensors: the DPO loss and its LoRA gradients
as PyTorch + transformers + peft compute them (TRL's DPO formulas, written out below), for
tests/models/test_dpo_reference.cpp. Run by hand, output committed; the test never runs Python.

    python3 tests/data/make_dpo_reference.py        (CPU only; a few seconds)

Written with torch 2.15.0+cu132 (run on the CPU), transformers 5.24.0, peft 0.21.2,
safetensors 0.8.0 (also stored in the file's metadata).

The model is tests/data/hf_reference/'s (make_hf_reference.py: a tiny random Llama with
GQA, llama3 RoPE scaling, odd sizes, and a PEFT adapter with nonzero lora_A and lora_B on
all seven linears), loaded from its files as the engine loads them. The batch: 2 pairs as
4 rows (chosen 0, chosen 1, rejected 0, rejected 1), right-padded with id 0, labels -100 on
each prompt and on the padding, responses of different lengths.

Per row, the log-probability of the response: sum (or mean, for IPO) over the positions t
whose shifted label labels[t+1] != -100 of log_softmax(logits[t])[labels[t+1]]. The
reference is the same model inside peft's disable_adapter() (TRL's choice for a PEFT model
without a ref_model), under no_grad. With h = (pi_c - ref_c) - (pi_r - ref_r):
  sigmoid  loss = mean over pairs of -(1-e) logsigmoid(beta h) - e logsigmoid(-beta h)
  ipo      loss = mean over pairs of (h - 1/(2 beta))^2, log-probs averaged per token
Tensors:
  input_ids, labels, attention_mask   I32 [4, SEQ]
  base.logps        F32 [4] summed log-probs of the base model without peft (= adapter off)
  sigmoid.policy, sigmoid.ref   F32 [4]; sigmoid.loss F32 [1]; sigmoid.grad.<PEFT name>
  ipo.policy, ipo.ref           F32 [4]; ipo.loss F32 [1];     ipo.grad.<PEFT name>
  config            F32 [3]: beta, label_smoothing (sigmoid), beta (ipo)
"""
import json
import os
import shutil
import tempfile

import peft
import safetensors
import torch
import torch.nn.functional as F
import transformers
from safetensors.torch import save_file

HERE = os.path.dirname(os.path.abspath(__file__))
MODEL = os.path.join(HERE, "hf_reference")
OUT = os.path.join(HERE, "dpo_reference")
SEQ = 10
PAD = 0
# (prompt length, chosen response length, rejected response length) per pair
PAIRS = ((3, 5, 7), (4, 6, 2))
SIGMOID_BETA, LABEL_SMOOTHING, IPO_BETA = 0.1, 0.1, 0.5


def batch(gen):
    rows, lengths = [], []
    prompts = [torch.randint(1, 101, (p,), generator=gen) for p, _, _ in PAIRS]
    for side in (1, 2):  # chosen rows, then rejected rows
        for k, pair in enumerate(PAIRS):
            response = torch.randint(1, 101, (pair[side],), generator=gen)
            rows.append((prompts[k], response))
    ids = torch.full((len(rows), SEQ), PAD, dtype=torch.long)
    labels = torch.full((len(rows), SEQ), -100, dtype=torch.long)
    mask = torch.zeros((len(rows), SEQ), dtype=torch.long)
    for r, (p, c) in enumerate(rows):
        n = len(p) + len(c)
        assert n <= SEQ
        ids[r, :n] = torch.cat([p, c])
        labels[r, len(p):n] = c
        mask[r, :n] = 1
    return ids, mask, labels


def logps(model, ids, mask, labels, average):
    logits = model(input_ids=ids, attention_mask=mask).logits[:, :-1].float()
    target = labels[:, 1:]
    counted = target != -100
    lp = torch.gather(logits.log_softmax(-1), 2, target.clamp(min=0).unsqueeze(2)).squeeze(2)
    total = (lp * counted).sum(-1)
    return total / counted.sum(-1) if average else total


def dpo(model, ids, mask, labels, kind):
    average = kind == "ipo"
    with torch.no_grad(), model.disable_adapter():
        ref = logps(model, ids, mask, labels, average)
    model.zero_grad(set_to_none=True)
    pol = logps(model, ids, mask, labels, average)
    b = len(PAIRS)
    h = (pol[:b] - ref[:b]) - (pol[b:] - ref[b:])
    if kind == "ipo":
        loss = ((h - 1 / (2 * IPO_BETA)) ** 2).mean()
    else:
        e = LABEL_SMOOTHING
        loss = (-(1 - e) * F.logsigmoid(SIGMOID_BETA * h) - e * F.logsigmoid(-SIGMOID_BETA * h)).mean()
    loss.backward()
    grads = {n.replace(".default.weight", ".weight"): p.grad.detach().float().clone()
             for n, p in model.named_parameters() if "lora_" in n}
    return pol.detach(), ref, loss.detach().reshape(1), grads


def main():
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(20261214)
    # The base alone: transformers would load the adapter file beside it into the model.
    with tempfile.TemporaryDirectory() as tmp:
        for f in ("config.json", "model.safetensors"):
            shutil.copy(os.path.join(MODEL, f), tmp)
        base = transformers.LlamaForCausalLM.from_pretrained(tmp, attn_implementation="eager").float()
    ids, mask, labels = batch(gen)
    with torch.no_grad():
        base_logps = logps(base, ids, mask, labels, False)
    model = peft.PeftModel.from_pretrained(base, MODEL, is_trainable=True).float()
    tensors = {"input_ids": ids.int(), "attention_mask": mask.int(), "labels": labels.int(),
               "base.logps": base_logps,
               "config": torch.tensor([SIGMOID_BETA, LABEL_SMOOTHING, IPO_BETA])}
    for kind in ("sigmoid", "ipo"):
        pol, ref, loss, grads = dpo(model, ids, mask, labels, kind)
        tensors[kind + ".policy"], tensors[kind + ".ref"], tensors[kind + ".loss"] = pol, ref, loss
        for name in sorted(grads):
            tensors[kind + ".grad." + name] = grads[name]
        print(kind, "loss %.7f" % loss.item(), "policy", pol.tolist(), "ref", ref.tolist())
    assert torch.allclose(tensors["sigmoid.ref"], base_logps, rtol=0, atol=1e-4), "adapter off != base"
    versions = {"torch": torch.__version__, "transformers": transformers.__version__,
                "peft": peft.__version__, "safetensors": safetensors.__version__}
    os.makedirs(OUT, exist_ok=True)
    save_file({k: v.contiguous() for k, v in tensors.items()}, os.path.join(OUT, "reference.safetensors"),
              metadata={"format": "pt", "generator": "tests/data/make_dpo_reference.py",
                        "versions": json.dumps(versions)})
    print("versions", versions, "size", os.path.getsize(os.path.join(OUT, "reference.safetensors")))


if __name__ == "__main__":
    main()
