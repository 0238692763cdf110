#!/usr/bin/env python3
"""Writes tests/data/nf4_reference.bin: NF4 (bitsandbytes quant_type "nf4", blocksize 64,
with and without double quantization) of a few small weights, for tests/engine/test_nf4.cpp.
The tests only read the file; they never run Python.

Math being pinned down (bitsandbytes):
  absmax_b = max |x| over block b (64 values, the last block short);
  nibble   = NF4 code nearest to x * (1/absmax_b), midpoints compared with `>` (ties -> lower code);
  packed   = two nibbles per byte, element 2j in the high nibble;
  double quantization: offset = mean(absmax); absmax - offset is 8-bit quantized in blocks of
  256 against the signed dynamic map; absmax' = map[q] * nested_absmax + offset.

Where the numbers come from. bitsandbytes has two implementations that agree on ordinary data
but not at the edges: the CUDA kernels (kQuantizeBlockwise + dQuantizeNF4 / dQuantize, what
QLoRA users run and what pre-quantized checkpoints were made with) and a CPU backend (torch
bucketize for NF4; a C++ binary search for the 8-bit nested step). The engine implements the
CUDA arithmetic, because its CUDA kernels must produce the same bytes as bitsandbytes on GPU.
So this script
  1. emulates the CUDA kernels literally in numpy float32 (`emulate_cuda`), and
  2. runs the real bitsandbytes (CPU backend, bitsandbytes>=0.45 with torch) on the same input,
and compares them field by field. Where they agree (everything but the cases below) the file
holds bitsandbytes' own output. They disagree only at the CPU backend's known departures from
the CUDA kernels; there the file holds the CUDA emulation, and the script prints each one:
  - NF4 thresholds: CUDA compares against float literals rounded straight from their decimal
    text; the CPU backend against fp32 (code[k] + code[k+1]) / 2. Four of the fifteen differ
    by one ulp, so a value exactly on one of them gets the other code (case midpoints_2x64);
  - remainder block: the CPU backend divides (x / absmax) where CUDA multiplies by 1/absmax;
  - nested 8-bit step: the CPU backend divides, sends exact ties to the lower entry and its
    approximate binary search (BinSearch Direct2) now and then lands on an entry that is not the
    nearest (case hash_40x1000, one code); CUDA multiplies by the reciprocal, finds the nearest
    entry and sends exact ties to the even index.
An all-zero block is the one place where the engine follows the CPU backend instead of CUDA:
CUDA computes 0 * (1/0) = NaN and writes nibble 0 (code -1.0), which dequantizes to
-absmax', a nonzero value once absmax is double-quantized; the CPU backend (reciprocal of
max(absmax, 1e-38)) writes nibble 7 (code 0.0), which dequantizes to exactly 0. The emulation
does the same.

The signed dynamic map is the one torch builds on x86 with AVX2/AVX512 (its linspace uses fused
multiply-adds there); a torch without SIMD (ATEN_CPU_CAPABILITY=default) builds a map that differs
in 42 entries by 1-2 ulp. The file stores the map bitsandbytes returned; the test checks that the
engine's map, built from the definition, equals it.

Run: python3 tests/data/make_nf4_reference.py   (needs numpy, torch, bitsandbytes; CPU is enough)
The checked-in file was made with bitsandbytes 0.50.2 and torch 2.15.0 (PyPI wheel, run on an
x86 CPU with AVX512).

File format, all little-endian:
  magic b"NF4REF01"; u32 ncases; f32 nf4_code[16]; f32 dynamic_map[256]
  per case:
    u32 name_len, name bytes; u32 double_quant; u32 has_input; u32 has_dequant
    u32 rank; i64 dims[rank]; u64 numel
    f32 input[numel]            (if has_input; otherwise the test regenerates it, see hash_input)
    u64 nbytes; u8 packed[nbytes]
    u64 nblocks; double_quant ? u8 absmax_q[nblocks] : f32 absmax[nblocks]
    if double_quant: u64 nnested; f32 nested_absmax[nnested]; f32 offset
    f32 dequant[numel]          (if has_dequant)
"""
import struct
import sys
from fractions import Fraction
from pathlib import Path

import numpy as np

f32 = np.float32
BLOCK = 64
NESTED_BLOCK = 256

