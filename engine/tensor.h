// Tensor: a contiguous block of elements described by (shape, dtype, device) plus
// the autograd fields. Copies of a Tensor share the same TensorImpl (like a
// shared_ptr); views (reshape, detach) share only the storage.
#pragma once
#include <cstdint>
#include <memory>
#include <vector>

#include "engine/allocator.h"
#include "engine/dtype.h"
#include "engine/error.h"

namespace engine {

class Node;
struct TensorImpl;

// The bytes behind one or more tensors; returned to its allocator when the last
// tensor using it goes away.
struct Storage {
  Storage(size_t nbytes, Device device);
  // From a given allocator (pinned host memory, engine/cuda/pinned_allocator.h).
  Storage(size_t nbytes, Allocator& allocator);
  ~Storage();
  Storage(const Storage&) = delete;
  Storage& operator=(const Storage&) = delete;
  void* data = nullptr;
  size_t nbytes = 0;
  Device device;
  Allocator* allocator = nullptr;
};

class Tensor {
 public:
  Tensor() = default;  // undefined: no shape, no storage

  static Tensor empty(const Shape& shape, DType dtype = DType::F32, Device device = Device::cpu());
  // Storage from `allocator` (its device), e.g. pinned host memory.
  static Tensor empty_from(Allocator& allocator, const Shape& shape, DType dtype = DType::F32);
  static Tensor zeros(const Shape& shape, DType dtype = DType::F32, Device device = Device::cpu());
  static Tensor full(const Shape& shape, float value, DType dtype = DType::F32,
                     Device device = Device::cpu());
  // f32 (or i32) CPU tensors from host values; `values.size()` must equal shape.numel().
  static Tensor from_floats(const std::vector<float>& values, const Shape& shape);
  static Tensor from_ints(const std::vector<int32_t>& values, const Shape& shape);

  bool defined() const { return impl_ != nullptr; }
  const Shape& shape() const;
  int rank() const { return shape().rank(); }
  int64_t dim(int i) const { return shape()[i]; }
  int64_t numel() const { return shape().numel(); }
  DType dtype() const;
  Device device() const;
  size_t nbytes() const { return dtype_bytes(dtype(), numel()); }

  void* raw_data() const;
  template <class T>
  T* data() const {
    check_element_type(sizeof(T));
    return static_cast<T*>(raw_data());
  }

  // Copies (not views). `to` moves between devices, `to_dtype` converts values
  // (f32 <-> bf16 <-> f16 on either device).
  Tensor to(Device device) const;
  Tensor to_dtype(DType dtype) const;
  Tensor clone() const;
  void copy_from(const Tensor& src);  // same shape and dtype, any devices

  // Free views sharing storage: no copy and no autograd link (see ops::reshape).
  Tensor view(const Shape& shape) const;
  Tensor detach() const;

  // Host values as floats whatever the dtype or device (for tests and printing).
  std::vector<float> to_floats() const;
  std::vector<int32_t> to_ints() const;
  float item() const;
  void fill(float value);

  // Autograd.
  bool requires_grad() const;
  Tensor& set_requires_grad(bool on = true);
  Tensor grad() const;             // undefined until a backward pass reaches this tensor
  void set_grad(const Tensor& g);
  void zero_grad();
  std::shared_ptr<Node> grad_fn() const;
  int output_index() const;
  void set_grad_fn(std::shared_ptr<Node> fn, int output_index);

  bool same_impl(const Tensor& o) const { return impl_ == o.impl_; }
  const std::shared_ptr<TensorImpl>& impl_for_autograd() const { return impl_; }
  std::string str() const;  // "f32[2, 3] cpu"

 private:
  void check_element_type(size_t element_size) const;
  std::shared_ptr<TensorImpl> impl_;
  friend struct TensorImpl;
};

struct TensorImpl {
  Shape shape;
  DType dtype = DType::F32;
  std::shared_ptr<Storage> storage;
  size_t byte_offset = 0;
  bool requires_grad = false;
  Tensor grad;
  std::shared_ptr<Node> grad_fn;
  int output_index = 0;
};

}  // namespace engine
