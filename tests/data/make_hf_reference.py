#!/usr/bin/env python3
"""Writes tests/data/hf_reference/: a tiny random Llama with LoRA, and what Hugging Face
computes for it, for tests/models/test_hf_reference.cpp (CPU, f32) and
test_hf_reference_cuda.cpp (CUDA, bf16). As llm.c's test_gpt2: run by hand, output
committed; the tests only read the files, they never run Python.

    python3 tests/data/make_hf_reference.py        (CPU only; about 10 s)

Written with torch 2.15.0+cu132 (run on the CPU), transformers 5.24.0, peft 0.21.2,
safetensors 0.8.0 (the versions are also stored in reference.safetensors' metadata).

The model (config.json) covers what a plain random test would miss:
  - grouped-query attention, 4 query heads on 2 KV heads, head_dim 64 given explicitly
    (q_dim 256 != hidden 48, as in Llama 3.2), so the CUDA tensor-core attention runs;
  - llama3 RoPE scaling with original_max_position_embeddings 128: at theta 10000 the 32
    frequencies fall in all three bands (kept, interpolated, divided by the factor);
  - odd sizes: vocab 101, intermediate 69, LoRA rank 3, 3 layers, sequence length 9;
  - every weight random and unit-scale (embedding N(0,1), linears N(0, 1/in), norm weights
    1 + U(-0.2, 0.2)), lm_head untied, so every weight and path matters;
  - LoRA (PEFT) on all seven linears, r 3, alpha 6 (scaling 2), dropout 0, with lora_A and
    lora_B set to fixed nonzero values (PEFT would start B at zero and hide B's path).
Files: config.json and model.safetensors (save_pretrained), adapter_config.json and
adapter_model.safetensors (PEFT save_pretrained; target_modules sorted, PEFT writes a set
in any order), and reference.safetensors (tensor values reproducible run to run):
  input_ids, labels, attention_mask  I32 [2, 9]: row 0 full with its first two labels
                     -100 (a prompt); row 1 five tokens, right-padded with pad id 0,
                     attention_mask 0 and labels -100 at the pads
  logits             F32 [2, 9, 101], f32 forward (pad positions too; compare non-pads only)
  loss               F32 [1], HF's mean over counted (shifted, not -100) tokens
  grad.<PEFT name>   F32, d loss / d every lora_A and lora_B (names as in the adapter file)
  bf16.logits, bf16.loss, bf16.grad.<name>   the same from the model cast to bf16 with the
                     LoRA factors kept f32 (PEFT's autocast_adapter_dtype, the engine's
                     fp32 masters): the bf16 baseline error that bounds the CUDA test.
"""
import copy
import json
import math
import os
import shutil
import tempfile

import peft
import safetensors
import torch
import transformers
from safetensors.torch import save_file

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "hf_reference")
SEQ = 9
LENGTHS = (9, 5)  # tokens per row before right padding
PAD = 0


def build_model():
    config = transformers.LlamaConfig(
        vocab_size=101, hidden_size=48, intermediate_size=69, num_hidden_layers=3,
        num_attention_heads=4, num_key_value_heads=2, head_dim=64, rms_norm_eps=1e-5,
        max_position_embeddings=256, tie_word_embeddings=False, attention_bias=False,
        mlp_bias=False, hidden_act="silu", pad_token_id=PAD,
        rope_theta=10000.0,
        rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                      "high_freq_factor": 4.0, "original_max_position_embeddings": 128})
    config._attn_implementation = "eager"  # the textbook softmax(q k^T / sqrt(d)) v
    model = transformers.LlamaForCausalLM(config).float()
    gen = torch.Generator().manual_seed(20261201)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.copy_(1 + 0.4 * (torch.rand(p.shape, generator=gen) - 0.5))
            elif "embed_tokens" in name:
                p.copy_(torch.randn(p.shape, generator=gen))
            else:  # [out, in] linears and lm_head
                p.copy_(torch.randn(p.shape, generator=gen) / math.sqrt(p.shape[1]))
    return model, gen


