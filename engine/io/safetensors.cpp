// Safetensors reader (pread + full header validation), sharded-model index, and the dtype
// name mapping; the writer is in safetensors_writer.cpp. See safetensors.h for the format
// and the error conventions.
#include "engine/io/safetensors.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <limits>
#include <nlohmann/json.hpp>
#include <system_error>
#include <unordered_set>

#include "engine/io/file_read.h"

namespace engine::io {

// Tensor bytes are copied as they are; safetensors data is little-endian.
static_assert(std::endian::native == std::endian::little, "safetensors I/O assumes little-endian");

namespace {

// ordered_json keeps the file's key order (nlohmann::json would sort the keys).
using ojson = nlohmann::ordered_json;

constexpr uint64_t kMaxHeaderBytes = 100'000'000;  // the reference reader's limit
constexpr const char* kMetadataKey = "__metadata__";

struct DtypeSpec {
  const char* name;
  size_t size;
  std::optional<DType> dtype;
};

// Every byte-sized safetensors dtype, so files holding dtypes the engine lacks still
// validate (and only load() of such a tensor fails).
constexpr DtypeSpec kDtypes[] = {
    {"BOOL", 1, std::nullopt},    {"U8", 1, DType::U8},         {"I8", 1, std::nullopt},
    {"F8_E5M2", 1, std::nullopt}, {"F8_E4M3", 1, std::nullopt}, {"F8_E8M0", 1, std::nullopt},
    {"I16", 2, std::nullopt},     {"U16", 2, std::nullopt},     {"F16", 2, DType::F16},
    {"BF16", 2, DType::BF16},     {"I32", 4, DType::I32},       {"U32", 4, std::nullopt},
    {"F32", 4, DType::F32},       {"I64", 8, std::nullopt},     {"U64", 8, std::nullopt},
    {"F64", 8, std::nullopt},     {"C64", 8, std::nullopt},
};

const DtypeSpec* find_dtype(const std::string& name) {
  for (const DtypeSpec& d : kDtypes)
    if (name == d.name) return &d;
  return nullptr;
}

std::string shape_text(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}


// "<file>: <what> (tensor '<name>')", the form of every error here.
std::string message(const std::string& file, const std::string& what,
                    const std::string& tensor = {}) {
  return one_line(file + ": " + (tensor.empty() ? what : what + " (tensor '" + tensor + "')"));
}

// Where a duplicate key was found: the key and the keys of the objects around it.
struct Duplicate {
  std::string key;
  std::vector<std::string> parents;  // outermost first; empty for a top-level key
};

// Parses JSON, also finding duplicate keys (nlohmann silently keeps one of them).
// A syntax error throws "<file>: <context>: invalid JSON at byte K: <reason>", K counting
// from 0 within the JSON text.
ojson parse_json(const char* text, size_t length, const std::string& file, const char* context,
                 std::optional<Duplicate>& duplicate) {
  struct Frame {
    bool object;
    std::unordered_set<std::string> keys;
    std::string key;  // the most recent key in this object
  };
  std::vector<Frame> stack;
  auto callback = [&](int, ojson::parse_event_t event, ojson& parsed) {
    switch (event) {
      case ojson::parse_event_t::object_start: stack.push_back({true, {}, {}}); break;
      case ojson::parse_event_t::array_start: stack.push_back({false, {}, {}}); break;
      case ojson::parse_event_t::object_end:
      case ojson::parse_event_t::array_end:
        if (!stack.empty()) stack.pop_back();
        break;
      case ojson::parse_event_t::key: {
        Frame& f = stack.back();
        f.key = parsed.get<std::string>();
        if (!f.keys.insert(f.key).second && !duplicate) {
          Duplicate d{f.key, {}};
          for (size_t i = 0; i + 1 < stack.size(); ++i)
            if (stack[i].object) d.parents.push_back(stack[i].key);
          duplicate = std::move(d);
        }
        break;
      }
      case ojson::parse_event_t::value: break;
    }
    return true;
  };
  auto invalid = [&](size_t byte, const std::string& reason) {
    throw InputError(message(file, std::string(context) + ": invalid JSON at byte " +
                                       std::to_string(byte) + ": " + one_line(reason, true)));
  };
  // nlohmann stops at a NUL as if the input ended there, which would hide what follows.
  if (const void* nul = std::memchr(text, 0, length))
    invalid(static_cast<size_t>(static_cast<const char*>(nul) - text), "NUL byte");
  try {
    return ojson::parse(text, text + length, callback);
  } catch (const ojson::parse_error& e) {
    // what() is "[json.exception.parse_error.101] parse error at line L, column C: <reason>";
    // keep the reason and report the byte offset instead.
    std::string reason = e.what();
    if (size_t p = reason.find("] "); p != std::string::npos) reason = reason.substr(p + 2);
    if (reason.rfind("parse error", 0) == 0)
      if (size_t p = reason.find(": "); p != std::string::npos) reason = reason.substr(p + 2);
    invalid(e.byte > 0 ? e.byte - 1 : 0, reason);  // e.byte counts from 1
  } catch (const ojson::exception& e) {
    // Anything else the parser throws (a number such as 1e400 overflowing a double:
    // out_of_range.406) carries no position; name the key being read instead.
    std::string where;
    for (const Frame& f : stack)
      if (f.object && !f.key.empty()) where += (where.empty() ? "" : ".") + f.key;
    std::string reason = e.what();
    if (size_t p = reason.find("] "); p != std::string::npos) reason = reason.substr(p + 2);
    throw InputError(message(file, std::string(context) + ": invalid JSON" +
                                       (where.empty() ? "" : " in '" + where + "'") + ": " +
                                       one_line(reason, true)));
  }
  return {};
}

// A non-negative JSON integer, or nullopt.
std::optional<uint64_t> as_unsigned(const ojson& v) {
  if (v.is_number_unsigned()) return v.get<uint64_t>();
  if (v.is_number_integer() && v.get<int64_t>() >= 0)
    return static_cast<uint64_t>(v.get<int64_t>());
  return std::nullopt;
}

Shape make_shape(const std::vector<int64_t>& d) {
  switch (d.size()) {
    case 0: return Shape{};
    case 1: return Shape{d[0]};
    case 2: return Shape{d[0], d[1]};
    case 3: return Shape{d[0], d[1], d[2]};
    case 4: return Shape{d[0], d[1], d[2], d[3]};
  }
  throw Error("make_shape: rank " + std::to_string(d.size()) + " exceeds 4");
}

}  // namespace

const char* safetensors_dtype_name(DType dtype) {
  switch (dtype) {
    case DType::F32: return "F32";
    case DType::BF16: return "BF16";
    case DType::F16: return "F16";
    case DType::I32: return "I32";
    case DType::U8: return "U8";
    case DType::NF4: break;
  }
  throw Error("NF4 has no safetensors dtype: store the packed bytes as a U8 tensor");
}

// ---------------------------------------------------------------------------------------
// SafetensorsFile

void SafetensorsFile::fail(const std::string& what, const std::string& tensor) const {
  throw InputError(message(path_, what, tensor));
}

SafetensorsFile::SafetensorsFile(const std::string& path) : path_(path) {
  // No mapping: a mapped file that shrinks while open (another process rewriting it) kills
  // the reader with SIGBUS; pread sees the end of the file and reports it.
  fd_ = open_regular_file(path, &file_size_);
  try {
    if (file_size_ < 8)
      fail("truncated: the file has " + std::to_string(file_size_) +
           " bytes, fewer than the 8-byte header length");
    uint64_t n = 0;
    if (pread_full(fd_, &n, 8, 0, path_) != 8) fail("truncated while reading the header length");
    if (n > kMaxHeaderBytes)
      fail("header length " + std::to_string(n) + " exceeds the 100 MB limit");
    if (8 + n > file_size_)
      fail("header length " + std::to_string(n) + " runs past the end of the " +
           std::to_string(file_size_) + "-byte file");
    header_size_ = n;
    std::string header(static_cast<size_t>(n), '\0');
    if (pread_full(fd_, header.data(), header.size(), 8, path_) != header.size())
      fail("truncated while reading the header");
    parse_header(header.data(), header.size());
  } catch (...) {
    close();
    throw;
  }
}

SafetensorsFile::~SafetensorsFile() { close(); }

SafetensorsFile::SafetensorsFile(SafetensorsFile&& o) noexcept
    : path_(std::move(o.path_)),
      fd_(std::exchange(o.fd_, -1)),
      file_size_(std::exchange(o.file_size_, 0)),
      header_size_(o.header_size_),
      names_(std::move(o.names_)),
      infos_(std::move(o.infos_)),
      index_(std::move(o.index_)),
      metadata_(std::move(o.metadata_)) {}

SafetensorsFile& SafetensorsFile::operator=(SafetensorsFile&& o) noexcept {
  if (this != &o) {
    close();
    path_ = std::move(o.path_);
    fd_ = std::exchange(o.fd_, -1);
    file_size_ = std::exchange(o.file_size_, 0);
    header_size_ = o.header_size_;
    names_ = std::move(o.names_);
    infos_ = std::move(o.infos_);
    index_ = std::move(o.index_);
    metadata_ = std::move(o.metadata_);
  }
  return *this;
}

void SafetensorsFile::close() {
  if (fd_ >= 0) ::close(fd_);
  fd_ = -1;
}

void SafetensorsFile::parse_header(const char* json, size_t length) {
  // The reference reader insists on '{' first (no leading whitespace or BOM).
  if (length == 0 || json[0] != '{') fail("header: not a JSON object (must start with '{')");
  std::optional<Duplicate> dup;
  ojson doc = parse_json(json, length, path_, "header", dup);
  if (!doc.is_object()) fail("header: not a JSON object");
  if (dup) {
    if (dup->parents.empty()) fail("duplicate tensor name", dup->key);
    fail("duplicate key '" + dup->key + "'", dup->parents.front());
  }

  std::vector<TensorInfo> infos;
  for (const auto& [name, entry] : doc.items()) {
    if (name == kMetadataKey) {
      if (entry.is_null()) continue;
      if (!entry.is_object()) fail("__metadata__ is not a string-to-string map");
      for (const auto& [k, v] : entry.items()) {
        if (!v.is_string()) fail("__metadata__ value of '" + k + "' is not a string");
        metadata_[k] = v.get<std::string>();
      }
      continue;
    }
    if (!entry.is_object()) fail("header entry is not an object", name);
    for (const auto& [k, v] : entry.items())
      if (k != "dtype" && k != "shape" && k != "data_offsets")
        fail("unexpected key '" + k + "'", name);

    TensorInfo ti;
    ti.name = name;
    auto dt = entry.find("dtype");
    if (dt == entry.end() || !dt->is_string()) fail("missing or non-string 'dtype'", name);
    ti.dtype_name = dt->get<std::string>();
    const DtypeSpec* spec = find_dtype(ti.dtype_name);
    if (!spec) fail("unknown dtype '" + ti.dtype_name + "'", name);
    ti.dtype = spec->dtype;
    ti.element_size = spec->size;

    auto sh = entry.find("shape");
    if (sh == entry.end() || !sh->is_array()) fail("missing or non-array 'shape'", name);
    uint64_t numel = 1;
    bool overflow = false;
    for (const ojson& d : *sh) {
      if (d.is_number_integer() && !d.is_number_unsigned() && d.get<int64_t>() < 0)
        fail("negative dimension " + std::to_string(d.get<int64_t>()) + " in 'shape'", name);
      std::optional<uint64_t> u = as_unsigned(d);
      if (!u || *u > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()))
        fail("'shape' holds " + d.dump() + ", not a dimension", name);
      ti.shape.push_back(static_cast<int64_t>(*u));
      overflow = overflow || __builtin_mul_overflow(numel, *u, &numel);
    }
    if (overflow || numel > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()))
      fail("shape " + shape_text(ti.shape) + " has too many elements (overflow)", name);
    ti.numel = static_cast<int64_t>(numel);

