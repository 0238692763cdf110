// Safetensors reading and writing (the Hugging Face weight format).
//
// File layout: 8-byte little-endian header length N, N bytes of UTF-8 JSON (an object,
// possibly padded with spaces), then the raw tensor bytes. Header entries are
//   "name": {"dtype": "BF16", "shape": [...], "data_offsets": [begin, end]}
// with offsets relative to the start of the data, plus an optional "__metadata__"
// string->string map.
//
// SafetensorsFile opens one file and validates the whole header up front (the checks of
// the reference "safe" reader: header size, JSON, duplicate names, dtypes, contiguous
// offsets, byte sizes, exact file size), so every later lookup is cheap and cannot fail on
// a malformed file. Tensor bytes are read with pread, not through a mapping: a file that
// another process truncates while it is open gives an error naming the file and tensor,
// where a mapped copy would die with SIGBUS. FIFOs and devices are refused before they
// can block. SafetensorsIndex opens a model that is
// either one file or shards listed in model.safetensors.index.json. write_safetensors
// writes atomically (temporary name, fsync, rename).
//
// Every error is an engine::Error with a one-line message naming the file and, where
// there is one, the tensor: "<path>: <what> (tensor '<name>')". Reading errors are
// engine::InputError: the files are the user's.
#pragma once
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "engine/dtype.h"
#include "engine/tensor.h"

namespace engine::io {

// One tensor's header entry, validated.
struct TensorInfo {
  std::string name;
  std::string dtype_name;      // as spelled in the file: "BF16", "I64", ...
  std::optional<DType> dtype;  // the engine dtype, when there is one (F32, BF16, F16, I32, U8)
  size_t element_size = 0;     // bytes per element of dtype_name
  std::vector<int64_t> shape;  // any rank; load() accepts rank <= Shape::kMaxRank
  int64_t numel = 1;
  uint64_t begin = 0;  // byte offsets relative to the start of the data section
  uint64_t end = 0;
  uint64_t nbytes() const { return end - begin; }
};

// The safetensors spelling of an engine dtype; throws for NF4 (store packed NF4 as U8).
const char* safetensors_dtype_name(DType dtype);

class SafetensorsFile {
 public:
  // Maps and validates `path`; throws engine::Error on any problem.
  explicit SafetensorsFile(const std::string& path);
  ~SafetensorsFile();
  SafetensorsFile(SafetensorsFile&& other) noexcept;
  SafetensorsFile& operator=(SafetensorsFile&& other) noexcept;
  SafetensorsFile(const SafetensorsFile&) = delete;
  SafetensorsFile& operator=(const SafetensorsFile&) = delete;

  const std::string& path() const { return path_; }
  // Tensor names in file order (the order of their data, which is header order for
  // every known writer).
  const std::vector<std::string>& names() const { return names_; }
  bool has(const std::string& name) const { return index_.count(name) != 0; }
  const TensorInfo& info(const std::string& name) const;  // throws if absent
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  uint64_t header_size() const { return header_size_; }  // N, the JSON length

  // Reads the tensor's bytes into `out` (exactly info(name).nbytes() long): lets a
  // streaming loader convert or quantize from one staging buffer. Throws if the file was
  // truncated since it was opened. Safe to call from several threads at once.
  void read(const std::string& name, std::span<uint8_t> out) const;
  // A fresh CPU tensor holding a copy; errors for dtypes the engine lacks and rank > 4.
  // Safe to call from several threads at once.
  Tensor load(const std::string& name) const;

 private:
  void close();
  [[noreturn]] void fail(const std::string& what, const std::string& tensor = {}) const;
  void parse_header(const char* json, size_t length);

  std::string path_;
  int fd_ = -1;
  uint64_t file_size_ = 0;  // when opened
  uint64_t header_size_ = 0;
  std::vector<std::string> names_;
  std::vector<TensorInfo> infos_;  // parallel to names_
  std::unordered_map<std::string, size_t> index_;
  std::map<std::string, std::string> metadata_;
};

// A model's weights: one safetensors file, or a directory of shards described by
// model.safetensors.index.json ("weight_map": tensor name -> shard file name).
// `path` may be a .safetensors file, an index .json file, or a directory holding
// model.safetensors.index.json (preferred) or model.safetensors. Each shard is opened
// once; every mapped name is checked to exist in its shard when opening.
class SafetensorsIndex {
 public:
  explicit SafetensorsIndex(const std::string& path);

  // The file that describes the set: the index .json, or the single .safetensors.
  const std::string& path() const { return path_; }
  const std::vector<std::string>& names() const { return names_; }  // index (or file) order
  bool has(const std::string& name) const { return where_.count(name) != 0; }
  const TensorInfo& info(const std::string& name) const;
  void read(const std::string& name, std::span<uint8_t> out) const;
  Tensor load(const std::string& name) const;
  // The shard holding `name` (to read its metadata or path).
  const SafetensorsFile& file(const std::string& name) const;
  size_t num_files() const { return files_.size(); }

 private:
  void open_index(const std::string& index_path);

  std::string path_;
  std::vector<std::unique_ptr<SafetensorsFile>> files_;
  std::vector<std::string> names_;
  std::unordered_map<std::string, size_t> where_;  // name -> files_ index
};

// Writes `tensors` (in the given order) and `metadata` to `path` atomically: the bytes go
// to "<path>.tmp.<pid>", are fsynced, then renamed over `path`, so `path` is either the old
// file or the complete new one. Device tensors are copied to the host one at a time.
// Duplicate or reserved names, undefined tensors and NF4 tensors are rejected before
// anything is written. The header is padded with spaces to a multiple of 8 bytes so
// the data section starts 8-byte aligned.
void write_safetensors(const std::string& path,
                       const std::vector<std::pair<std::string, Tensor>>& tensors,
                       const std::map<std::string, std::string>& metadata = {});

}  // namespace engine::io
