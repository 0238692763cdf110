#!/usr/bin/env python3
"""Device peak against sequence length for Llama-3-8B and Llama-3-70B, from dry runs.

Runs `train70b --dry-run` (docs/memory.md, "Dry run") for each model and length with the
flags below, finds by bisection the longest length that fits the --gpu, and writes
  docs/memory_sweep.json  every run's memory.json figures and flags
  docs/memory_peak.svg    the chart of docs/memory.md (device peak, GiB, per length, with
                          the GPU's budget line)
and prints the Markdown table of docs/memory.md. Standard library only.

  tools/memory_sweep.py [--train70b build/tools/train70b] [--gpu a100-80gb] [--docs docs]
  tools/memory_sweep.py --from-json    (chart and table again from docs/memory_sweep.json)

Takes about ten minutes on two cores (each 70B dry run is 15-30 s).
"""
import argparse
import json
import math
import os
import subprocess
import sys
import tempfile

MODELS = ["llama3-8b", "llama3-70b"]
LENGTHS = [2048, 4096, 8192, 16384, 32768, 65536, 131072]
# One training step, LoRA r 16 on all seven linears (the defaults), batch 1, every memory
# mechanism on (docs/memory.md); no held-out evaluation, which is not part of the step.
FLAGS = ["--batch-size", "1", "--max-steps", "1", "--eval-fraction", "0", "--offload-checkpoints", "on",
         "--embedding-on-host", "on", "--optim", "paged_adamw_32bit"]
GIB = float(1 << 30)


def dry_run(train70b, model, length, gpu):
    with tempfile.TemporaryDirectory() as out:
        cmd = [train70b, "--dry-run", "--model", "synthetic:" + model, "--max-seq-len", str(length),
               "--gpu", gpu, "--output", os.path.join(out, "run")] + FLAGS
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode not in (0, 3):  # 3: measured, does not fit
            sys.exit("memory_sweep: %s failed (%d): %s" % (" ".join(cmd), done.returncode, done.stderr.strip()))
        with open(os.path.join(out, "run", "memory.json")) as f:
            m = json.load(f)
    row = {k: m[k] for k in ("peak_device_bytes", "peak_device_block_bytes", "planned_device_bytes",
                             "peak_host_pinned_bytes", "max_gpu_mem_bytes", "fits")}
    row.update(model=model, tokens=length)
    print("  %-10s %7d tokens: device peak %6.2f GiB (planned %6.2f), pinned host %7.2f GiB, %s" % (
        model, length, row["peak_device_bytes"] / GIB, row["planned_device_bytes"] / GIB,
        row["peak_host_pinned_bytes"] / GIB, "fits" if row["fits"] else "does not fit"), file=sys.stderr)
    return row


def longest_fitting(train70b, model, gpu, low, step=4096):
    """The longest multiple of `step` that fits, by doubling then bisection from `low` (which fits)."""
    fits = dry_run(train70b, model, low, gpu)
    assert fits["fits"], "the start of the search must fit"
    high = low * 2
    while True:
        r = dry_run(train70b, model, high, gpu)
        if not r["fits"]:
            break
        low, fits, high = high, r, high * 2
    while high - low > step:
        mid = (low + high) // 2 // step * step
        r = dry_run(train70b, model, mid, gpu)
        if r["fits"]:
            low, fits = mid, r
        else:
            high = mid
    return fits