    auto off = entry.find("data_offsets");
    if (off == entry.end() || !off->is_array() || off->size() != 2)
      fail("missing 'data_offsets' or not a [begin, end] pair", name);
    std::optional<uint64_t> b = as_unsigned((*off)[0]), e = as_unsigned((*off)[1]);
    if (!b || !e) fail("'data_offsets' are not non-negative integers", name);
    if (*e < *b)
      fail("data_offsets end " + std::to_string(*e) + " is before begin " + std::to_string(*b),
           name);
    ti.begin = *b;
    ti.end = *e;

    uint64_t bytes = 0;
    if (__builtin_mul_overflow(numel, static_cast<uint64_t>(spec->size), &bytes))
      fail("byte size of shape " + shape_text(ti.shape) + " x " + ti.dtype_name + " overflows",
           name);
    if (bytes != ti.nbytes())
      fail("data_offsets span " + std::to_string(ti.nbytes()) + " bytes but shape " +
               shape_text(ti.shape) + " of " + ti.dtype_name + " needs " + std::to_string(bytes),
           name);
    infos.push_back(std::move(ti));
  }

  // The data must be one contiguous run from offset 0, each byte owned by one tensor.
  std::stable_sort(infos.begin(), infos.end(), [](const TensorInfo& a, const TensorInfo& b) {
    return a.begin != b.begin ? a.begin < b.begin : a.end < b.end;
  });
  uint64_t expected = 0;
  for (size_t i = 0; i < infos.size(); ++i) {
    const TensorInfo& ti = infos[i];
    if (ti.begin < expected)
      fail("data_offsets [" + std::to_string(ti.begin) + ", " + std::to_string(ti.end) +
               "] overlap tensor '" + infos[i - 1].name + "'",
           ti.name);
    if (ti.begin > expected)
      fail(i == 0 ? "data starts at offset " + std::to_string(ti.begin) + ", not 0"
                  : "gap of " + std::to_string(ti.begin - expected) + " bytes before the data",
           ti.name);
    expected = ti.end;
  }
  const uint64_t data_bytes = file_size_ - 8 - header_size_;
  if (expected > data_bytes)
    fail("data ends at byte " + std::to_string(8 + header_size_ + expected) + " but the file has " +
             std::to_string(file_size_) + " bytes (truncated)",
         infos.back().name);
  if (expected < data_bytes)
    fail(std::to_string(data_bytes - expected) + " trailing bytes after the data");

  for (TensorInfo& ti : infos) {
    index_.emplace(ti.name, names_.size());
    names_.push_back(ti.name);
  }
  infos_ = std::move(infos);
}