def add_lora(model, gen):
    lora = peft.LoraConfig(r=3, lora_alpha=6, lora_dropout=0.0, bias="none",
                           task_type="CAUSAL_LM", init_lora_weights=False,
                           target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj",
                                           "up_proj", "down_proj"])
    model = peft.get_peft_model(model, lora)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_A" in name:  # [r, in]: PEFT's kaiming-uniform range
                bound = 1 / math.sqrt(p.shape[1])
                p.copy_((2 * torch.rand(p.shape, generator=gen) - 1) * bound)
            elif "lora_B" in name:  # [out, r]: nonzero, LoRA term comparable to the base
                p.copy_(torch.rand(p.shape, generator=gen) - 0.5)
    return model


def batch(gen):
    ids = torch.randint(1, 101, (len(LENGTHS), SEQ), generator=gen)
    mask = torch.zeros_like(ids)
    for row, n in enumerate(LENGTHS):
        mask[row, :n] = 1
    ids = torch.where(mask.bool(), ids, torch.full_like(ids, PAD))
    labels = torch.where(mask.bool(), ids, torch.full_like(ids, -100))
    labels[0, :2] = -100  # a prompt: not trained on
    return ids, mask, labels


def saved_name(name):  # PEFT's in-memory name -> the adapter file's name
    return name.replace(".default.weight", ".weight")


def run(model, ids, mask, labels):
    model.zero_grad(set_to_none=True)
    out = model(input_ids=ids, attention_mask=mask, labels=labels)
    out.loss.backward()
    grads = {saved_name(n): p.grad.detach().float().clone()
             for n, p in model.named_parameters() if "lora_" in n}
    return out.logits.detach().float(), out.loss.detach().float().reshape(1), grads


def main():
    torch.manual_seed(0)
    model, gen = build_model()
    base_dir = tempfile.TemporaryDirectory()
    model.save_pretrained(base_dir.name)  # before LoRA wraps the linears (base_layer names)
    model = add_lora(model, gen)
    ids, mask, labels = batch(gen)
    logits, loss, grads = run(model, ids, mask, labels)
    with torch.no_grad():  # right padding leaves the real positions as without padding
        n = LENGTHS[1]
        alone = model(input_ids=ids[1:, :n]).logits[0]
        assert torch.allclose(alone, logits[1, :n], rtol=0, atol=1e-5), "padding leaks"

    # The bf16 baseline: base weights and activations bf16, LoRA factors f32.
    low = copy.deepcopy(model).to(torch.bfloat16)
    for name, p in low.named_parameters():
        if "lora_" in name:
            p.data = p.data.float()
    b_logits, b_loss, b_grads = run(low, ids, mask, labels)

    if os.path.isdir(OUT):
        shutil.rmtree(OUT)
    os.makedirs(OUT)
    with tempfile.TemporaryDirectory() as tmp:
        model.save_pretrained(tmp)  # adapter_config.json, adapter_model.safetensors
        for f in ("adapter_config.json", "adapter_model.safetensors"):
            shutil.copy(os.path.join(tmp, f), OUT)
    # PEFT writes target_modules from a set (order varies run to run): sort it.
    with open(os.path.join(OUT, "adapter_config.json")) as f:
        adapter_config = json.load(f)
    adapter_config["target_modules"] = sorted(adapter_config["target_modules"])
    with open(os.path.join(OUT, "adapter_config.json"), "w") as f:
        json.dump(adapter_config, f, indent=2, sort_keys=True)
    for f in ("config.json", "model.safetensors"):
        shutil.copy(os.path.join(base_dir.name, f), OUT)
    base_dir.cleanup()

    tensors = {"input_ids": ids.int(), "attention_mask": mask.int(), "labels": labels.int(),
               "logits": logits, "loss": loss, "bf16.logits": b_logits, "bf16.loss": b_loss}
    for name in sorted(grads):
        tensors["grad." + name] = grads[name]
        tensors["bf16.grad." + name] = b_grads[name]
    versions = {"torch": torch.__version__, "transformers": transformers.__version__,
                "peft": peft.__version__, "safetensors": safetensors.__version__}
    save_file({k: v.contiguous() for k, v in tensors.items()},
              os.path.join(OUT, "reference.safetensors"),
              metadata={"format": "pt", "generator": "tests/data/make_hf_reference.py",
                        "versions": json.dumps(versions)})
    print("loss f32 %.7f bf16 %.7f" % (loss.item(), b_loss.item()))
    print("versions", versions)
    for f in sorted(os.listdir(OUT)):
        print("%8d %s" % (os.path.getsize(os.path.join(OUT, f)), f))


if __name__ == "__main__":
    main()
