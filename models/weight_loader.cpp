#include "models/weight_loader.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <set>
#include <thread>

#include "engine/backend.h"
#include "engine/gpu_spec.h"
#include "engine/io/safetensors.h"
#include "engine/quant/nf4_linear.h"
#include "kernels/math/bf16.h"
#include "kernels/math/nf4.h"
#include "models/bnb_checkpoint.h"

namespace models {

namespace fs = std::filesystem;
using engine::DType;
using engine::Tensor;

namespace {

// Values converted per thread per pass: a multiple of the NF4 block (64), small enough to
// stay in L2 and add nothing measurable to the peak RSS.
constexpr int64_t kChunk = 64 * 1024;

int thread_count(int requested) {
  if (requested > 0) return requested;
  return std::max(1u, std::thread::hardware_concurrency());
}

// Runs fn(begin, end) over [0, n) cut into `threads` contiguous ranges aligned to `align`.
// The first exception thrown by a worker is rethrown here.
template <typename Fn>
void parallel_ranges(int64_t n, int64_t align, int threads, Fn fn) {
  const int64_t units = (n + align - 1) / align;
  const int64_t workers = std::clamp<int64_t>(threads, 1, std::max<int64_t>(1, units));
  if (workers == 1) {
    fn(int64_t{0}, n);
    return;
  }
  std::vector<std::thread> pool;
  std::exception_ptr error;
  std::mutex error_mutex;
  for (int64_t w = 0; w < workers; ++w) {
    const int64_t begin = std::min(n, units * w / workers * align);
    const int64_t end = std::min(n, units * (w + 1) / workers * align);
    pool.emplace_back([&, begin, end] {
      try {
        fn(begin, end);
      } catch (...) {
        std::lock_guard<std::mutex> lock(error_mutex);
        if (!error) error = std::current_exception();
      }
    });
  }
  for (std::thread& t : pool) t.join();
  if (error) std::rethrow_exception(error);
}

// out[i] = value i of `src` (BF16, F16 or F32) for i in [begin, begin + n); throws on the
// first non-finite value.
void to_f32(const void* src, DType dtype, int64_t begin, int64_t n, float* out,
            const std::string& where) {
  switch (dtype) {
    case DType::F32: std::copy_n(static_cast<const float*>(src) + begin, n, out); break;
    case DType::BF16: {
      const uint16_t* s = static_cast<const uint16_t*>(src) + begin;
      for (int64_t i = 0; i < n; ++i) out[i] = kmath::bf16_bits_to_float(s[i]);
      break;
    }
    case DType::F16: {
      const _Float16* s = static_cast<const _Float16*>(src) + begin;
      for (int64_t i = 0; i < n; ++i) out[i] = static_cast<float>(s[i]);
      break;
    }
    default: ENGINE_CHECK(false, "to_f32 of ", engine::dtype_name(dtype));
  }
  for (int64_t i = 0; i < n; ++i)
    ENGINE_INPUT_CHECK(std::isfinite(out[i]), where, " holds a non-finite value (", out[i],
                       " at flat index ", begin + i, ")");
}

// Checkpoint dtypes the loader converts from.
std::optional<DType> float_dtype(const engine::io::TensorInfo& info) {
  if (info.dtype && (*info.dtype == DType::BF16 || *info.dtype == DType::F16 ||
                     *info.dtype == DType::F32))
    return info.dtype;
  return std::nullopt;
}

std::string shape_str(const std::vector<int64_t>& dims) {
  std::string s = "[";
  for (size_t i = 0; i < dims.size(); ++i) s += (i ? ", " : "") + std::to_string(dims[i]);
  return s + "]";
}

// Drops a tensor's bytes from the page cache once read: the reader uses pread, so the pages
// were never part of the process, but left cached they push out everything else on a
// machine loading 140 GB.
class PageReleaser {
 public:
  void release(const engine::io::SafetensorsFile& file, const engine::io::TensorInfo& info) {
    auto it = fds_.find(file.path());
    if (it == fds_.end()) it = fds_.emplace(file.path(), ::open(file.path().c_str(), O_RDONLY | O_CLOEXEC)).first;
    if (it->second < 0) return;  // advice only
    const off_t data = static_cast<off_t>(8 + file.header_size());
    ::posix_fadvise(it->second, data + static_cast<off_t>(info.begin),
                    static_cast<off_t>(info.nbytes()), POSIX_FADV_DONTNEED);
  }
  ~PageReleaser() {
    for (auto& [path, fd] : fds_)
      if (fd >= 0) ::close(fd);
  }

