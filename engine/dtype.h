// Element types, devices and shapes: the vocabulary every tensor is described in.
#pragma once
#include <array>
#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <string>

namespace engine {

// NF4 is the packed 4-bit bitsandbytes format: two values per byte, high nibble first.
enum class DType : uint8_t { F32, BF16, F16, I32, U8, NF4 };

int dtype_bits(DType t);
const char* dtype_name(DType t);
// Bytes needed for `numel` elements (NF4 rounds up to whole bytes).
size_t dtype_bytes(DType t, int64_t numel);

enum class DeviceType : uint8_t { CPU, CUDA };

struct Device {
  DeviceType type = DeviceType::CPU;
  int index = 0;
  static Device cpu() { return {DeviceType::CPU, 0}; }
  static Device cuda(int index = 0) { return {DeviceType::CUDA, index}; }
  bool is_cpu() const { return type == DeviceType::CPU; }
  bool is_cuda() const { return type == DeviceType::CUDA; }
  bool operator==(const Device& o) const { return type == o.type && index == o.index; }
  bool operator!=(const Device& o) const { return !(*this == o); }
  std::string str() const;
};

// Up to four dimensions, row-major. Rank 0 is a scalar with one element.
class Shape {
 public:
  static constexpr int kMaxRank = 4;
  Shape() = default;
  Shape(std::initializer_list<int64_t> dims);
  int rank() const { return rank_; }
  int64_t operator[](int i) const;  // negative i counts from the back
  int64_t numel() const;
  int64_t last() const { return (*this)[-1]; }
  // Product of all dimensions but the last: the number of rows of a [rows, last] view.
  int64_t rows() const { return rank_ == 0 ? 1 : numel() / last(); }
  Shape with(int i, int64_t size) const;  // copy with one dimension replaced
  bool operator==(const Shape& o) const;
  bool operator!=(const Shape& o) const { return !(*this == o); }
  std::string str() const;

 private:
  std::array<int64_t, kMaxRank> dims_{};
  int rank_ = 0;
};

}  // namespace engine
