#!/usr/bin/env python3
"""The `tokenizers` package (Rust) on the corpus bench_tokenizer writes: single-thread
MB/s (Tokenizer.encode per document) and all-cores MB/s (encode_batch). bench_tokenizer runs
this in the same run when python3 can import tokenizers; by hand:

    python3 bench/bench_tokenizer_hf.py MODEL_DIR CORPUS.txt [IDS_OUT.txt]

With IDS_OUT, the package's ids of every document are written there (one line each), for
bench_tokenizer to check that its own are identical.
"""
import os
import sys
import time


def main():
    try:
        from tokenizers import Tokenizer
    except ImportError:
        print("tokenizers: not installed")
        return 0
    model_dir, corpus = sys.argv[1], sys.argv[2]
    tok = Tokenizer.from_file(os.path.join(model_dir, "tokenizer.json"))
    with open(corpus, encoding="utf-8", newline="") as f:
        lines = f.read().split("\x1e")  # the documents (they hold newlines)
    mb = sum(len(s.encode("utf-8")) for s in lines) / 1e6
    for s in lines[:200]:  # warm-up
        tok.encode(s, add_special_tokens=False)
    # CPU time as well as wall time: on a shared machine the CPU time is the fair figure
    # (bench_tokenizer's encode/1thread reports its thread's CPU time).
    best = best_cpu = float("inf")
    for _ in range(3):
        t, c = time.perf_counter(), time.process_time()
        for s in lines:
            tok.encode(s, add_special_tokens=False)
        best = min(best, time.perf_counter() - t)
        best_cpu = min(best_cpu, time.process_time() - c)
    print(f"tokenizers {sys.modules['tokenizers'].__version__} single-thread: {mb / best_cpu:.2f} MB/s "
          f"(CPU time), {mb / best:.2f} MB/s (wall)")
    best = float("inf")
    for _ in range(3):
        t = time.perf_counter()
        tok.encode_batch(lines, add_special_tokens=False)
        best = min(best, time.perf_counter() - t)
    print(f"tokenizers encode_batch, {os.cpu_count()} cores: {mb / best:.2f} MB/s")
    if len(sys.argv) > 3:
        with open(sys.argv[3], "w") as f:
            for enc in tok.encode_batch(lines, add_special_tokens=False):
                f.write(" ".join(map(str, enc.ids)) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