def chart(rows, longest, budget, gpu):
    """An SVG line chart: peak GiB (y) against log2 tokens (x), one line per model."""
    w, h, left, right, top, bottom = 720, 420, 70, 150, 40, 60
    xs = sorted({r["tokens"] for r in rows + longest})
    x_lo, x_hi = math.log2(xs[0]), math.log2(xs[-1])
    y_hi = max(max(r["peak_device_bytes"] for r in rows + longest), budget) / GIB * 1.1
    px = lambda t: left + (math.log2(t) - x_lo) / (x_hi - x_lo) * (w - left - right)
    py = lambda g: h - bottom - g / y_hi * (h - top - bottom)
    out = ['<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" font-family="sans-serif" '
           'font-size="12">' % (w, h), '<rect width="100%" height="100%" fill="white"/>',
           '<text x="%d" y="22" font-size="15">Device peak of one training step, dry run on %s</text>' % (left, gpu)]
    for g in range(0, int(y_hi) + 1, 10):  # y grid
        out.append('<line x1="%d" x2="%d" y1="%.1f" y2="%.1f" stroke="#ddd"/>' % (left, w - right, py(g), py(g)))
        out.append('<text x="%d" y="%.1f" text-anchor="end">%d</text>' % (left - 6, py(g) + 4, g))
    for t in xs:  # x ticks
        out.append('<line x1="%.1f" x2="%.1f" y1="%d" y2="%d" stroke="#ddd"/>' % (px(t), px(t), top, h - bottom))
        label = "%dk" % (t // 1024)
        out.append('<text x="%.1f" y="%d" text-anchor="middle">%s</text>' % (px(t), h - bottom + 16, label))
    out.append('<text x="%d" y="%d" text-anchor="middle">sequence length (tokens, log scale)</text>' % (
        (left + w - right) // 2, h - 18))
    out.append('<text x="16" y="%d" transform="rotate(-90 16 %d)" text-anchor="middle">device peak (GiB)</text>' % (
        (top + h - bottom) // 2, (top + h - bottom) // 2))
    out.append('<line x1="%d" x2="%d" y1="%.1f" y2="%.1f" stroke="#c00" stroke-dasharray="6 4"/>' % (
        left, w - right, py(budget / GIB), py(budget / GIB)))
    out.append('<text x="%d" y="%.1f" fill="#c00">budget %.0f GiB</text>' % (w - right + 6, py(budget / GIB) + 4,
                                                                           budget / GIB))
    for model, color in zip(MODELS, ["#1f77b4", "#2ca02c"]):
        pts = sorted([r for r in rows + longest if r["model"] == model], key=lambda r: r["tokens"])
        path = " ".join("%.1f,%.1f" % (px(r["tokens"]), py(r["peak_device_bytes"] / GIB)) for r in pts)
        out.append('<polyline points="%s" fill="none" stroke="%s" stroke-width="2"/>' % (path, color))
        for r in pts:
            out.append('<circle cx="%.1f" cy="%.1f" r="3" fill="%s"><title>%s %d tokens: %.2f GiB</title></circle>' % (
                px(r["tokens"]), py(r["peak_device_bytes"] / GIB), color, model, r["tokens"],
                r["peak_device_bytes"] / GIB))
        last = pts[-1]
        out.append('<text x="%.1f" y="%.1f" fill="%s" text-anchor="end">%s</text>' % (
            px(last["tokens"]) - 8, py(last["peak_device_bytes"] / GIB) - 8, color, model))
    out.append("</svg>")
    return "\n".join(out) + "\n"


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--train70b", default="build/tools/train70b")
    ap.add_argument("--gpu", default="a100-80gb")
    ap.add_argument("--docs", default="docs")
    ap.add_argument("--from-json", action="store_true",
                    help="no dry runs: redraw the chart and table from the docs' memory_sweep.json")
    a = ap.parse_args()
    sweep = os.path.join(a.docs, "memory_sweep.json")
    if a.from_json:
        with open(sweep) as f:
            saved = json.load(f)
        rows, longest, a.gpu = saved["runs"], saved["longest_fitting"], saved["gpu"]
    else:
        rows = [dry_run(a.train70b, m, t, a.gpu) for m in MODELS for t in LENGTHS]
        longest = [longest_fitting(a.train70b, m, a.gpu,
                                   max(r["tokens"] for r in rows if r["model"] == m and r["fits"]))
                   for m in MODELS]
        with open(sweep, "w") as f:
            json.dump({"gpu": a.gpu, "flags": FLAGS, "runs": rows, "longest_fitting": longest}, f, indent=1)
            f.write("\n")
    budget = rows[0]["max_gpu_mem_bytes"]
    with open(os.path.join(a.docs, "memory_peak.svg"), "w") as f:
        f.write(chart(rows, longest, budget, a.gpu))
    print("| model | tokens | device peak (dry run) | planned | pinned host | fits %s |" % a.gpu)
    print("| --- | ---: | ---: | ---: | ---: | --- |")
    for r in rows + longest:
        mark = " (longest)" if r in longest else ""
        print("| %s | %d%s | %.2f GiB (%.1f GB) | %.2f GiB | %.1f GiB | %s |" % (
            r["model"], r["tokens"], mark, r["peak_device_bytes"] / GIB, r["peak_device_bytes"] / 1e9,
            r["planned_device_bytes"] / GIB, r["peak_host_pinned_bytes"] / GIB, "yes" if r["fits"] else "no"))


if __name__ == "__main__":
    main()
