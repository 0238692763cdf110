// Byte-level BPE encode and decode (see bpe_tokenizer.h for the pipeline); loading the
// tokenizer.json is in bpe_tokenizer_load.cpp.
#include "models/bpe_tokenizer.h"

#include <algorithm>
#include <atomic>
#include <climits>
#include <queue>
#include <unordered_map>

#include "engine/error.h"
#include "models/bpe_tokenizer_impl.h"

namespace models {

using bpe_detail::AddedMatcher;
using bpe_detail::Regex;
using bpe_detail::Stage;

namespace bpe_detail {

Regex::~Regex() {
  if (code) pcre2_code_free(code);
}

uint64_t next_instance_id() {
  static std::atomic<uint64_t> next{1};
  return next++;
}

void AddedMatcher::add(const AddedToken* t) {
  if (t->content.empty()) return;
  const auto b = static_cast<unsigned char>(t->content[0]);
  by_first[b].push_back(t);
  // Longest first, so that the first candidate that matches is the longest.
  std::stable_sort(by_first[b].begin(), by_first[b].end(),
                   [](const AddedToken* x, const AddedToken* y) {
                     return x->content.size() > y->content.size();
                   });
  empty = false;
}

namespace {
bool ascii_space(char c) { return c == ' ' || (c >= '\t' && c <= '\r'); }
// A word character for single_word: ASCII letters, digits, '_', and any non-ASCII byte
// (the package's \w is Unicode; this errs towards "inside a word").
bool word_byte(char c) {
  return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' ||
         static_cast<unsigned char>(c) >= 0x80;
}
}  // namespace

AddedMatcher::Match AddedMatcher::find(std::string_view s, size_t from) const {
  if (empty) return {};
  for (size_t i = from; i < s.size(); ++i) {
    for (const AddedToken* t : by_first[static_cast<unsigned char>(s[i])])
      if (s.compare(i, t->content.size(), t->content) == 0) return {i, i + t->content.size(), t};
  }
  return {};
}

std::vector<AddedSplit> split_added(std::string_view s, const AddedMatcher& matcher, bool specials) {
  // As the package's find_matches: the matches of find_iter (non-overlapping), some
  // discarded (special ones when not wanted; single_word ones inside a word), lstrip and
  // rstrip widening the kept ones over ASCII whitespace.
  std::vector<AddedSplit> splits;
  size_t start_offset = 0;
  for (AddedMatcher::Match m = matcher.find(s, 0); m.token; m = matcher.find(s, m.end)) {
    const AddedToken& t = *m.token;
    if (t.special && !specials) continue;
    if (t.single_word && ((m.begin > 0 && word_byte(s[m.begin - 1])) ||
                          (m.end < s.size() && word_byte(s[m.end]))))
      continue;
    if (m.begin < start_offset) continue;  // inside what an rstrip took
    size_t b = m.begin, e = m.end;
    if (t.lstrip) {
      while (b > start_offset && ascii_space(s[b - 1])) --b;
    }
    if (t.rstrip)
      while (e < s.size() && ascii_space(s[e])) ++e;
    if (b > start_offset) splits.push_back({start_offset, b, -1});
    splits.push_back({b, e, t.id});
    start_offset = e;
  }
  if (start_offset < s.size()) splits.push_back({start_offset, s.size(), -1});
  return splits;
}

}  // namespace bpe_detail

namespace {

// Looks words up by string_view without building a std::string.
struct StringHash {
  using is_transparent = void;
  size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
};

// Per-thread matching state and word cache of one tokenizer: PCRE2 match data is not
// shareable between threads, and the cache is written on every new word.
struct ThreadState {
  pcre2_match_data* match = nullptr;
  pcre2_match_context* context = nullptr;
  pcre2_jit_stack* jit_stack = nullptr;
  std::unordered_map<std::string, std::vector<int32_t>, StringHash, std::equal_to<>> cache;
  ThreadState() {
    match = pcre2_match_data_create(1, nullptr);
    context = pcre2_match_context_create(nullptr);
    // Long whitespace or letter runs backtrack deeply through (?!\S): a stack that grows
    // to 8 MiB instead of the default 32 KiB.
    jit_stack = pcre2_jit_stack_create(64 * 1024, 8 * 1024 * 1024, nullptr);
    ENGINE_CHECK(match && context && jit_stack, "PCRE2: out of memory");
    pcre2_jit_stack_assign(context, nullptr, jit_stack);
  }
  ~ThreadState() {
    pcre2_jit_stack_free(jit_stack);
    pcre2_match_context_free(context);
    pcre2_match_data_free(match);
  }
  ThreadState(const ThreadState&) = delete;
  ThreadState& operator=(const ThreadState&) = delete;
};

ThreadState& thread_state(uint64_t instance) {
  thread_local std::unordered_map<uint64_t, std::unique_ptr<ThreadState>> states;
  auto it = states.find(instance);
  if (it != states.end()) return *it->second;
  if (states.size() >= 8) states.clear();  // tokenizers come and go; keep this bounded
  return *states.emplace(instance, std::make_unique<ThreadState>()).first->second;
}

constexpr size_t kCacheMaxWord = 128;
constexpr size_t kCacheMaxEntries = 1 << 17;

}  // namespace

// One encode call: the tokenizer's tables and this thread's state.
class BpeEncoder {
 public:
  BpeEncoder(const BpeTokenizer::Impl& m, std::vector<int32_t>* out)
      : m_(m), st_(thread_state(m.instance)), out_(*out) {}

