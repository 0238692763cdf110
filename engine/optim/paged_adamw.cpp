// Paged AdamW: the chunk plan of the host state buffer, the CPU reference of both variants
// (32-bit: kmath::adamw_update; 8-bit: kernels/math/adamw8bit.h), and state()/load_state().
// The device pipeline is engine/cuda/paged_adamw.cpp.
#include "engine/optim/paged_adamw.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <cstring>

#include "engine/backend.h"
#include "engine/cuda/pinned_allocator.h"
#include "kernels/math/adamw8bit.h"

namespace engine::optim {

namespace {

constexpr size_t kAlign = 16;  // every array in a chunk starts 16-byte aligned (float4 loads)
constexpr int64_t kBlock = kmath::kAdamW8bitBlock;

size_t align_up(size_t bytes) { return (bytes + kAlign - 1) / kAlign * kAlign; }
int64_t blocks_of(int64_t n) { return (n + kBlock - 1) / kBlock; }
size_t fp32_segment_bytes(int64_t n) { return 2 * align_up(4 * size_t(n)); }
size_t quantized_segment_bytes(int64_t n) {
  return 2 * align_up(size_t(n)) + 2 * align_up(4 * size_t(blocks_of(n)));
}

struct Maps {
  std::array<float, kmath::kDynamicMapSize> signed_map, unsigned_map;
};
const Maps& maps() {
  static const Maps m = [] {
    Maps out;
    for (int i = 0; i < kmath::kDynamicMapSize; ++i) {
      out.signed_map[size_t(i)] = kmath::dynamic_map_value(i);
      out.unsigned_map[size_t(i)] = kmath::unsigned_dynamic_map_value(i);
    }
    return out;
  }();
  return m;
}

// One 256-value block (n <= 256 values) of an 8-bit state, as the kernel does it.
void update_block_8bit(float* p, const float* g, uint8_t* qm, uint8_t* qv, float& absmax_m,
                       float& absmax_v, int64_t n, const kmath::AdamWStep& s) {
  const Maps& mp = maps();
  float m[kBlock], v[kBlock];
  float new_m = 0.0f, new_v = 0.0f;
  for (int64_t j = 0; j < n; ++j) {
    m[j] = kmath::blockwise_dequantize(mp.signed_map[qm[j]], absmax_m);
    v[j] = kmath::blockwise_dequantize(mp.unsigned_map[qv[j]], absmax_v);
    kmath::adamw_update(p[j], g[j], m[j], v[j], s);
    new_m = std::fmax(new_m, std::fabs(m[j]));
    new_v = std::fmax(new_v, std::fabs(v[j]));
  }
  for (int64_t j = 0; j < n; ++j) {
    qm[j] = kmath::blockwise_quantize_signed(m[j], new_m, mp.signed_map);
    qv[j] = kmath::blockwise_quantize_unsigned(v[j], new_v, mp.unsigned_map);
  }
  absmax_m = new_m;
  absmax_v = new_v;
}

std::string index_name(const char* prefix, size_t i) { return prefix + std::to_string(i); }

}  // namespace

size_t optimizer_state_bytes(int64_t numel, bool eight_bit) {
  if (!eight_bit || numel < kmath::kAdamW8bitMinNumel) return 8 * size_t(numel);
  return 2 * size_t(numel) + 8 * size_t(blocks_of(numel));
}

std::vector<StateChunk> plan_state_chunks(const std::vector<int64_t>& numels, bool eight_bit,
                                          size_t page_bytes) {
  ENGINE_CHECK(page_bytes >= 4096 && page_bytes % kAlign == 0, "paged optimizer: page of ",
               page_bytes, " bytes (needs >= 4096, a multiple of 16)");
  std::vector<StateChunk> chunks(1);
  for (size_t i = 0; i < numels.size(); ++i) {
    const int64_t n = numels[i];
    const bool quantized = eight_bit && n >= kmath::kAdamW8bitMinNumel;
    int64_t begin = 0;
    while (begin < n) {
      StateChunk& c = chunks.back();
      const size_t room = page_bytes - c.bytes;
      const int64_t rest = n - begin;
      int64_t take = 0;
      if (quantized) {
        int64_t k = std::min<int64_t>(blocks_of(rest), int64_t(room / (2 * kBlock)) + 1);
        while (k > 0 && quantized_segment_bytes(std::min(k * kBlock, rest)) > room) --k;
        take = std::min(k * kBlock, rest);
      } else {
        take = std::min<int64_t>(rest, int64_t(room / 2 / kAlign * kAlign / 4));
      }
      if (take <= 0) {
        chunks.push_back(StateChunk{c.offset + c.bytes, 0, {}});
        continue;
      }
      StateSegment seg;
      seg.param = i;
      seg.begin = begin;
      seg.end = begin + take;
      seg.quantized = quantized;
      seg.m = c.bytes;
      if (quantized) {
        seg.v = seg.m + align_up(size_t(take));
        seg.absmax_m = seg.v + align_up(size_t(take));
        seg.absmax_v = seg.absmax_m + align_up(4 * size_t(blocks_of(take)));
        c.bytes += quantized_segment_bytes(take);
      } else {
        seg.v = seg.m + align_up(4 * size_t(take));
        c.bytes += fp32_segment_bytes(take);
      }
      c.segments.push_back(seg);
      begin += take;
    }
  }
  if (chunks.back().segments.empty()) chunks.pop_back();
  return chunks;
}

size_t paged_device_bytes(const std::vector<StateChunk>& chunks) {
  size_t largest = 0;
  for (const StateChunk& c : chunks) largest = std::max(largest, c.bytes);
  return largest * std::min<size_t>(chunks.size(), kOptimizerPages);
}

PagedAdamW::PagedAdamW(std::vector<Tensor> params, AdamWConfig config, bool eight_bit,
                       size_t page_bytes)
    : params_(std::move(params)), config_(config), eight_bit_(eight_bit), page_bytes_(page_bytes) {
  MemoryOwnerScope owner("optimizer");  // the memory report's owner (engine/allocator.h)
  std::vector<int64_t> numels;
  for (const Tensor& p : params_) {
    ENGINE_CHECK(p.dtype() == DType::F32, "paged AdamW needs f32 parameters, got ", p.str());
    ENGINE_CHECK(p.device() == params_[0].device(), "paged AdamW: parameters on ",
                 params_[0].device().str(), " and ", p.device().str());
    numels.push_back(p.numel());
    quantized_.push_back(eight_bit && p.numel() >= kmath::kAdamW8bitMinNumel);
  }
  chunks_ = plan_state_chunks(numels, eight_bit, page_bytes);
  size_t total = 0;
  for (const StateChunk& c : chunks_) total = c.offset + c.bytes;
  const bool on_cuda = !params_.empty() && params_[0].device().is_cuda();
  const auto bytes = static_cast<int64_t>(total);
  host_ = on_cuda ? Tensor::empty_from(cuda::pinned_allocator(), {bytes}, DType::U8)
                  : Tensor::empty({bytes}, DType::U8);
  if (total) std::memset(host_.raw_data(), 0, total);  // m = v = 0, absmax 0
  if (on_cuda && total) {
    size_t largest = 0;
    for (const StateChunk& c : chunks_) largest = std::max(largest, c.bytes);
    const size_t pages = std::min<size_t>(chunks_.size(), kOptimizerPages);
    for (size_t k = 0; k < pages; ++k)
      pages_.push_back(Tensor::empty({static_cast<int64_t>(largest)}, DType::U8, params_[0].device()));
  }
}

PagedAdamW::~PagedAdamW() {
  // No copy may still be in flight when the pinned buffer and the pages are freed.
  try {
    if (!pages_.empty()) backend::synchronize(params_[0].device());
  } catch (...) {
  }
}

void PagedAdamW::step() {
  ++step_;
  const kmath::AdamWStep s = step_constants(config_, step_);
  if (params_.empty() || chunks_.empty()) return;
  if (params_[0].device().is_cuda()) {
    backend::device_paged_adamw_step(params_, chunks_, host_.data<uint8_t>(), pages_, s);
    return;
  }
  step_on_host(s);
}

void PagedAdamW::step_on_host(const kmath::AdamWStep& s) {
  uint8_t* host = host_.data<uint8_t>();
  for (const StateChunk& c : chunks_) {
    uint8_t* base = host + c.offset;
    for (const StateSegment& seg : c.segments) {
      const Tensor& param = params_[seg.param];
      Tensor g = param.grad();
      if (!g.defined()) continue;
      ENGINE_CHECK(g.device().is_cpu() && g.dtype() == DType::F32 && g.shape() == param.shape(),
                   "paged AdamW: gradient ", g.str(), " does not match parameter ", param.str());
      float* p = param.data<float>() + seg.begin;
      const float* gp = g.data<float>() + seg.begin;
      const int64_t n = seg.end - seg.begin;
      if (!seg.quantized) {
        auto* m = reinterpret_cast<float*>(base + seg.m);
        auto* v = reinterpret_cast<float*>(base + seg.v);
        for (int64_t j = 0; j < n; ++j) kmath::adamw_update(p[j], gp[j], m[j], v[j], s);
        continue;
      }
      auto* absmax_m = reinterpret_cast<float*>(base + seg.absmax_m);
      auto* absmax_v = reinterpret_cast<float*>(base + seg.absmax_v);
      for (int64_t b = 0; b < blocks_of(n); ++b) {
        const int64_t j = b * kBlock;
        update_block_8bit(p + j, gp + j, base + seg.m + j, base + seg.v + j, absmax_m[b],
                          absmax_v[b], std::min(kBlock, n - j), s);
      }
    }
  }
}

void PagedAdamW::zero_grad() {
  for (Tensor& p : params_) p.zero_grad();
}

OptimizerState PagedAdamW::state() const {
  if (!pages_.empty()) backend::synchronize(params_[0].device());  // the last copy back is done
  const auto bits = static_cast<uint64_t>(step_);
  OptimizerState out{{"step", Tensor::from_ints({static_cast<int32_t>(bits & 0xffffffffu),
                                                 static_cast<int32_t>(bits >> 32)},
                                                {2})}};
  // Entry index of parameter i's first state tensor.
  std::vector<size_t> first(params_.size());
  for (size_t i = 0; i < params_.size(); ++i) {
    first[i] = out.size();
    const Shape& shape = params_[i].shape();
    if (quantized_[i]) {
      const Shape blocks{blocks_of(params_[i].numel())};
      out.emplace_back(index_name("qm.", i), Tensor::empty(shape, DType::U8));
      out.emplace_back(index_name("qv.", i), Tensor::empty(shape, DType::U8));
      out.emplace_back(index_name("absmax_m.", i), Tensor::empty(blocks, DType::F32));
      out.emplace_back(index_name("absmax_v.", i), Tensor::empty(blocks, DType::F32));
    } else {
      out.emplace_back(index_name("m.", i), Tensor::empty(shape, DType::F32));
      out.emplace_back(index_name("v.", i), Tensor::empty(shape, DType::F32));
    }
  }
  const uint8_t* host = host_.defined() ? host_.data<uint8_t>() : nullptr;
  for (const StateChunk& c : chunks_)
    for (const StateSegment& seg : c.segments) {
      const uint8_t* base = host + c.offset;
      const size_t n = size_t(seg.end - seg.begin);
      auto dst = [&](size_t k) { return static_cast<uint8_t*>(out[first[seg.param] + k].second.raw_data()); };
      if (seg.quantized) {
        const size_t b0 = size_t(seg.begin / kBlock), nb = size_t(blocks_of(int64_t(n)));
        std::memcpy(dst(0) + seg.begin, base + seg.m, n);
        std::memcpy(dst(1) + seg.begin, base + seg.v, n);
        std::memcpy(dst(2) + 4 * b0, base + seg.absmax_m, 4 * nb);
        std::memcpy(dst(3) + 4 * b0, base + seg.absmax_v, 4 * nb);
      } else {
        std::memcpy(dst(0) + 4 * size_t(seg.begin), base + seg.m, 4 * n);
        std::memcpy(dst(1) + 4 * size_t(seg.begin), base + seg.v, 4 * n);
      }
    }
  return out;
}

void PagedAdamW::load_state(const OptimizerState& state) {
  size_t want_entries = 1;
  for (size_t i = 0; i < params_.size(); ++i) want_entries += quantized_[i] ? 4 : 2;
  ENGINE_INPUT_CHECK(state.size() == want_entries, "optimizer state: ", state.size(), " entries, ",
                     kind(), " over ", params_.size(), " parameters needs ", want_entries);
  ENGINE_INPUT_CHECK(state[0].first == "step" && state[0].second.dtype() == DType::I32 &&
                         state[0].second.numel() == 2,
                     "optimizer state: the first entry must be the i32 [2] step count");
  std::vector<size_t> first(params_.size());
  size_t k = 1;
  for (size_t i = 0; i < params_.size(); ++i) {
    first[i] = k;
    const Shape& shape = params_[i].shape();
    const Shape blocks{blocks_of(params_[i].numel())};
    struct Want {
      const char* prefix;
      DType dtype;
      Shape shape;
    };
    std::vector<Want> wants;
    if (quantized_[i])
      wants = {{"qm.", DType::U8, shape}, {"qv.", DType::U8, shape},
               {"absmax_m.", DType::F32, blocks}, {"absmax_v.", DType::F32, blocks}};
    else
      wants = {{"m.", DType::F32, shape}, {"v.", DType::F32, shape}};
    for (const Want& w : wants) {
      const auto& [name, t] = state[k++];
      const std::string want = index_name(w.prefix, i);
      ENGINE_INPUT_CHECK(name == want && t.dtype() == w.dtype && t.shape() == w.shape &&
                             t.device().is_cpu(),
                         "optimizer state: entry '", name, "' ", t.str(), " does not match '", want,
                         "' ", dtype_name(w.dtype), w.shape.str(), " of ", kind());
    }
  }
  if (!pages_.empty()) backend::synchronize(params_[0].device());  // no copy in flight
  uint8_t* host = host_.defined() ? host_.data<uint8_t>() : nullptr;
  for (const StateChunk& c : chunks_)
    for (const StateSegment& seg : c.segments) {
      uint8_t* base = host + c.offset;
      const size_t n = size_t(seg.end - seg.begin);
      auto src = [&](size_t j) {
        return static_cast<const uint8_t*>(state[first[seg.param] + j].second.raw_data());
      };
      if (seg.quantized) {
        const size_t b0 = size_t(seg.begin / kBlock), nb = size_t(blocks_of(int64_t(n)));
        std::memcpy(base + seg.m, src(0) + seg.begin, n);
        std::memcpy(base + seg.v, src(1) + seg.begin, n);
        std::memcpy(base + seg.absmax_m, src(2) + 4 * b0, 4 * nb);
        std::memcpy(base + seg.absmax_v, src(3) + 4 * b0, 4 * nb);
      } else {
        std::memcpy(base + seg.m, src(0) + 4 * size_t(seg.begin), 4 * n);
        std::memcpy(base + seg.v, src(1) + 4 * size_t(seg.begin), 4 * n);
      }
    }
  const std::vector<int32_t> bits = state[0].second.to_ints();
  step_ = static_cast<int64_t>(static_cast<uint64_t>(static_cast<uint32_t>(bits[0])) |
                               (static_cast<uint64_t>(static_cast<uint32_t>(bits[1])) << 32));
}

}  // namespace engine::optim
