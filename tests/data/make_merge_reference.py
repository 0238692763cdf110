#!/usr/bin/env python3
"""Writes tests/data/merge_reference/reference.safetensors: what PEFT's merge_and_unload()
makes of tests/data/hf_reference/ (the tiny Llama of make_hf_reference.py and its nonzero
LoRA adapter, r 3, alpha 6, all seven linears), for tests/tools/test_train70b_merge.cpp.
Run by hand, output committed; the test never runs Python.

    python3 tests/data/make_merge_reference.py        (CPU only; a few seconds)

Written with torch 2.15.0+cu132 (run on the CPU), transformers 5.24.0, peft 0.21.2.

Tensors:
  input_ids        I32 [2, 9]   hf_reference's batch (row 1 right-padded; compare real positions)
  logits           F32 [2, 9, 101]  merge_and_unload() in f32: PEFT's merged model
  bf16w.logits     F32 [2, 9, 101]  the same merged model with every weight rounded to bf16 once
                   (merged f32 -> bf16 -> f32), run in f32: what a bf16 merged checkpoint computes
  merged.<name>    BF16   the merged model's weights as save_pretrained(dtype bf16) writes them
Metadata: "names" (JSON list: the tensor names save_pretrained writes for the merged bf16
model, in its order), "versions".
"""
import json
import os
import shutil
import tempfile

import peft
import torch
import transformers
from safetensors import safe_open
from safetensors.torch import load_file, save_file

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.join(HERE, "hf_reference")
OUT = os.path.join(HERE, "merge_reference")


def main():
    ref = load_file(os.path.join(SRC, "reference.safetensors"))
    ids, mask = ref["input_ids"].long(), ref["attention_mask"].long()
    with tempfile.TemporaryDirectory() as base_dir:  # without the adapter beside it
        for f in ("config.json", "model.safetensors"):
            shutil.copy(os.path.join(SRC, f), base_dir)
        base = transformers.LlamaForCausalLM.from_pretrained(base_dir, dtype=torch.float32,
                                                             attn_implementation="eager")
    model = peft.PeftModel.from_pretrained(base, SRC)
    merged = model.merge_and_unload()
    with torch.no_grad():
        logits = merged(input_ids=ids, attention_mask=mask).logits.float()
        rounded = type(merged)(merged.config)
        rounded.load_state_dict({k: v.to(torch.bfloat16).float() for k, v in merged.state_dict().items()})
        rounded.config._attn_implementation = "eager"
        bf16w = rounded.eval()(input_ids=ids, attention_mask=mask).logits.float()
    with tempfile.TemporaryDirectory() as tmp:
        merged.to(torch.bfloat16).save_pretrained(tmp)
        files = sorted(f for f in os.listdir(tmp) if f.endswith(".safetensors"))
        assert files == ["model.safetensors"], files
        with safe_open(os.path.join(tmp, files[0]), "pt") as f:
            names = list(f.keys())
        weights = load_file(os.path.join(tmp, files[0]))
    tensors = {"input_ids": ids.int(), "logits": logits, "bf16w.logits": bf16w}
    for n, t in weights.items():
        tensors["merged." + n] = t.contiguous()
    versions = {"torch": torch.__version__, "transformers": transformers.__version__,
                "peft": peft.__version__}
    os.makedirs(OUT, exist_ok=True)
    save_file(tensors, os.path.join(OUT, "reference.safetensors"),
              metadata={"format": "pt", "generator": "tests/data/make_merge_reference.py",
                        "names": json.dumps(names), "versions": json.dumps(versions)})
    real = mask.bool()
    print("max |bf16w - f32| logits at real positions:",
          (bf16w - logits)[real].abs().max().item())
    print("versions", versions)


if __name__ == "__main__":
    main()
