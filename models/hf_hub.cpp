#include "models/hf_hub.h"

#include <cctype>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <system_error>

#include "engine/error.h"

namespace models {

namespace fs = std::filesystem;

namespace {
std::string env(const char* name) {
  const char* v = std::getenv(name);
  return v && *v ? v : "";
}

bool id_part_ok(const std::string& s) {
  if (s.empty() || s[0] == '.' || s.size() > 96) return false;
  for (char c : s)
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_' || c == '.')) return false;
  return s.find("..") == std::string::npos;
}

bool usable(const fs::path& snapshot) {
  std::error_code ec;
  return fs::is_directory(snapshot, ec) && fs::exists(snapshot / "config.json", ec);
}
}  // namespace

std::string hf_hub_cache_dir() {
  if (std::string v = env("HF_HUB_CACHE"); !v.empty()) return v;
  if (std::string v = env("HF_HOME"); !v.empty()) return (fs::path(v) / "hub").string();
  const std::string home = env("HOME");
  return (fs::path(home.empty() ? "." : home) / ".cache" / "huggingface" / "hub").string();
}

bool is_hf_model_id(const std::string& text) {
  const size_t slash = text.find('/');
  if (slash == std::string::npos || text.find('/', slash + 1) != std::string::npos) return false;
  return id_part_ok(text.substr(0, slash)) && id_part_ok(text.substr(slash + 1));
}

std::string resolve_hf_model(const std::string& id) {
  ENGINE_INPUT_CHECK(is_hf_model_id(id), "--model ", id,
                     ": not a directory, a preset or a Hugging Face model id (org/name)");
  const std::string cache = hf_hub_cache_dir();
  const fs::path repo = fs::path(cache) / ("models--" + id.substr(0, id.find('/')) + "--" +
                                           id.substr(id.find('/') + 1));
  std::error_code ec;
  // refs/main holds the commit hash of the snapshot the last download of main produced.
  std::ifstream ref(repo / "refs" / "main");
  std::string revision;
  if (ref && std::getline(ref, revision) && !revision.empty() &&
      revision.find('/') == std::string::npos && usable(repo / "snapshots" / revision))
    return (repo / "snapshots" / revision).string();
  fs::path newest;
  fs::file_time_type newest_time{};
  for (fs::directory_iterator it(repo / "snapshots", ec), end; !ec && it != end; it.increment(ec)) {
    if (!usable(it->path())) continue;
    const fs::file_time_type t = fs::last_write_time(it->path(), ec);
    if (newest.empty() || t > newest_time) newest = it->path(), newest_time = t;
  }
  ENGINE_INPUT_CHECK(!newest.empty(), "--model ", id, ": not in the Hugging Face cache (", cache,
                     "); download it first: huggingface-cli download ", id);
  return newest.string();
}

}  // namespace models