  // Cuts `text` at added tokens (two passes, as the package), pre-tokenizes and merges
  // the rest.
  void run(std::string_view text, bool specials) {
    if (m_.raw.is_empty() && m_.norm.is_empty()) return stage(0, text);
    for (const bpe_detail::AddedSplit& a : bpe_detail::split_added(text, m_.raw, specials)) {
      if (a.id >= 0) {
        out_.push_back(a.id);
        continue;
      }
      const std::string_view gap = text.substr(a.begin, a.end - a.begin);
      for (const bpe_detail::AddedSplit& b : bpe_detail::split_added(gap, m_.norm, specials)) {
        if (b.id >= 0)
          out_.push_back(b.id);
        else
          stage(0, gap.substr(b.begin, b.end - b.begin));
      }
    }
  }

 private:
  // Pre-tokenizer stage k on one piece; past the last stage, BPE.
  void stage(size_t k, std::string_view piece) {
    if (piece.empty()) return;
    if (k == m_.stages.size()) return bpe(piece);
    const Stage& st = m_.stages[k];
    if (st.kind == Stage::kByteLevel) {
      if (st.add_prefix_space && piece[0] != ' ') {
        std::string spaced(1, ' ');
        spaced.append(piece);
        return byte_level(k, st, spaced);
      }
      return byte_level(k, st, piece);
    }
    split(k, *st.regex, st.remove_matches, piece);
  }

  void byte_level(size_t k, const Stage& st, std::string_view piece) {
    if (st.regex)
      split(k, *st.regex, false, piece);
    else
      stage(k + 1, piece);
  }

  // Split with a regex, behaviour Isolated (matches and the gaps between them are pieces)
  // or Removed (only the gaps).
  void split(size_t k, const Regex& re, bool remove_matches, std::string_view s) {
    const auto* subject = reinterpret_cast<PCRE2_SPTR>(s.data());
    size_t pos = 0, last = 0;
    while (pos <= s.size()) {
      const int rc = re.jit ? pcre2_jit_match(re.code, subject, s.size(), pos, 0, st_.match,
                                              st_.context)
                            : pcre2_match(re.code, subject, s.size(), pos, PCRE2_NO_UTF_CHECK,
                                          st_.match, st_.context);
      if (rc == PCRE2_ERROR_NOMATCH) break;
      if (rc < 0) {
        PCRE2_UCHAR msg[256];
        pcre2_get_error_message(rc, msg, sizeof(msg));
        throw engine::Error(std::string("tokenizer: pre-tokenizer regex failed: ") +
                            reinterpret_cast<const char*>(msg));
      }
      const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(st_.match);
      const size_t b = ov[0], e = ov[1];
      if (b > last) stage(k + 1, s.substr(last, b - last));
      if (!remove_matches) stage(k + 1, s.substr(b, e - b));
      last = e;
      if (e > b) {
        pos = e;
      } else {  // an empty match: step over one character
        pos = e + 1;
        while (pos < s.size() && (static_cast<unsigned char>(s[pos]) & 0xC0) == 0x80) ++pos;
      }
    }
    if (last < s.size()) stage(k + 1, s.substr(last));
  }

  void bpe(std::string_view word) {
    if (m_.ignore_merges) {
      const auto it = m_.vocab.find(word);
      if (it != m_.vocab.end()) return out_.push_back(it->second);
    }
    const bool cacheable = word.size() <= kCacheMaxWord;
    if (cacheable) {
      const auto it = st_.cache.find(word);
      if (it != st_.cache.end()) {
        out_.insert(out_.end(), it->second.begin(), it->second.end());
        return;
      }
    }
    const size_t start = out_.size();
    syms_.clear();
    for (char c : word) {
      const int32_t id = m_.byte_id[static_cast<unsigned char>(c)];
      if (id >= 0)
        syms_.push_back(id);
      else if (m_.unk_id >= 0)
        syms_.push_back(m_.unk_id);  // a vocab without that byte (the package skips it
                                     // when there is no unk token, as here)
    }
    if (syms_.size() <= 32)
      merge_scan();
    else
      merge_heap();
    out_.insert(out_.end(), syms_.begin(), syms_.end());
    if (cacheable) {
      if (st_.cache.size() >= kCacheMaxEntries) st_.cache.clear();
      st_.cache.emplace(std::string(word), std::vector<int32_t>(out_.begin() + start, out_.end()));
    }
  }