NF4_CODE = np.array([
    -1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453,
    -0.28444138169288635, -0.18477343022823334, -0.09105003625154495, 0.0,
    0.07958029955625534, 0.16093020141124725, 0.24611230194568634, 0.33791524171829224,
    0.44070982933044434, 0.5626170039176941, 0.7229568362236023, 1.0], dtype=f32)


def f32_literal(text):
    """The float a C/CUDA compiler makes of `<text>f`: the decimal rounded straight to fp32
    (nvcc and gcc both do this; np.float32(text) goes through double and can land one ulp off)."""
    exact = Fraction(text)
    near = np.float32(float(exact))
    candidates = [np.nextafter(near, f32(-2)), near, np.nextafter(near, f32(2))]
    return min(candidates, key=lambda c: (abs(Fraction(float(c)) - exact),
                                          int(np.array(c).view(np.int32)) & 1))


# The thresholds of bitsandbytes' dQuantizeNF4 decision tree (float literals in kernels.cu).
# Four of them (k = 0, 8, 12, 14) are one ulp away from the fp32 mean of the adjacent codes,
# which is what the CPU backend's bucketize compares against.
NF4_MID = np.array([f32_literal(t) for t in (
    "-0.8480964004993439", "-0.6106329262256622", "-0.4599952697753906", "-0.33967943489551544",
    "-0.23460740596055984", "-0.13791173323988914", "-0.045525018125772476", "0.03979014977812767",
    "0.1202552504837513", "0.2035212516784668", "0.2920137718319893", "0.3893125355243683",
    "0.5016634166240692", "0.6427869200706482", "0.8614784181118011")], dtype=f32)