 private:
  std::map<std::string, int> fds_;
};

// The staging buffer for the checkpoint bytes of one tensor at a time, an anonymous mapping
// of its own, unmapped at the end (malloc would keep a freed buffer in its heap once its
// mmap threshold has grown).
class Staging {
 public:
  explicit Staging(size_t bytes) : bytes_(std::max<size_t>(bytes, 1)) {
    data_ = ::mmap(nullptr, bytes_, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    ENGINE_CHECK(data_ != MAP_FAILED, "cannot map ", bytes_, " bytes of staging memory");
  }
  ~Staging() { ::munmap(data_, bytes_); }
  Staging(const Staging&) = delete;
  Staging& operator=(const Staging&) = delete;
  void* data() const { return data_; }
  size_t size() const { return bytes_; }
  std::span<uint8_t> span(size_t n) const { return {static_cast<uint8_t*>(data_), n}; }

 private:
  size_t bytes_;
  void* data_;
};

// Tensors and bytes done, GB/s and ETA: one line rewritten in place on a terminal, else a
// line at each quarter.
class Progress {
 public:
  Progress(std::ostream* log, bool live, size_t tensors, uint64_t bytes)
      : log_(log), live_(live), tensors_(tensors), bytes_(bytes), start_(clock::now()) {}
  void done(uint64_t bytes) {
    ++tensors_done_;
    bytes_done_ += bytes;
    if (!log_) return;
    const auto now = clock::now();
    const bool last = tensors_done_ == tensors_;
    if (live_) {
      if (!last && now - last_print_ < std::chrono::milliseconds(200)) return;
      last_print_ = now;
      *log_ << "\r" << line(now) << (last ? "\n" : "") << std::flush;
    } else {
      const int quarter = static_cast<int>(4 * bytes_done_ / std::max<uint64_t>(1, bytes_));
      if (quarter <= printed_quarter_ && !last) return;
      printed_quarter_ = std::max(quarter, printed_quarter_ + 1);
      *log_ << line(now) << "\n" << std::flush;
    }
  }

