// BpeTokenizer's tables (private to bpe_tokenizer*.cpp): what tokenizer.json becomes.
#pragma once
#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <array>
#include <deque>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "models/bpe_tokenizer.h"

namespace models {
namespace bpe_detail {

// A compiled pattern (UTF, Unicode properties), JIT-compiled where PCRE2 can.
struct Regex {
  pcre2_code* code = nullptr;
  bool jit = false;
  Regex() = default;
  Regex(const Regex&) = delete;
  Regex& operator=(const Regex&) = delete;
  ~Regex();
};

// One pre-tokenizer stage: Split (regex; Isolated, or Removed when remove_matches), or
// ByteLevel (prefix space, then its GPT-2 regex when use_regex; the byte map itself is
// implicit: BPE works on bytes).
struct Stage {
  enum Kind { kSplit, kByteLevel } kind = kSplit;
  std::shared_ptr<Regex> regex;  // null for ByteLevel without use_regex
  bool remove_matches = false;
  bool add_prefix_space = false;
};

struct AddedToken {
  std::string content;
  int32_t id = -1;
  bool special = false, normalized = false, lstrip = false, rstrip = false, single_word = false;
};

// Leftmost, then longest, match of a set of added tokens (the package's Aho-Corasick
// with MatchKind::LeftmostLongest).
class AddedMatcher {
 public:
  struct Match {
    size_t begin = 0, end = 0;
    const AddedToken* token = nullptr;
  };
  void add(const AddedToken* t);
  bool is_empty() const { return empty; }
  Match find(std::string_view s, size_t from) const;

 private:
  std::array<std::vector<const AddedToken*>, 256> by_first{};
  bool empty = true;
};

// A piece of a text cut at added tokens: the token's id, or -1 for text between them.
struct AddedSplit {
  size_t begin, end;
  int32_t id;
};
// `s` cut at the added tokens of `matcher`, special ones only when `specials`.
std::vector<AddedSplit> split_added(std::string_view s, const AddedMatcher& matcher, bool specials);

struct Merge {
  int32_t rank, new_id;
};
inline uint64_t pair_key(int32_t a, int32_t b) {
  return (static_cast<uint64_t>(static_cast<uint32_t>(a)) << 32) | static_cast<uint32_t>(b);
}

uint64_t next_instance_id();

}  // namespace bpe_detail

struct BpeTokenizer::Impl {
  // BPE vocab by the token's bytes (keys view into key_storage).
  std::deque<std::string> key_storage;
  std::unordered_map<std::string_view, int32_t> vocab;
  std::array<int32_t, 256> byte_id{};  // the single-byte tokens, -1 if absent
  std::unordered_map<uint64_t, bpe_detail::Merge> merges;
  bool ignore_merges = false;
  int32_t unk_id = -1;
  std::vector<bpe_detail::Stage> stages;
  std::deque<bpe_detail::AddedToken> added;
  std::unordered_map<std::string, int32_t> added_by_content;
  // Added tokens with normalized false (raw, matched first) and true (norm).
  bpe_detail::AddedMatcher raw, norm;
  std::vector<int32_t> template_prefix, template_suffix;
  std::vector<std::string> id_bytes;  // what decode writes for each id
  int32_t bos = -1, eos = -1;
  uint64_t instance = bpe_detail::next_instance_id();  // keys the per-thread state
};

}  // namespace models