  // Short words: repeatedly merge the lowest-ranked adjacent pair, leftmost on ties.
  void merge_scan() {
    while (syms_.size() > 1) {
      int32_t best_rank = INT32_MAX, best_new = -1;
      size_t best = 0;
      for (size_t i = 0; i + 1 < syms_.size(); ++i) {
        const auto it = m_.merges.find(bpe_detail::pair_key(syms_[i], syms_[i + 1]));
        if (it != m_.merges.end() && it->second.rank < best_rank) {
          best_rank = it->second.rank;
          best_new = it->second.new_id;
          best = i;
        }
      }
      if (best_new < 0) break;
      syms_[best] = best_new;
      syms_.erase(syms_.begin() + static_cast<std::ptrdiff_t>(best) + 1);
    }
  }

  // Long words: the same order with a heap of candidate merges over a linked list, as
  // the package's Word::merge_all (stale entries are skipped when popped).
  void merge_heap() {
    struct Cand {
      int32_t rank, pos, new_id;
      bool operator>(const Cand& o) const { return rank != o.rank ? rank > o.rank : pos > o.pos; }
    };
    const int n = static_cast<int>(syms_.size());
    std::vector<int> prev(n), next(n);
    std::vector<char> alive(n, 1);
    for (int i = 0; i < n; ++i) {
      prev[i] = i - 1;
      next[i] = i + 1 < n ? i + 1 : -1;
    }
    std::priority_queue<Cand, std::vector<Cand>, std::greater<Cand>> heap;
    auto push = [&](int a) {
      if (a < 0 || next[a] < 0) return;
      const auto it = m_.merges.find(bpe_detail::pair_key(syms_[a], syms_[next[a]]));
      if (it != m_.merges.end()) heap.push({it->second.rank, a, it->second.new_id});
    };
    for (int i = 0; i + 1 < n; ++i) push(i);
    while (!heap.empty()) {
      const Cand c = heap.top();
      heap.pop();
      if (!alive[c.pos] || next[c.pos] < 0) continue;
      const int r = next[c.pos];
      const auto it = m_.merges.find(bpe_detail::pair_key(syms_[c.pos], syms_[r]));
      if (it == m_.merges.end() || it->second.new_id != c.new_id) continue;  // stale
      syms_[c.pos] = c.new_id;
      alive[r] = 0;
      next[c.pos] = next[r];
      if (next[r] >= 0) prev[next[r]] = c.pos;
      push(prev[c.pos]);
      push(c.pos);
    }
    size_t w = 0;
    for (int i = 0; i >= 0; i = next[i]) syms_[w++] = syms_[i];
    syms_.resize(w);
  }

  const BpeTokenizer::Impl& m_;
  ThreadState& st_;
  std::vector<int32_t>& out_;
  std::vector<int32_t> syms_;
};

namespace {
// The text the packages would see: invalid UTF-8 replaced (see utf8_replace_invalid).
std::string_view clean_text(std::string_view text, std::string* storage) {
  if (utf8_valid(text)) return text;
  *storage = utf8_replace_invalid(text);
  return *storage;
}
}  // namespace

BpeTokenizer::BpeTokenizer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
BpeTokenizer::~BpeTokenizer() = default;

std::vector<int32_t> BpeTokenizer::encode(std::string_view text) const {
  std::string storage;
  std::vector<int32_t> ids;
  ids.reserve(text.size() / 3 + 4);
  BpeEncoder(*impl_, &ids).run(clean_text(text, &storage), /*specials=*/false);
  return ids;
}

std::vector<int32_t> BpeTokenizer::encode_hf(std::string_view text, bool add_special_tokens) const {
  std::string storage;
  std::vector<int32_t> ids;
  ids.reserve(text.size() / 3 + 4);
  if (add_special_tokens) ids = impl_->template_prefix;
  BpeEncoder(*impl_, &ids).run(clean_text(text, &storage), /*specials=*/true);
  if (add_special_tokens)
    ids.insert(ids.end(), impl_->template_suffix.begin(), impl_->template_suffix.end());
  return ids;
}

std::string BpeTokenizer::decode(const std::vector<int32_t>& ids) const {
  std::string bytes;
  for (int32_t id : ids) {
    if (id < 0 || id >= vocab_size())
      throw engine::Error("BpeTokenizer::decode: token id " + std::to_string(id) +
                          " is outside [0, " + std::to_string(vocab_size()) + ")");
    bytes += impl_->id_bytes[static_cast<size_t>(id)];
  }
  return utf8_valid(bytes) ? bytes : utf8_replace_invalid(bytes);
}

int64_t BpeTokenizer::vocab_size() const { return static_cast<int64_t>(impl_->id_bytes.size()); }
int32_t BpeTokenizer::bos_id() const { return impl_->bos; }
int32_t BpeTokenizer::eos_id() const { return impl_->eos; }

std::optional<int32_t> BpeTokenizer::special_token_id(std::string_view name) const {
  const auto it = impl_->added_by_content.find(std::string(name));
  if (it == impl_->added_by_content.end()) return std::nullopt;
  return it->second;
}

}  // namespace models