def hash_input(n):
    """Deterministic weights the C++ test regenerates bit for bit: a 24-bit integer hash mapped
    exactly to [-1, 1), times a per-block scale (1..8)/8 so the absmax values differ."""
    i = np.arange(n, dtype=np.uint64)
    h = (i * np.uint64(2654435761) + np.uint64(12345)) & np.uint64(0xFFFFFFFF)
    h ^= h >> np.uint64(15)
    h = (h * np.uint64(2246822519)) & np.uint64(0xFFFFFFFF)
    h ^= h >> np.uint64(13)
    u = ((h >> np.uint64(8)).astype(np.int64) - (1 << 23)).astype(f32) * f32(2.0 ** -23)
    scale = ((i // BLOCK) % np.uint64(8) + np.uint64(1)).astype(f32) * f32(0.125)
    return (u * scale).astype(f32)


# ---------------------------------------------------------------- CUDA kernel emulation
def nf4_nibble(x):
    # Branch-free form of the decision tree: x > threshold -> upper half; NaN -> 0.
    q = 0
    for step in (8, 4, 2, 1):
        if x > NF4_MID[q + step - 1]:
            q += step
    return q


def dquantize(code, x):
    """bitsandbytes' dQuantize<STOCHASTIC=0> (kernels.cu), step for step."""
    pivot, upper_pivot, lower_pivot = 127, 255, 0
    lower, upper = f32(-1.0), f32(1.0)
    val = code[pivot]
    i = 64
    while i > 0:
        if x > val:
            lower_pivot, lower = pivot, val
            pivot += i
        else:
            upper_pivot, upper = pivot, val
            pivot -= i
        val = code[pivot]
        i >>= 1
    if upper_pivot == 255:
        upper = code[upper_pivot]
    if lower_pivot == 0:
        lower = code[lower_pivot]
    if x > val:
        return upper_pivot if x > (upper + val) * f32(0.5) else pivot
    return lower_pivot if x < (lower + val) * f32(0.5) else pivot


def quantize_nf4_blocks(x):
    n = x.size
    nblocks = -(-n // BLOCK)
    absmax = np.zeros(nblocks, dtype=f32)
    nib = np.full(nblocks * BLOCK, 7, dtype=np.uint8)  # padding is quantize(0) = code 0.0
    with np.errstate(divide="ignore", invalid="ignore"):
        for b in range(nblocks):
            blk = x[b * BLOCK:(b + 1) * BLOCK]
            a = np.max(np.abs(blk))
            absmax[b] = a
            inv = f32(1.0) / max(a, f32(1e-38))  # zero block -> scaled 0 -> code 0.0
            for j, v in enumerate(blk):
                nib[b * BLOCK + j] = nf4_nibble(v * inv)
    nib = nib[: n + (n & 1)]
    packed = ((nib[0::2] << 4) | nib[1::2]).astype(np.uint8)
    return packed, absmax


def quantize_nested(values, code):
    n = values.size
    nblocks = -(-n // NESTED_BLOCK)
    q = np.zeros(n, dtype=np.uint8)
    nested = np.zeros(nblocks, dtype=f32)
    with np.errstate(divide="ignore", invalid="ignore"):
        for b in range(nblocks):
            blk = values[b * NESTED_BLOCK:(b + 1) * NESTED_BLOCK]
            a = np.max(np.abs(blk))
            nested[b] = a
            inv = f32(1.0) / a  # CUDA: no guard; a zero block gives NaN -> index 0
            for j, v in enumerate(blk):
                q[b * NESTED_BLOCK + j] = dquantize(code, v * inv)
    return q, nested


def mean_f32(a):
    return f32(np.sum(a.astype(np.float64)) / a.size)


def emulate_cuda(x, double_quant, code, offset=None):
    packed, absmax = quantize_nf4_blocks(x)
    out = {"packed": packed}
    if not double_quant:
        out["absmax"] = absmax
        return out
    out["offset"] = mean_f32(absmax) if offset is None else f32(offset)
    out["absmax_q"], out["nested"] = quantize_nested((absmax - out["offset"]).astype(f32), code)
    return out


def dequantize(packed, absmax_dq, n):
    nib = np.empty(packed.size * 2, dtype=np.uint8)
    nib[0::2] = packed >> 4
    nib[1::2] = packed & 15
    nib = nib[:n]
    return (NF4_CODE[nib] * np.repeat(absmax_dq, BLOCK)[:n]).astype(f32)


# ---------------------------------------------------------------- cases
def cases():
    import torch
    g = torch.Generator().manual_seed(1234)
    out = []
    w = torch.randn(3, 64, generator=g) * 0.02
    out.append(("randn_3x64", w.numpy()))
    w = torch.randn(5, 100, generator=g) * 0.05  # 500 = 7 blocks of 64 + 52
    out.append(("randn_5x100", w.numpy()))
    w = torch.randn(2, 128, generator=g)
    w[0, 64:] = 0.0  # the second block is all zero
    w[1, :64] = 0.0  # and so is the third
    out.append(("zero_blocks_2x128", w.numpy()))
    # Block 0: absmax exactly 1, so x * (1/absmax) == x: the 15 midpoints, their float
    # neighbours on either side, the codes themselves, and both zeros.
    mids = NF4_MID
    row = np.concatenate([[1.0], mids, np.nextafter(mids, f32(2)), np.nextafter(mids, f32(-2)),
                          NF4_CODE[:-1], [0.0, -0.0, -1.0]]).astype(f32)
    assert row.size == 64, row.size
    blk1 = (torch.randn(64, generator=g) * 3).numpy()
    out.append(("midpoints_2x64", np.stack([row, blk1]).astype(f32)))
    out.append(("odd_3x7", (torch.randn(3, 7, generator=g) * 0.1).numpy()))
    # Every block has the same absmax: absmax - offset == 0, the nested block's absmax is 0.
    w = torch.rand(4, 64, generator=g) * 2 - 1
    w[:, 5] = 2.5
    out.append(("equal_absmax_4x64", w.numpy()))
    return out


def bnb_run(x, double_quant):
    import torch
    import bitsandbytes.functional as F
    t = torch.from_numpy(x.copy())
    packed, st = F.quantize_4bit(t, blocksize=BLOCK, compress_statistics=double_quant,
                                 quant_type="nf4")
    r = {"packed": packed.reshape(-1).numpy().copy()}
    if double_quant:
        r["absmax_q"] = st.absmax.numpy().copy()
        r["nested"] = st.state2.absmax.numpy().copy()
        r["offset"] = f32(st.offset.item())
        r["map"] = st.state2.code.numpy().copy()
    else:
        r["absmax"] = st.absmax.numpy().copy()
    r["dequant"] = F.dequantize_4bit(packed, st).reshape(-1).numpy().copy()
    r["code"] = st.code.numpy().copy()
    return r


def bnb_dynamic_map():
    import bitsandbytes.functional as F
    return F.create_dynamic_map(signed=True).numpy().astype(f32)


def absmax_dq(res, code):
    if "absmax" in res:
        return res["absmax"]
    nested = np.repeat(res["nested"], NESTED_BLOCK)[: res["absmax_q"].size]
    return (code[res["absmax_q"]] * nested + res["offset"]).astype(f32)


def reconcile(name, dq, x, code):
    """bitsandbytes' output, checked against the CUDA emulation; fields where the CPU backend
    departs from the CUDA kernels (see the header) take the emulated value."""
    b = bnb_run(x, dq)
    assert np.array_equal(b["code"], NF4_CODE), "NF4 code table"
    if dq:
        assert np.array_equal(b["map"], code), "nested map"
    # Use bitsandbytes' offset: torch's float32 mean may differ in the last bit from ours,
    # and the C++ test checks the offset separately.
    e = emulate_cuda(x.reshape(-1), dq, code, b.get("offset"))
    res = {}
    for k in e:
        if np.array_equal(np.asarray(e[k]), np.asarray(b[k])):
            res[k] = b[k]
            continue
        diff = np.nonzero(np.asarray(e[k]).reshape(-1) != np.asarray(b[k]).reshape(-1))[0]
        print(f"  {name} dq={dq}: field {k} differs from the CPU backend at {diff.tolist()}: "
              f"bnb-cpu {np.asarray(b[k]).reshape(-1)[diff].tolist()} "
              f"cuda-emulation {np.asarray(e[k]).reshape(-1)[diff].tolist()}")
        res[k] = e[k]
    if "offset" in res and mean_f32(absmax_of(x)) != res["offset"]:
        print(f"  {name}: torch mean {res['offset']!r} vs float64-accumulated {mean_f32(absmax_of(x))!r}")
    deq = dequantize(res["packed"], absmax_dq(res, code), x.size)
    if not np.array_equal(deq, b["dequant"]):
        diff = np.nonzero(deq != b["dequant"])[0]
        print(f"  {name} dq={dq}: dequant differs from bnb-cpu at {diff.size} elements "
              f"(follows the fields above)")
    res["dequant"] = deq
    return res


def absmax_of(x):
    x = x.reshape(-1)
    return np.array([np.max(np.abs(x[i:i + BLOCK])) for i in range(0, x.size, BLOCK)], dtype=f32)


def write_case(fh, name, x, shape, dq, res, with_input, with_dequant):
    nb = name.encode()
    fh.write(struct.pack("<I", len(nb)) + nb)
    fh.write(struct.pack("<IIII", int(dq), int(with_input), int(with_dequant), len(shape)))
    fh.write(struct.pack(f"<{len(shape)}q", *shape))
    fh.write(struct.pack("<Q", x.size))
    if with_input:
        fh.write(x.astype("<f4").tobytes())
    fh.write(struct.pack("<Q", res["packed"].size) + res["packed"].astype(np.uint8).tobytes())
    if dq:
        fh.write(struct.pack("<Q", res["absmax_q"].size) + res["absmax_q"].astype(np.uint8).tobytes())
        fh.write(struct.pack("<Q", res["nested"].size) + res["nested"].astype("<f4").tobytes())
        fh.write(struct.pack("<f", res["offset"]))
    else:
        fh.write(struct.pack("<Q", res["absmax"].size) + res["absmax"].astype("<f4").tobytes())
    if with_dequant:
        fh.write(res["dequant"].astype("<f4").tobytes())


def main():
    code = bnb_dynamic_map()
    assert code[127] == 0 and code[255] == 1 and code[0] == f32(-0.99296875)
    entries = []
    for name, x in cases():
        x = np.ascontiguousarray(x, dtype=f32)
        for dq in (True, False):
            entries.append((f"{name}/{'dq' if dq else 'plain'}", x, list(x.shape), dq,
                            reconcile(name, dq, x, code), True, True))
    # A larger weight (625 blocks: three nested blocks, the last short), regenerated by the test.
    shape = [40, 1000]
    x = hash_input(40 * 1000)
    entries.append(("hash_40x1000/dq", x, shape, True,
                    reconcile("hash_40x1000", True, x.reshape(shape), code), False, False))
    path = Path(__file__).with_name("nf4_reference.bin")
    with open(path, "wb") as fh:
        fh.write(b"NF4REF01" + struct.pack("<I", len(entries)))
        fh.write(NF4_CODE.astype("<f4").tobytes() + code.astype("<f4").tobytes())
        for e in entries:
            write_case(fh, *e)
    print(f"wrote {path} ({path.stat().st_size} bytes, {len(entries)} cases)")


if __name__ == "__main__":
    sys.exit(main())
