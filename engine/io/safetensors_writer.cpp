// write_safetensors: validates the tensors, builds the JSON header (padded so the data
// starts 8-byte aligned) and streams header and tensor bytes through an AtomicFileWriter,
// so the target is either the old file or the complete new one. See safetensors.h for the
// format and the error conventions.
#include <bit>
#include <nlohmann/json.hpp>
#include <unordered_set>

#include "engine/error.h"
#include "engine/io/atomic_file.h"
#include "engine/io/safetensors.h"

namespace engine::io {

// Tensor bytes and the header length are written as they are; safetensors is little-endian.
static_assert(std::endian::native == std::endian::little, "safetensors I/O assumes little-endian");

namespace {

// ordered_json keeps insertion order: tensors appear in the header in the caller's order.
using ojson = nlohmann::ordered_json;

constexpr const char* kMetadataKey = "__metadata__";

// "<file>: <what> (tensor '<name>')" on one line, as the reader reports errors.
std::string message(const std::string& file, const std::string& what,
                    const std::string& tensor = {}) {
  return one_line(file + ": " + (tensor.empty() ? what : what + " (tensor '" + tensor + "')"));
}

}  // namespace

void write_safetensors(const std::string& path,
                       const std::vector<std::pair<std::string, Tensor>>& tensors,
                       const std::map<std::string, std::string>& metadata) {
  auto fail = [&](const std::string& what, const std::string& tensor = {}) {
    throw Error(message(path, what, tensor));
  };

  // Everything that can be checked is checked before a byte is written.
  std::unordered_set<std::string> seen;
  for (const auto& [name, t] : tensors) {
    if (name == kMetadataKey) fail("'__metadata__' is reserved and cannot name a tensor");
    if (!seen.insert(name).second) fail("duplicate tensor name", name);
    if (!t.defined()) fail("undefined tensor", name);
    if (t.dtype() == DType::NF4)
      fail("NF4 has no safetensors dtype: store the packed bytes as U8", name);
  }

  ojson header = ojson::object();
  if (!metadata.empty()) {
    ojson meta = ojson::object();
    for (const auto& [k, v] : metadata) meta[k] = v;
    header[kMetadataKey] = std::move(meta);
  }
  uint64_t offset = 0;
  for (const auto& [name, t] : tensors) {
    ojson shape = ojson::array();
    for (int i = 0; i < t.rank(); ++i) shape.push_back(t.dim(i));
    ojson entry = ojson::object();
    entry["dtype"] = safetensors_dtype_name(t.dtype());
    entry["shape"] = std::move(shape);
    entry["data_offsets"] = ojson::array({offset, offset + t.nbytes()});
    header[name] = std::move(entry);
    offset += t.nbytes();
  }
  std::string text;
  try {
    text = header.dump();
  } catch (const ojson::type_error&) {
    fail("tensor names and metadata must be valid UTF-8");
  }
  text.append((8 - text.size() % 8) % 8, ' ');  // data starts 8-byte aligned
  const uint64_t n = text.size();

  AtomicFileWriter out(path);
  out.write(&n, 8);
  out.write(text.data(), text.size());
  for (const auto& [name, t] : tensors) {
    // Device tensors are copied to the host one at a time.
    const Tensor host = t.device().is_cpu() ? t : t.to(Device::cpu());
    if (host.nbytes()) out.write(host.raw_data(), host.nbytes());
  }
  out.commit();
}

}  // namespace engine::io
