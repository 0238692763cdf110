#!/usr/bin/env python3
"""PyTorch scaled_dot_product_attention on the shapes of bench/bench_attention.cpp.

Causal grouped-query attention with Llama-3-70B's heads: B = 1, 64 query heads, 8 KV
heads, head_dim 128, bf16, T = 1024, 4096, 16384; forward and backward, in TFLOP/s with
the same FLOP convention as the engine's bench (and FlashAttention's):

    forward  = 4 B Hq T^2 D / 2      (causal: half of Q K^T and P V)
    backward = 2.5 x forward

Run it in the same GPU session as engine_bench (docs/kernels/attention.md):

    python3 bench/sdpa_reference.py                 # default backend and each one that runs
    python3 bench/sdpa_reference.py --json out.json # also write the numbers

Tensors are made token-major, [B, T, H, D] as the engine stores them, and handed to SDPA
as [B, H, T, D] views (no copies). GQA uses enable_gqa=True where PyTorch has it (2.5+);
older versions get K and V expanded to 64 heads before timing (the backward then skips
the sum over each group of 8 heads, slightly in SDPA's favour). Times are CUDA-event
means after warm-up; each line names the backend that ran.
"""
import argparse
import json
import sys

try:
    import torch
    import torch.nn.functional as F
except ImportError:
    print("sdpa_reference: PyTorch is not installed; nothing measured")
    sys.exit(0)

B, HQ, HKV, D = 1, 64, 8, 128
SEQS = (1024, 4096, 16384)


def forward_flops(t):
    return 4.0 * B * HQ * t * t * D / 2.0


def time_ms(fn, min_time_s, warmup=3, min_iters=5):
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    total, iters = 0.0, 0
    while iters < min_iters or total < min_time_s * 1e3:
        start.record()
        fn()
        stop.record()
        stop.synchronize()
        total += start.elapsed_time(stop)
        iters += 1
    return total / iters


def gqa_supported():
    try:
        q = torch.zeros(1, 2, 4, 8, device="cuda", dtype=torch.bfloat16)
        kv = torch.zeros(1, 1, 4, 8, device="cuda", dtype=torch.bfloat16)
        F.scaled_dot_product_attention(q, kv, kv, is_causal=True, enable_gqa=True)
        return True
    except (TypeError, RuntimeError):
        return False


def backends():
    """(name, context manager factory) for the default choice and each explicit backend."""
    out = [("default", None)]
    try:
        from torch.nn.attention import SDPBackend, sdpa_kernel
    except ImportError:
        return out
    for name in ("FLASH_ATTENTION", "CUDNN_ATTENTION", "EFFICIENT_ATTENTION"):
        if hasattr(SDPBackend, name):
            out.append((name.lower(), lambda b=getattr(SDPBackend, name): sdpa_kernel(b)))
    return out


def measure(t, ctx_factory, use_gqa, min_time_s):
    gen = torch.Generator(device="cuda").manual_seed(t)

    def rand(h):  # token-major storage, [B, H, T, D] view
        x = torch.rand(B, t, h, D, device="cuda", dtype=torch.bfloat16, generator=gen) * 2 - 1
        return x.transpose(1, 2)

    q, k, v, dout = rand(HQ), rand(HKV), rand(HKV), rand(HQ)
    kwargs = {"is_causal": True}
    if use_gqa:
        kwargs["enable_gqa"] = True
    else:
        k = k.repeat_interleave(HQ // HKV, dim=1)
        v = v.repeat_interleave(HQ // HKV, dim=1)
    q, k, v = (x.detach().requires_grad_(True) for x in (q, k, v))

    def run(fn):
        if ctx_factory is None:
            return fn()
        with ctx_factory():
            return fn()

    def fwd():
        with torch.no_grad():
            F.scaled_dot_product_attention(q, k, v, **kwargs)

    fwd_ms = run(lambda: time_ms(fwd, min_time_s))
    out = run(lambda: F.scaled_dot_product_attention(q, k, v, **kwargs))
    bwd_ms = time_ms(lambda: torch.autograd.grad(out, (q, k, v), dout, retain_graph=True),
                     min_time_s)
    return fwd_ms, bwd_ms


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--min-time", type=float, default=0.3, help="seconds per measurement")
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("sdpa_reference: no CUDA device; nothing measured")
        return 0
    use_gqa = gqa_supported()
    print(f"device: {torch.cuda.get_device_name()}   torch {torch.__version__}   "
          f"GQA: {'enable_gqa' if use_gqa else 'K/V expanded'}")
    print(f"{'T':>6} {'backend':<20} {'fwd ms':>9} {'fwd TFLOP/s':>12} {'bwd ms':>9} "
          f"{'bwd TFLOP/s':>12} {'fwd+bwd TFLOP/s':>16}")
    rows = []
    for t in SEQS:
        f = forward_flops(t)
        for name, ctx in backends():
            try:
                fwd_ms, bwd_ms = measure(t, ctx, use_gqa, args.min_time)
            except RuntimeError as e:  # backend unavailable for these shapes or this GPU
                print(f"{t:>6} {name:<20} not available: {str(e).splitlines()[0][:60]}")
                continue
            finally:
                torch.cuda.empty_cache()
            row = {
                "seq": t, "backend": name, "fwd_ms": fwd_ms, "bwd_ms": bwd_ms,
                "fwd_tflops": f / fwd_ms * 1e-9, "bwd_tflops": 2.5 * f / bwd_ms * 1e-9,
                "total_tflops": 3.5 * f / (fwd_ms + bwd_ms) * 1e-9,
            }
            rows.append(row)
            print(f"{t:>6} {name:<20} {fwd_ms:>9.3f} {row['fwd_tflops']:>12.1f} {bwd_ms:>9.3f} "
                  f"{row['bwd_tflops']:>12.1f} {row['total_tflops']:>16.1f}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"device": torch.cuda.get_device_name(), "torch": torch.__version__,
                       "results": rows}, fh, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