const TensorInfo& SafetensorsFile::info(const std::string& name) const {
  auto it = index_.find(name);
  if (it == index_.end()) fail("no such tensor", name);
  return infos_[it->second];
}

void SafetensorsFile::read(const std::string& name, std::span<uint8_t> out) const {
  const TensorInfo& ti = info(name);
  if (out.size() != ti.nbytes())
    throw Error(message(path_, "read into " + std::to_string(out.size()) + " bytes, the tensor has " +
                                   std::to_string(ti.nbytes()),
                        name));
  const uint64_t at = 8 + header_size_ + ti.begin;
  if (pread_full(fd_, out.data(), out.size(), at, path_) != out.size()) {
    struct stat st {};
    const std::string now =
        ::fstat(fd_, &st) == 0 ? std::to_string(st.st_size) + " bytes" : "fewer bytes";
    fail("the file was truncated while open: it had " + std::to_string(file_size_) +
             " bytes when opened and has " + now + " now",
         name);
  }
}

Tensor SafetensorsFile::load(const std::string& name) const {
  const TensorInfo& ti = info(name);
  if (!ti.dtype) fail("dtype " + ti.dtype_name + " is not supported by the engine", name);
  if (ti.shape.size() > static_cast<size_t>(Shape::kMaxRank))
    fail("rank " + std::to_string(ti.shape.size()) + " exceeds the engine's maximum of " +
             std::to_string(Shape::kMaxRank),
         name);
  Tensor t = Tensor::empty(make_shape(ti.shape), *ti.dtype);
  read(name, {static_cast<uint8_t*>(t.raw_data()), static_cast<size_t>(ti.nbytes())});
  return t;
}

