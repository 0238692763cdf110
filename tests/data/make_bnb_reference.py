#!/usr/bin/env python3
"""Pre-quantized bitsandbytes 4-bit reference checkpoints for tests/models/test_bnb_checkpoint.cpp.

Writes tests/data/bnb_reference/:
  dq/, no_dq/     a tiny random Llama (f32, seed 0) quantized by transformers + bitsandbytes on
                  the CPU (BitsAndBytesConfig load_in_4bit, nf4, with and without double
                  quantization) and saved with save_pretrained: config.json with its
                  quantization_config and model.safetensors in bitsandbytes' serialized form.
  reference.json  versions; a fixed token batch (labels = ids); for each variant the loss that
                  PyTorch (f32, CPU) computes on the dense model whose linears are bitsandbytes'
                  own dequantization (bnb.functional.dequantize_4bit) of the stored weights, and
                  a 64-bit FNV-1a hash of each dequantized f32 weight's bytes (the engine's
                  dequantization must be bitwise equal).

  python3 tests/data/make_bnb_reference.py                 # the committed files
  python3 tests/data/make_bnb_reference.py --train70b build/tools/train70b
      also runs `train70b quantize --model <the dense tiny model> --output <tmp>`
      and opens the engine's checkpoint with transformers + bitsandbytes (from_pretrained on
      the CPU), comparing its dequantized weights and loss with those of bitsandbytes' own
      quantization of the same model; the outcome is recorded under "engine_quantize".

Result of the --train70b check when this file was last run (bitsandbytes 0.50.2,
transformers 5.24.0, torch 2.15 CPU; recorded in reference.json "engine_quantize"):
from_pretrained opens the engine's checkpoint (14 Linear4bit modules), bitsandbytes' own
forward runs on it, and the loss from its dequantized weights equals, to the printed digit,
that of bitsandbytes' quantization of the same dense model (4.649734973907471). The weights
are not bitwise those of bitsandbytes' CPU quantizer, as expected: the packed nibbles are
identical in all 14 weights, but every nested_offset (torch's float32 mean vs the engine's
double-accumulated one) and so the nested absmax differ by 1 ulp, and 2 of the 2944 8-bit
absmax codes differ (see engine/quant/nf4.h and the note below).

Sizes: hidden 64, 2 layers, 4 heads, 2 KV heads, intermediate 320 (20480 values per MLP weight:
320 absmax blocks, so the nested absmax has a full block of 256 and a partial one). Every
in_features is a multiple of 64: bitsandbytes 0.50.2's CPU 4-bit forward
(_convert_weight_packed_for_cpu) fails on rows that are not whole blocks.
bitsandbytes' CPU quantizer may pick a different 8-bit absmax code than the engine in a few
blocks (see issue 10, "Note on bitsandbytes' CPU quantizer"); a pre-quantized checkpoint is
loaded as stored, so the comparison here is exact whatever quantized it.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

import bitsandbytes as bnb
import numpy as np
import safetensors
import torch
import transformers
from transformers import BitsAndBytesConfig, LlamaConfig, LlamaForCausalLM

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "bnb_reference")
LINEARS = ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
           "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"]


def fnv1a64(data: bytes) -> str:
    h = 0xcbf29ce484222325
    for b in data:
        h ^= b
        h = (h * 0x100000001b3) & 0xFFFFFFFFFFFFFFFF
    return "%016x" % h


def config():
    return LlamaConfig(vocab_size=96, hidden_size=64, intermediate_size=320, num_hidden_layers=2,
                       num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                       rms_norm_eps=1e-5, rope_theta=10000.0, tie_word_embeddings=False,
                       torch_dtype="float32")


def write_dense(path):
    torch.manual_seed(0)
    model = LlamaForCausalLM(config()).to(torch.float32)
    with torch.no_grad():  # norms away from 1, so a norm loaded wrongly shows in the loss
        for name, p in model.named_parameters():
            if "norm" in name:
                p.copy_(1.0 + 0.1 * torch.randn_like(p))
    model.save_pretrained(path)


def batch():
    g = torch.Generator().manual_seed(1)
    return torch.randint(0, 96, (2, 12), generator=g)


def dequantized_loss(qmodel, ids):
    """Loss of the dense f32 model with bitsandbytes' dequantization of each Linear4bit."""
    dense = LlamaForCausalLM(config()).to(torch.float32)
    state = {}
    hashes = {}
    for name, module in qmodel.named_modules():
        if isinstance(module, bnb.nn.Linear4bit):
            w = bnb.functional.dequantize_4bit(module.weight.data, module.weight.quant_state)
            w = w.to(torch.float32).contiguous()
            state[name + ".weight"] = w
            hashes[name + ".weight"] = fnv1a64(w.numpy().tobytes())
    for name, p in qmodel.named_parameters():
        if name not in state:
            state[name] = p.detach().to(torch.float32)
    missing, unexpected = dense.load_state_dict(state, strict=False)
    assert not unexpected and all("rotary" in m for m in missing), (missing, unexpected)
    dense.eval()
    with torch.no_grad():
        loss = dense(input_ids=ids, labels=ids).loss.item()
    return loss, hashes


