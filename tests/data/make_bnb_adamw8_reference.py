#!/usr/bin/env python3
"""bitsandbytes 8-bit AdamW reference for tests/engine/test_paged_adamw_bnb.cpp.

Writes tests/data/bnb_adamw8_reference/reference.safetensors: bitsandbytes' own AdamW8bit
(the arithmetic of paged_adamw_8bit; paging changes where states live, not the numbers) run
on the CPU, where bitsandbytes >= 0.49 has the 8-bit blockwise update
(bitsandbytes/backends/cpu/ops.py, _optimizer_update_8bit_blockwise_cpu), over three
parameters:
  t0 [1000]      fewer than 4096 elements: fp32 states (bnb's min_8bit_size)
  t1 [40, 125]   5000 elements: 8-bit, the last 256-block short (136 values)
  t2 [18, 256]   4608 elements: 8-bit, whole blocks
for STEPS steps with lr 1e-3, betas (0.9, 0.999), eps 1e-8, weight decay 0.01. Gradients are
normal with a scale drawn per 256-block from 10^U(-4, 1), so that blocks span the dynamic
map's range, and one block of t2 is all zero (its moments decay and it re-quantizes).

Entries: map.signed, map.unsigned (bnb's create_dynamic_map(signed=True/False)); t<i>.p0 (the
initial parameter); per step s = 1..STEPS and tensor i: s<s>.t<i>.grad and the state after the
step: s<s>.t<i>.p, .state1, .state2 (f32 for t0, u8 codes otherwise) and .absmax1, .absmax2.
Metadata: the hyper-parameters and versions. The test feeds the engine bnb's state before
each step and compares the state after it (see the test for the bounds).

  python3 -m venv /tmp/bnb-venv && /tmp/bnb-venv/bin/pip install torch bitsandbytes safetensors
  /tmp/bnb-venv/bin/python tests/data/make_bnb_adamw8_reference.py

Last run: bitsandbytes 0.50.2, torch 2.15.0 (CPU), safetensors 0.8.0.
"""
import json
import os

import bitsandbytes as bnb
import bitsandbytes.functional as F
import torch
from safetensors.torch import save_file

STEPS = 3
LR, BETAS, EPS, WD = 1e-3, (0.9, 0.999), 1e-8, 0.01
SHAPES = [(1000,), (40, 125), (18, 256)]


def block_scaled_normal(shape, gen):
    n = 1
    for d in shape:
        n *= d
    blocks = (n + 255) // 256
    scale = 10.0 ** (torch.rand(blocks, generator=gen) * 5.0 - 4.0)
    g = torch.randn(n, generator=gen) * scale.repeat_interleave(256)[:n]
    return g.reshape(shape)


def main():
    torch.set_num_threads(1)
    gen = torch.Generator().manual_seed(1234)
    params = [torch.nn.Parameter(torch.randn(s, generator=gen) * 0.1) for s in SHAPES]
    out = {
        "map.signed": F.create_dynamic_map(signed=True).float().contiguous(),
        "map.unsigned": F.create_dynamic_map(signed=False).float().contiguous(),
    }
    for i, p in enumerate(params):
        out[f"t{i}.p0"] = p.detach().clone()
    opt = bnb.optim.AdamW8bit(params, lr=LR, betas=BETAS, eps=EPS, weight_decay=WD)
    for step in range(1, STEPS + 1):
        for i, p in enumerate(params):
            g = block_scaled_normal(p.shape, gen)
            if i == 2:
                g.view(-1)[256:512] = 0.0  # one all-zero block
            p.grad = g
            out[f"s{step}.t{i}.grad"] = g.clone()
        opt.step()
        for i, p in enumerate(params):
            st = opt.state[p]
            assert st["step"] == step
            out[f"s{step}.t{i}.p"] = p.detach().clone()
            out[f"s{step}.t{i}.state1"] = st["state1"].clone()
            out[f"s{step}.t{i}.state2"] = st["state2"].clone()
            if "absmax1" in st:
                out[f"s{step}.t{i}.absmax1"] = st["absmax1"].clone()
                out[f"s{step}.t{i}.absmax2"] = st["absmax2"].clone()
    meta = {
        "lr": repr(LR), "beta1": repr(BETAS[0]), "beta2": repr(BETAS[1]), "eps": repr(EPS),
        "weight_decay": repr(WD), "steps": str(STEPS), "tensors": json.dumps(SHAPES),
        "bitsandbytes": bnb.__version__, "torch": torch.__version__,
    }
    here = os.path.dirname(os.path.abspath(__file__))
    path = os.path.join(here, "bnb_adamw8_reference", "reference.safetensors")
    save_file({k: v.contiguous() for k, v in out.items()}, path, metadata=meta)
    print("wrote", path, os.path.getsize(path), "bytes")


if __name__ == "__main__":
    main()