 private:
  using clock = std::chrono::steady_clock;
  std::string line(clock::time_point now) const {
    const double s = std::chrono::duration<double>(now - start_).count();
    const double gb = bytes_done_ / 1e9, rate = s > 0 ? gb / s : 0;
    const double eta = rate > 0 ? (bytes_ / 1e9 - gb) / rate : 0;
    char buf[200];
    std::snprintf(buf, sizeof buf, "loading: %zu/%zu tensors, %.2f/%.2f GB, %.2f GB/s, %s %.0f s",
                  tensors_done_, tensors_, gb, bytes_ / 1e9, rate,
                  tensors_done_ == tensors_ ? "took" : "ETA", tensors_done_ == tensors_ ? s : eta);
    return buf;
  }
  std::ostream* log_;
  bool live_;
  size_t tensors_, tensors_done_ = 0;
  uint64_t bytes_, bytes_done_ = 0;
  clock::time_point start_, last_print_{};
  int printed_quarter_ = 0;
};

}  // namespace

engine::DType dense_dtype(engine::Device device) {
  return device.is_cuda() ? DType::BF16 : DType::F32;
}

std::vector<WeightSpec> llama_weight_specs(const LlamaConfig& c) {
  std::vector<WeightSpec> specs;
  specs.push_back({"model.embed_tokens.weight", {c.vocab, c.hidden}, false});
  const char* paths[7] = {"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj",
                          "self_attn.o_proj", "mlp.gate_proj",    "mlp.up_proj",
                          "mlp.down_proj"};
  const engine::Shape shapes[7] = {{c.q_dim(), c.hidden},       {c.kv_dim(), c.hidden},
                                   {c.kv_dim(), c.hidden},      {c.hidden, c.q_dim()},
                                   {c.intermediate, c.hidden}, {c.intermediate, c.hidden},
                                   {c.hidden, c.intermediate}};
  for (int64_t i = 0; i < c.layers; ++i) {
    const std::string p = "model.layers." + std::to_string(i) + ".";
    specs.push_back({p + "input_layernorm.weight", {c.hidden}, false});
    specs.push_back({p + "post_attention_layernorm.weight", {c.hidden}, false});
    for (int j = 0; j < 7; ++j) specs.push_back({p + paths[j] + ".weight", shapes[j], true});
  }
  specs.push_back({"model.norm.weight", {c.hidden}, false});
  if (!c.tie_embeddings) specs.push_back({"lm_head.weight", {c.vocab, c.hidden}, false});
  return specs;
}

namespace {

// Value i of a BF16, F16 or F32 array as f32 (exact).
inline float load_value(const void* src, DType dtype, int64_t i) {
  switch (dtype) {
    case DType::BF16: return kmath::bf16_bits_to_float(static_cast<const uint16_t*>(src)[i]);
    case DType::F16: return static_cast<float>(static_cast<const _Float16*>(src)[i]);
    default: return static_cast<const float*>(src)[i];
  }
}

// NF4 of `len` (<= 64) values at x[begin..], one block: the arithmetic of
// quantize_nf4_blocks (kernels/math/nf4.h) with the nearest-code search as a count of the
// midpoints below the scaled value, which is what its binary search computes too, but
// branch-free, so that the compiler vectorizes it (about 5x faster on one core).
template <DType kDtype, int64_t kLen>
void quantize_block(const void* x, int64_t begin, int64_t len_, const float* mid, uint8_t* packed,
                    float* absmax, const std::string& where) {
  // kLen > 0: a full block, a constant trip count the compiler vectorizes.
  const int64_t len = kLen > 0 ? kLen : len_;
  float v[kmath::kNf4Block];
  float a = 0.0f;
  bool finite = true;
  for (int64_t i = 0; i < len; ++i) {
    v[i] = load_value(x, kDtype, begin + i);
    finite &= std::fabs(v[i]) <= 3.4028234663852886e38f;
    a = std::max(a, std::fabs(v[i]));
  }
  if (!finite)
    for (int64_t i = 0; i < len; ++i)
      ENGINE_INPUT_CHECK(std::isfinite(v[i]), where, " holds a non-finite value (", v[i],
                         " at flat index ", begin + i, ")");
  *absmax = a;
  const float inv = kmath::nf4_inverse_scale(a);
  int32_t q[kmath::kNf4Block + 1];
  for (int64_t i = 0; i < len; ++i) q[i] = 0;
  for (int k = 0; k < kmath::kNf4Codes - 1; ++k) {
    const float m = mid[k];
    for (int64_t i = 0; i < len; ++i) q[i] += v[i] * inv > m;
  }
  if (len & 1) q[len] = kmath::kNf4ZeroNibble;
  for (int64_t i = 0; i < len; i += 2)
    packed[i / 2] = kmath::nf4_pack(static_cast<uint8_t>(q[i]), static_cast<uint8_t>(q[i + 1]));
}

}  // namespace

engine::quant::Nf4Weight quantize_nf4_host(const void* data, DType dtype,
                                           const engine::Shape& shape, int threads,
                                           const std::string& where) {
  namespace q = engine::quant;
  const int64_t n = shape.numel();
  ENGINE_CHECK(n > 0, "quantize_nf4_host of an empty weight");
  ENGINE_CHECK(dtype == DType::BF16 || dtype == DType::F16 || dtype == DType::F32,
               "quantize_nf4_host of ", engine::dtype_name(dtype));
  q::Nf4Weight w;
  w.shape = shape;
  w.double_quant = true;
  w.packed = Tensor::empty({(n + 1) / 2}, DType::U8);
  Tensor absmax = Tensor::empty({w.num_blocks()}, DType::F32);
  uint8_t* packed = w.packed.data<uint8_t>();
  float* scales = absmax.data<float>();
  float mid[kmath::kNf4Codes - 1];
  for (int k = 0; k < kmath::kNf4Codes - 1; ++k) mid[k] = kmath::nf4_midpoint(k);
  auto run = [&]<DType kDtype>(int64_t begin, int64_t end) {
    for (int64_t b = begin; b < end; b += kmath::kNf4Block) {
      const int64_t len = std::min<int64_t>(kmath::kNf4Block, n - b);
      if (len == kmath::kNf4Block)
        quantize_block<kDtype, kmath::kNf4Block>(data, b, len, mid, packed + b / 2,
                                                 scales + b / q::kNf4Block, where);
      else
        quantize_block<kDtype, 0>(data, b, len, mid, packed + b / 2, scales + b / q::kNf4Block, where);
    }
  };
  // Blocks are independent: each thread quantizes a run of whole blocks.
  parallel_ranges(n, kChunk, thread_count(threads), [&](int64_t begin, int64_t end) {
    if (dtype == DType::BF16) run.template operator()<DType::BF16>(begin, end);
    else if (dtype == DType::F16) run.template operator()<DType::F16>(begin, end);
    else run.template operator()<DType::F32>(begin, end);
  });
  const int64_t blocks = w.num_blocks();
  w.offset = q::absmax_offset(scales, blocks);
  w.absmax_q = Tensor::empty({blocks}, DType::U8);
  w.nested_absmax = Tensor::empty({(blocks + q::kNestedBlock - 1) / q::kNestedBlock}, DType::F32);
  q::quantize_absmax_nested(scales, blocks, w.offset, w.absmax_q.data<uint8_t>(),
                            w.nested_absmax.data<float>());
  return w;
}

namespace {

// The checkpoint tensor `raw` (its dtype, host) as an f32 or bf16 host tensor, checked finite.
Tensor convert_host(const void* raw, DType src, DType dst, const engine::Shape& shape,
                    int threads, const std::string& where) {
  Tensor out = Tensor::empty(shape, dst);
  const int64_t n = shape.numel();
  parallel_ranges(n, kChunk, thread_count(threads), [&](int64_t begin, int64_t end) {
    std::vector<float> buf(static_cast<size_t>(std::min(kChunk, std::max<int64_t>(1, end - begin))));
    for (int64_t b = begin; b < end; b += kChunk) {
      const int64_t len = std::min(kChunk, end - b);
      float* f32 = dst == DType::F32 ? out.data<float>() + b : buf.data();
      to_f32(raw, src, b, len, f32, where);
      if (dst == DType::BF16)
        for (int64_t i = 0; i < len; ++i) out.data<uint16_t>()[b + i] = kmath::float_to_bf16_bits(f32[i]);
    }
  });
  return out;
}

}  // namespace

void place_weight(LlamaModel::Parts& parts, const std::string& name, Tensor dense,
                  std::shared_ptr<const engine::FrozenLinear> frozen) {
  if (name == "model.embed_tokens.weight") parts.embed_tokens = dense;
  else if (name == "model.norm.weight") parts.final_norm = dense;
  else if (name == "lm_head.weight") parts.lm_head = dense;
  else {
    const size_t after = std::string("model.layers.").size();
    const size_t dot = name.find('.', after);
    LlamaLayer& l = parts.layers[std::stoul(name.substr(after, dot - after))];
    const std::string rest = name.substr(dot + 1);
    if (rest == "input_layernorm.weight") l.input_norm = dense;
    else if (rest == "post_attention_layernorm.weight") l.post_attention_norm = dense;
    else {
      const std::vector<std::string>& names = all_linear_names();
      auto lin = l.linears();
      for (size_t j = 0; j < names.size(); ++j)
        if (rest.find("." + names[j] + ".") != std::string::npos) lin[j]->frozen = frozen;
    }
  }
}

std::unique_ptr<LlamaModel> load_llama(const LlamaConfig& config, const std::string& model_dir,
                                       const LoadOptions& o) {
  config.validate();
  const engine::io::SafetensorsIndex index(model_dir);
  const std::string config_path = (fs::path(model_dir) / "config.json").string();
  const std::optional<BnbQuantization> bnb =
      fs::exists(config_path) ? read_bnb_quantization(config_path) : std::nullopt;
  ENGINE_INPUT_CHECK(!bnb || o.format == BaseFormat::NF4, config_path,
                     ": a bitsandbytes 4-bit checkpoint holds NF4 weights; it cannot load with an f32 base");
  const std::vector<WeightSpec> specs = llama_weight_specs(config);
  const DType dense = dense_dtype(o.device);

  // 1. Headers only: everything the files can be wrong about, before minutes of reading.
  std::set<std::string> expected;
  uint64_t total_bytes = 0;
  for (const WeightSpec& s : specs) {
    expected.insert(s.name);
    ENGINE_INPUT_CHECK(index.has(s.name), index.path(), ": missing weight '", s.name, "'");
    const engine::io::TensorInfo& info = index.info(s.name);
    total_bytes += info.nbytes();
    if (bnb && s.linear) continue;  // read_bnb_nf4 checks the packed form and its quant state
    const std::string& file = index.file(s.name).path();
    ENGINE_INPUT_CHECK(float_dtype(info).has_value(), file, ": weight '", s.name, "' has dtype ",
                       info.dtype_name, ", expected BF16, F16 or F32");
    std::vector<int64_t> want;
    for (int i = 0; i < s.shape.rank(); ++i) want.push_back(s.shape[i]);
    ENGINE_INPUT_CHECK(info.shape == want, file, ": weight '", s.name, "' has shape ",
                       shape_str(info.shape), ", expected ", s.shape.str());
  }
  for (const std::string& name : index.names()) {
    if (expected.count(name) || (config.tie_embeddings && name == "lm_head.weight")) continue;
    // bnb stores P.absmax, P.quant_map, ... beside each packed weight P.
    const size_t dot = name.find(".weight.");
    if (bnb && dot != std::string::npos && expected.count(name.substr(0, dot + 7))) continue;
    ENGINE_INPUT_CHECK(false, index.file(name).path(), ": unexpected weight '", name,
                       "' (not part of this Llama architecture)");
  }

  // 2. Stream: one tensor at a time through one reused staging buffer.
  uint64_t largest = 0;
  for (const WeightSpec& s : specs)
    if (!(bnb && s.linear)) largest = std::max(largest, index.info(s.name).nbytes());
  std::unique_ptr<Staging> raw;  // the checkpoint bytes of the tensor being loaded
  Progress progress(o.log, o.live_progress, specs.size(), total_bytes);
  PageReleaser pages;
  LlamaModel::Parts parts;
  parts.layers.resize(static_cast<size_t>(config.layers));
  for (const WeightSpec& s : specs) {
    const engine::io::TensorInfo& info = index.info(s.name);
    const engine::io::SafetensorsFile& file = index.file(s.name);
    const std::string where = file.path() + ": weight '" + s.name + "'";
    std::shared_ptr<const engine::FrozenLinear> frozen;
    Tensor value;
    if (bnb && s.linear) {
      auto w = std::make_shared<engine::quant::Nf4FrozenLinear>(read_bnb_nf4(index, s.name, s.shape));
      frozen = o.device.is_cpu() ? std::shared_ptr<const engine::FrozenLinear>(w) : w->to(o.device);
    } else {
      const DType src = *float_dtype(info);
      // One staging mapping, as large as the largest tensor, reused: its pages fault in once.
      if (!raw || raw->size() < info.nbytes()) {
        raw.reset();
        raw = std::make_unique<Staging>(largest);
      }
      // A dry run (engine/gpu_spec.h) reads shapes only: the values would never be used.
      const bool dry = engine::dry_run_active();
      if (!dry) index.read(s.name, raw->span(info.nbytes()));
      pages.release(file, info);
      if (s.linear && o.format == BaseFormat::NF4) {
        if (o.device.is_cpu()) {
          frozen = std::make_shared<engine::quant::Nf4FrozenLinear>(
              quantize_nf4_host(raw->data(), src, s.shape, o.threads, where));
        } else {
          // Finite check on the host (the kernel would quietly map a NaN), then quantize there.
          if (!dry) parallel_ranges(s.shape.numel(), kChunk, thread_count(o.threads), [&](int64_t b, int64_t e) {
            std::vector<float> buf(static_cast<size_t>(kChunk));
            for (int64_t i = b; i < e; i += kChunk) to_f32(raw->data(), src, i, std::min(kChunk, e - i), buf.data(), where);
          });
          Tensor staging = Tensor::empty(s.shape, src, o.device);
          engine::backend::copy_bytes(staging.raw_data(), o.device, raw->data(), engine::Device::cpu(), info.nbytes());
          frozen = engine::quant::Nf4FrozenLinear::quantize_on_device(staging);
        }
      } else {
        const DType target = s.linear ? DType::F32 : dense;  // a dense frozen base stays f32
        value = convert_host(raw->data(), src, target, s.shape, o.threads, where);
        const bool stays_on_host = o.embedding_on_host && s.name == "model.embed_tokens.weight";
        if (!o.device.is_cpu() && !stays_on_host) value = value.to(o.device);
        if (s.linear) frozen = std::make_shared<engine::DenseFrozenLinear>(value);
      }
    }
    place_weight(parts, s.name, value, frozen);
    progress.done(info.nbytes());
  }
  if (config.tie_embeddings) parts.lm_head = parts.embed_tokens;
  return std::make_unique<LlamaModel>(config, std::move(parts));
}

size_t peak_rss_bytes() {
  std::ifstream status("/proc/self/status");
  std::string line;
  while (std::getline(status, line))
    if (line.rfind("VmHWM:", 0) == 0) return std::stoull(line.substr(6)) * 1024;  // "... kB"
  return 0;
}

}  // namespace models