// ---------------------------------------------------------------------------------------
// SafetensorsIndex

SafetensorsIndex::SafetensorsIndex(const std::string& path) {
  namespace fs = std::filesystem;
  std::error_code ec;
  std::string single = path;
  if (fs::is_directory(path, ec)) {
    fs::path index = fs::path(path) / "model.safetensors.index.json";
    if (fs::exists(index, ec)) {
      open_index(index.string());
      return;
    }
    single = (fs::path(path) / "model.safetensors").string();
    if (!fs::exists(single, ec))
      throw InputError(
          message(path, "no model.safetensors.index.json or model.safetensors in this directory"));
  } else if (fs::path(path).extension() == ".json") {
    open_index(path);
    return;
  }
  path_ = single;
  files_.push_back(std::make_unique<SafetensorsFile>(single));
  names_ = files_[0]->names();
  for (const std::string& n : names_) where_.emplace(n, 0);
}

void SafetensorsIndex::open_index(const std::string& index_path) {
  namespace fs = std::filesystem;
  path_ = index_path;
  auto fail = [&](const std::string& what, const std::string& tensor = {}) {
    throw InputError(message(index_path, what, tensor));
  };
  const std::string text = read_small_file(index_path, kMaxHeaderBytes);
  std::optional<Duplicate> dup;
  ojson doc = parse_json(text.data(), text.size(), index_path, "index", dup);
  if (!doc.is_object()) fail("not a JSON object");
  auto wm = doc.find("weight_map");
  if (wm == doc.end() || !wm->is_object()) fail("missing or non-object 'weight_map'");
  if (dup) {
    if (dup->parents.size() == 1 && dup->parents[0] == "weight_map")
      fail("duplicate tensor name in 'weight_map'", dup->key);
    fail("duplicate key '" + dup->key + "'");
  }

  const fs::path dir = fs::path(index_path).parent_path();
  std::unordered_map<std::string, size_t> shard_of;  // shard file name -> files_ index
  for (const auto& [name, shard] : wm->items()) {
    if (!shard.is_string()) fail("'weight_map' value is not a file name", name);
    const std::string file = shard.get<std::string>();
    // Shards live beside the index: refuse paths that would reach elsewhere.
    const fs::path rel(file);
    if (file.empty() || rel.is_absolute() ||
        std::any_of(rel.begin(), rel.end(), [](const fs::path& c) { return c == ".."; }))
      fail("shard '" + file + "' is not a file name inside the model directory", name);
    auto it = shard_of.find(file);
    if (it == shard_of.end()) {
      try {
        files_.push_back(std::make_unique<SafetensorsFile>((dir / rel).string()));
      } catch (const Error& e) {
        fail(std::string("shard of tensor '") + name + "': " + e.what());
      }
      it = shard_of.emplace(file, files_.size() - 1).first;
    }
    if (!files_[it->second]->has(name)) fail("not in its shard '" + file + "'", name);
    where_.emplace(name, it->second);
    names_.push_back(name);
  }
}

const SafetensorsFile& SafetensorsIndex::file(const std::string& name) const {
  auto it = where_.find(name);
  if (it == where_.end()) throw InputError(message(path_, "no such tensor", name));
  return *files_[it->second];
}

const TensorInfo& SafetensorsIndex::info(const std::string& name) const {
  return file(name).info(name);
}

void SafetensorsIndex::read(const std::string& name, std::span<uint8_t> out) const {
  file(name).read(name, out);
}

Tensor SafetensorsIndex::load(const std::string& name) const { return file(name).load(name); }

}  // namespace engine::io