def quantize_with_bnb(dense_dir, double_quant):
    qc = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                            bnb_4bit_use_double_quant=double_quant,
                            bnb_4bit_compute_dtype=torch.float32)
    return LlamaForCausalLM.from_pretrained(dense_dir, quantization_config=qc, device_map="cpu",
                                            dtype=torch.float32)


def check_engine(train70b, dense_dir, ids, reference_loss, reference_hashes):
    """train70b quantize, then from_pretrained of its output with transformers + bitsandbytes."""
    out = tempfile.mkdtemp() + "/engine_bnb"
    cmd = [train70b, "quantize", "--model", dense_dir, "--output", out]
    subprocess.run(cmd, check=True)
    result = {"command": "train70b quantize --model <dense tiny model> --output <dir>"}
    try:
        q = LlamaForCausalLM.from_pretrained(out, device_map="cpu")
        n4 = sum(isinstance(m, bnb.nn.Linear4bit) for m in q.modules())
        loss, hashes = dequantized_loss(q, ids)
        with torch.no_grad():
            own = q(input_ids=ids, labels=ids).loss.item()
        result.update({"from_pretrained": "ok", "linear4bit_modules": n4,
                       "loss_from_dequantized": loss, "loss_bnb_forward": own,
                       "loss_of_bnb_quantization_of_same_model": reference_loss,
                       "dequantized_equal_to_bnb_quantization": hashes == reference_hashes})
    except Exception as e:  # recorded honestly, not hidden
        result.update({"from_pretrained": "failed", "error": repr(e)[:500]})
    return result


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--train70b", help="path of a built train70b: also check its quantize output")
    args = ap.parse_args()
    os.makedirs(OUT, exist_ok=True)
    ids = batch()
    ref = {"versions": "torch %s, transformers %s, bitsandbytes %s, safetensors %s" % (
        torch.__version__, transformers.__version__, bnb.__version__, safetensors.__version__),
        "ids": ids.tolist()}
    with tempfile.TemporaryDirectory() as tmp:
        dense_dir = os.path.join(tmp, "dense")
        write_dense(dense_dir)
        for variant, dq in (("dq", True), ("no_dq", False)):
            q = quantize_with_bnb(dense_dir, dq)
            q.save_pretrained(os.path.join(OUT, variant))
            # Reload what was saved: the loss comes from the stored bytes.
            q = LlamaForCausalLM.from_pretrained(os.path.join(OUT, variant), device_map="cpu")
            loss, hashes = dequantized_loss(q, ids)
            ref[variant] = {"loss": loss, "dequantized_fnv1a64": hashes}
            print(variant, "loss", loss)
        if args.train70b:
            ref["engine_quantize"] = check_engine(args.train70b, dense_dir, ids, ref["dq"]["loss"],
                                                  ref["dq"]["dequantized_fnv1a64"])
            print("engine_quantize", ref["engine_quantize"])
        else:
            old = os.path.join(OUT, "reference.json")
            if os.path.exists(old):  # keep the last recorded engine check
                prev = json.load(open(old))
                if "engine_quantize" in prev:
                    ref["engine_quantize"] = prev["engine_quantize"]
    with open(os.path.join(OUT, "reference.json"), "w") as f:
        json.dump(ref, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
