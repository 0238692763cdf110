#include "engine/dtype.h"

#include "engine/error.h"

namespace engine {

int dtype_bits(DType t) {
  switch (t) {
    case DType::F32: return 32;
    case DType::BF16: return 16;
    case DType::F16: return 16;
    case DType::I32: return 32;
    case DType::U8: return 8;
    case DType::NF4: return 4;
  }
  return 0;
}

const char* dtype_name(DType t) {
  switch (t) {
    case DType::F32: return "f32";
    case DType::BF16: return "bf16";
    case DType::F16: return "f16";
    case DType::I32: return "i32";
    case DType::U8: return "u8";
    case DType::NF4: return "nf4";
  }
  return "?";
}

size_t dtype_bytes(DType t, int64_t numel) {
  return (static_cast<size_t>(numel) * dtype_bits(t) + 7) / 8;
}

std::string Device::str() const {
  return is_cpu() ? std::string("cpu") : "cuda:" + std::to_string(index);
}

Shape::Shape(std::initializer_list<int64_t> dims) {
  ENGINE_CHECK(dims.size() <= kMaxRank, "shape of rank ", dims.size(), " exceeds ", kMaxRank);
  for (int64_t d : dims) {
    ENGINE_CHECK(d >= 0, "negative dimension ", d);
    dims_[rank_++] = d;
  }
}

int64_t Shape::operator[](int i) const {
  int j = i < 0 ? rank_ + i : i;
  ENGINE_CHECK(j >= 0 && j < rank_, "dimension ", i, " out of range for ", str());
  return dims_[j];
}

int64_t Shape::numel() const {
  int64_t n = 1;
  for (int i = 0; i < rank_; ++i) n *= dims_[i];
  return n;
}

Shape Shape::with(int i, int64_t size) const {
  int j = i < 0 ? rank_ + i : i;
  ENGINE_CHECK(j >= 0 && j < rank_, "dimension ", i, " out of range for ", str());
  Shape s = *this;
  s.dims_[j] = size;
  return s;
}

bool Shape::operator==(const Shape& o) const {
  if (rank_ != o.rank_) return false;
  for (int i = 0; i < rank_; ++i)
    if (dims_[i] != o.dims_[i]) return false;
  return true;
}

std::string Shape::str() const {
  std::string s = "[";
  for (int i = 0; i < rank_; ++i) s += (i ? ", " : "") + std::to_string(dims_[i]);
  return s + "]";
}

}  // namespace engine
