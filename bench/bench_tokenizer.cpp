// Tokenizer throughput (its own program, bench_tokenizer, built in every build; no GPU):
//   encode/1thread   Tokenizer::encode_hf(line, false) over a generated multilingual
//                    corpus (English, German, French, Russian, Chinese, Japanese, Korean,
//                    Arabic, Hindi, code, numbers, emoji, whitespace runs), one thread;
//                    MB/s (10^6 bytes per CPU second) is the figure to compare.
//   encode_batch     models::encode_batch on all cores, as dataset tokenization runs.
// The corpus is written to a file, and after the benchmarks bench_tokenizer_hf.py measures
// the `tokenizers` package on the same file and tokenizer when python3 can import it, so
// one run gives both figures.
//   bench_tokenizer [--tokenizer=DIR] [--corpus_mb=N] [google benchmark flags]
// DIR defaults to the test tokenizer (tests/data/tokenizer_reference/bpe, 806 tokens);
// give a real Llama 3 directory for its figures.
#include <benchmark/benchmark.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include <unistd.h>

#include "models/tokenizer.h"

namespace {

std::string g_dir = std::string(ENGINE_SOURCE_DIR) + "/tests/data/tokenizer_reference/bpe";
double g_corpus_mb = 4.0;

// Deterministic documents of 1-3 KB mixing scripts the way web text does.
std::vector<std::string> make_corpus(double megabytes) {
  static const char* kWords[] = {
      "the", "model", "learns", "from", "data", "and", "it's", "we're", "they'll", "don't",
      "Größe", "Straße", "über", "café", "naïve", "résumé", "l'été", "français",
      "Привет", "мир", "данные", "обучение", "модель", "это",
      "你好", "世界", "数据", "模型", "训练", "中文文本", "日本語", "テキスト", "です", "ありがとう",
      "안녕하세요", "세계", "한국어", "مرحبا", "بالعالم", "नमस्ते", "दुनिया",
      "def", "return", "x+y;", "i++", "{}", "==", "->", "std::vector<int>",
      "😀", "🎉", "👍🏽", "👨‍👩‍👧", "🇫🇷", "...", "!!", "?", ",", "(", ")", "\"quoted\""};
  const size_t n_words = sizeof(kWords) / sizeof(kWords[0]);
  std::mt19937_64 rng(1234);
  std::vector<std::string> docs;
  size_t total = 0;
  const auto target = static_cast<size_t>(megabytes * 1e6);
  while (total < target) {
    std::string d;
    const size_t len = 1000 + rng() % 2000;
    while (d.size() < len) {
      const uint64_t r = rng() % 100;
      if (r < 8) {
        d += std::to_string(rng() % 10000000);
      } else if (r < 11) {
        d += (r == 8 ? "  " : r == 9 ? "\t" : "   ");  // whitespace runs
      } else if (r < 13) {
        d += ".\n\n";
      } else {
        d += kWords[rng() % n_words];
      }
      d += ' ';
    }
    total += d.size() + 1;
    docs.push_back(std::move(d));
  }
  return docs;
}

const std::vector<std::string>& corpus() {
  static const std::vector<std::string> docs = make_corpus(g_corpus_mb);
  return docs;
}

const models::Tokenizer& tokenizer() {
  static const std::unique_ptr<models::Tokenizer> tok = models::load_tokenizer(g_dir);
  return *tok;
}

int64_t corpus_bytes() {
  int64_t b = 0;
  for (const std::string& d : corpus()) b += static_cast<int64_t>(d.size());
  return b;
}

void BM_EncodeSingleThread(benchmark::State& state) {
  const models::Tokenizer& tok = tokenizer();
  int64_t tokens = 0;
  for (auto _ : state) {
    tokens = 0;
    for (const std::string& d : corpus()) tokens += static_cast<int64_t>(tok.encode_hf(d, false).size());
    benchmark::DoNotOptimize(tokens);
  }
  state.SetBytesProcessed(state.iterations() * corpus_bytes());  // shown in MiB/s
  state.counters["MB/s"] = benchmark::Counter(1e-6 * static_cast<double>(state.iterations() * corpus_bytes()),
                                              benchmark::Counter::kIsRate);  // 10^6 bytes, as the script
  state.counters["bytes_per_token"] = static_cast<double>(corpus_bytes()) / static_cast<double>(tokens);
}
// bytes_per_second from the thread's CPU time (fair on a shared machine; the wall time is
// in the Time column).
BENCHMARK(BM_EncodeSingleThread)->Name("encode/1thread")->Unit(benchmark::kMillisecond);

void BM_EncodeBatch(benchmark::State& state) {
  const models::Tokenizer& tok = tokenizer();
  for (auto _ : state) benchmark::DoNotOptimize(models::encode_batch(tok, corpus(), true, false, 0));
  state.SetBytesProcessed(state.iterations() * corpus_bytes());
  state.counters["MB/s"] = benchmark::Counter(1e-6 * static_cast<double>(state.iterations() * corpus_bytes()),
                                              benchmark::Counter::kIsRate);
  state.counters["threads"] = std::thread::hardware_concurrency();
}
BENCHMARK(BM_EncodeBatch)->Name("encode_batch/all_cores")->Unit(benchmark::kMillisecond)->UseRealTime();

}  // namespace

