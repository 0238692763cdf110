#!/usr/bin/env bash
# Fuzzes the readers of user files (docs/train70b.md, "Fuzzing"): tests/fuzz/run.sh SECONDS [TARGET...]
# Builds the libFuzzer targets with clang under ASan + UBSan in build-fuzz (CPU only), runs
# each named target (default: all) for SECONDS over a scratch copy of its seed corpus
# (tests/fuzz/corpus/<target>/), prints its executions and any crash, and exits non-zero
# when one crashed, leaked, hit UBSan or hung. A crash's input is kept in
# build-fuzz/findings/<target>/: fix the reader, then copy the input to
# tests/fuzz/regressions/<target>/ so the ordinary test suite replays it.
# Environment: FUZZ_BUILD_DIR (build-fuzz), FUZZ_OPT (-O1), FUZZ_JOBS (nproc).
set -euo pipefail
cd "$(dirname "$0")/../.."
all_targets=(safetensors hf_config jsonl_dataset tokenizer_json checkpoint)
if [[ $# -lt 1 || ! ( $1 =~ ^[0-9]+$ || $1 == corpus ) ]]; then
  echo "usage: tests/fuzz/run.sh SECONDS [TARGET...]  (targets: ${all_targets[*]})" >&2
  echo "       tests/fuzz/run.sh corpus   (rewrites the seed corpus, tests/fuzz/make_corpus.cpp)" >&2
  exit 2
fi
seconds=$1
shift
targets=("$@")
[[ ${#targets[@]} -eq 0 ]] && targets=("${all_targets[@]}")
for t in "${targets[@]}"; do
  [[ " ${all_targets[*]} " == *" $t "* ]] || { echo "run.sh: unknown target '$t' (targets: ${all_targets[*]})" >&2; exit 2; }
done

build=${FUZZ_BUILD_DIR:-build-fuzz}
jobs=${FUZZ_JOBS:-$(nproc)}
# Every library instrumented for coverage (fuzzer-no-link) and checked; only the targets
# link libFuzzer's main (tests/fuzz/CMakeLists.txt). NDEBUG stays off: asserts fire too.
flags="-fsanitize=address,undefined,fuzzer-no-link -fno-sanitize-recover=all -fno-omit-frame-pointer -gline-tables-only"
link=""
if [[ $(clang++ -dumpversion | cut -d. -f1) -lt 15 ]]; then
  # clang 14 has no x86 _Float16 (the engine's host f16 type): the storage-only __fp16
  # converts the same (round to nearest even) through compiler-rt's builtins.
  flags+=" -D_Float16=__fp16"
  link=$(clang++ --rtlib=compiler-rt -print-libgcc-file-name)
fi
launcher=()
command -v ccache >/dev/null && launcher=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache -DCMAKE_C_COMPILER_LAUNCHER=ccache)
cmake -S . -B "$build" -DCMAKE_C_COMPILER=clang -DCMAKE_CXX_COMPILER=clang++ -DENGINE_CUDA=OFF \
  -DENGINE_FUZZ=ON -DENGINE_BUILD_TESTS=OFF -DENGINE_BUILD_BENCH=OFF -DCMAKE_BUILD_TYPE=Fuzz \
  -DCMAKE_CXX_FLAGS="$flags" -DCMAKE_CXX_FLAGS_FUZZ="${FUZZ_OPT:--O1}" -DCMAKE_CXX_STANDARD_LIBRARIES="$link" \
  "${launcher[@]}" >/dev/null
if [[ $seconds == corpus ]]; then
  cmake --build "$build" -j"$jobs" --target fuzz_make_corpus
  "$build/tests/fuzz/fuzz_make_corpus" "$PWD"
  exit 0
fi
cmake --build "$build" -j"$jobs" --target "${targets[@]/#/fuzz_}"

export ASAN_OPTIONS=halt_on_error=1:detect_leaks=1:abort_on_error=0
export UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
failed=()
for t in "${targets[@]}"; do
  corpus="$scratch/$t"
  findings="$build/findings/$t"
  mkdir -p "$corpus" "$findings"
  cp tests/fuzz/corpus/"$t"/* "$corpus"/
  [[ -d tests/fuzz/regressions/$t ]] && cp tests/fuzz/regressions/"$t"/* "$corpus"/ 2>/dev/null || true
  log="$build/findings/$t.log"
  status=0
  # -timeout: an input that takes 10 s is a hang; -rss_limit_mb: one that takes 2 GB a bug too.
  "$build/tests/fuzz/fuzz_$t" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 \
    -print_final_stats=1 -artifact_prefix="$findings/" "$corpus" >"$log" 2>&1 || status=$?
  execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo "?")
  if [[ $status -eq 0 ]]; then
    printf 'fuzz %-15s %8s executions in %ss, no crash\n' "$t" "$execs" "$seconds"
  else
    printf 'fuzz %-15s CRASH (exit %d); input kept in %s/, log %s:\n' "$t" "$status" "$findings" "$log"
    grep -E 'ERROR: |runtime error|SUMMARY|Test unit written' "$log" | head -n 8 | sed 's/^/    /'
    failed+=("$t")
  fi
done
if [[ ${#failed[@]} -gt 0 ]]; then
  echo "fuzz: crashes in: ${failed[*]}" >&2
  exit 1
fi
