// Replays every kept fuzzing input (tests/fuzz/regressions/<target>/, inputs that once
// crashed a reader, and the seed corpus tests/fuzz/corpus/<target>/) through the fuzz
// targets' entry points (tests/support/fuzz_entries.h) in the ordinary build, so a
// regression shows up in CI even where clang and libFuzzer are not installed. In
// tools_tests: the checkpoint target's entry runs train70b's checkpoint reader.
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <random>
#include <string>
#include <vector>

#include "tests/support/fuzz_entries.h"

namespace {

namespace fs = std::filesystem;

const fs::path kFuzz = fs::path(ENGINE_SOURCE_DIR) / "tests/fuzz";

std::vector<std::vector<uint8_t>> read_dir(const fs::path& dir) {
  std::vector<fs::path> paths;
  if (fs::is_directory(dir))
    for (const auto& e : fs::directory_iterator(dir)) paths.push_back(e.path());
  std::sort(paths.begin(), paths.end());  // a fixed order: the smoke below is reproducible
  std::vector<std::vector<uint8_t>> out;
  for (const fs::path& p : paths) {
    std::ifstream in(p, std::ios::binary);
    out.emplace_back((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  }
  return out;
}

// One random edit of the kinds libFuzzer's mutator makes: flip a bit, set a byte to an
// interesting value, insert or erase a run, truncate, or splice in part of another input.
void mutate(std::vector<uint8_t>& b, const std::vector<std::vector<uint8_t>>& pool, std::mt19937_64& rng) {
  auto pick = [&](size_t n) { return n == 0 ? size_t{0} : static_cast<size_t>(rng() % n); };
  static constexpr uint8_t kInteresting[] = {0, 1, 0x7f, 0x80, 0xff, '"', '{', '}', '[', ']', ',', ':', '\\', '\n', '-', '9'};
  switch (rng() % 6) {
    case 0: if (!b.empty()) b[pick(b.size())] ^= static_cast<uint8_t>(1u << (rng() % 8)); break;
    case 1: if (!b.empty()) b[pick(b.size())] = kInteresting[pick(std::size(kInteresting))]; break;
    case 2: b.insert(b.begin() + static_cast<std::ptrdiff_t>(pick(b.size() + 1)), 1 + pick(8), kInteresting[pick(std::size(kInteresting))]); break;
    case 3: if (!b.empty()) { const size_t at = pick(b.size()); b.erase(b.begin() + static_cast<std::ptrdiff_t>(at), b.begin() + static_cast<std::ptrdiff_t>(std::min(b.size(), at + 1 + pick(16)))); } break;
    case 4: b.resize(pick(b.size() + 1)); break;
    default: {
      const std::vector<uint8_t>& other = pool[pick(pool.size())];
      if (other.empty()) break;
      const size_t from = pick(other.size()), len = 1 + pick(std::min<size_t>(64, other.size() - from));
      b.insert(b.begin() + static_cast<std::ptrdiff_t>(pick(b.size() + 1)), other.begin() + static_cast<std::ptrdiff_t>(from),
               other.begin() + static_cast<std::ptrdiff_t>(from + len));
    }
  }
}

int replay(const std::string& kind) {
  int files = 0;
  for (const testing_support::fuzz::Target& t : testing_support::fuzz::targets()) {
    const fs::path dir = kFuzz / kind / t.name;
    if (!fs::is_directory(dir)) continue;
    for (const auto& e : fs::directory_iterator(dir)) {
      std::ifstream in(e.path(), std::ios::binary);
      const std::vector<uint8_t> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
      SCOPED_TRACE(e.path().string());
      t.run(bytes.data(), bytes.size());  // must return (an engine::Error is caught inside)
      ++files;
    }
  }
  return files;
}

TEST(FuzzRegressions, EveryKeptCrashInputIsHandled) {
  const int n = replay("regressions");
  std::printf("[ replayed ] %d regression inputs\n", n);
}

TEST(FuzzRegressions, EverySeedInputIsHandled) {
  for (const testing_support::fuzz::Target& t : testing_support::fuzz::targets())
    EXPECT_TRUE(fs::is_directory(kFuzz / "corpus" / t.name)) << "no seed corpus for " << t.name;
  EXPECT_GT(replay("corpus"), 20) << "the seed corpus is missing (tests/fuzz/run.sh corpus)";
}

// CI's brief fuzzing of every target (issue 13): seeded random mutations of the seed corpus
// (1-4 edits each) through the entry points, in the ordinary build. No coverage guidance and
// no sanitizers: that is tests/fuzz/run.sh, on demand; this catches what a quick mutation
// finds (a crash, an exception other than engine::Error, a hang) on every CI run.
TEST(FuzzSmoke, SeededMutationsOfTheCorpusAreHandled) {
  constexpr int kPerTarget = 300;
  for (const testing_support::fuzz::Target& t : testing_support::fuzz::targets()) {
    const std::vector<std::vector<uint8_t>> pool = read_dir(kFuzz / "corpus" / t.name);
    ASSERT_FALSE(pool.empty()) << "no seed corpus for " << t.name;
    std::mt19937_64 rng(0x5eed0000 + std::hash<std::string>{}(t.name));
    for (int i = 0; i < kPerTarget; ++i) {
      std::vector<uint8_t> input = pool[static_cast<size_t>(rng() % pool.size())];
      for (int edits = 1 + static_cast<int>(rng() % 4); edits > 0; --edits) mutate(input, pool, rng);
      SCOPED_TRACE(std::string(t.name) + " mutation " + std::to_string(i));
      t.run(input.data(), input.size());
    }
    std::printf("[ fuzz smoke ] %s: %d mutated inputs handled\n", t.name, kPerTarget);
  }
}

}  // namespace