int main(int argc, char** argv) {
  std::vector<char*> rest;
  for (int i = 0; i < argc; ++i) {
    const std::string a = argv[i];
    if (a.rfind("--tokenizer=", 0) == 0)
      g_dir = a.substr(12);
    else if (a.rfind("--corpus_mb=", 0) == 0)
      g_corpus_mb = std::stod(a.substr(12));
    else
      rest.push_back(argv[i]);
  }
  int n = static_cast<int>(rest.size());
  benchmark::Initialize(&n, rest.data());
  if (benchmark::ReportUnrecognizedArguments(n, rest.data())) return 1;
  benchmark::AddCustomContext("tokenizer", g_dir);
  benchmark::AddCustomContext("corpus_bytes", std::to_string(corpus_bytes()));
  tokenizer();  // loaded before timing
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();

  // The Python package on the same corpus; documents separated by U+001E.
  const std::string path =
      (std::filesystem::temp_directory_path() / ("bench_tokenizer_corpus_" + std::to_string(::getpid()) + ".txt"))
          .string();
  {
    std::ofstream out(path, std::ios::binary);
    for (size_t i = 0; i < corpus().size(); ++i) out << (i ? "\x1e" : "") << corpus()[i];
  }
  const std::string ids_path = path + ".ids";
  const std::string cmd = "python3 '" + std::string(ENGINE_SOURCE_DIR) + "/bench/bench_tokenizer_hf.py' '" +
                          g_dir + "' '" + path + "' '" + ids_path + "'";
  std::printf("\nSame corpus, the tokenizers package: %s\n", cmd.c_str());
  std::fflush(stdout);
  const int rc = std::system(cmd.c_str());
  if (rc != 0) std::printf("(python3 or the script failed: status %d)\n", rc);
  // The package's ids, when it wrote them, against ours: a bench of a tokenizer that
  // disagrees would measure nothing.
  std::ifstream ids_in(ids_path);
  if (ids_in) {
    const auto ours = models::encode_batch(tokenizer(), corpus(), true, false, 0);
    size_t docs = 0, same = 0;
    std::string line;
    while (std::getline(ids_in, line) && docs < ours.size()) {
      std::string mine;
      for (size_t i = 0; i < ours[docs].size(); ++i) {
        if (i) mine += ' ';
        mine += std::to_string(ours[docs][i]);
      }
      same += mine == line;
      ++docs;
    }
    std::printf("ids identical to the package's: %zu of %zu documents\n", same, corpus().size());
  }
  std::filesystem::remove(path);
  std::filesystem::remove(ids_path);
  return 0;
}
