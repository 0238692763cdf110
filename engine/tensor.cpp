#include "engine/tensor.h"

#include <cstring>

#include "engine/autograd.h"
#include "engine/backend.h"
#include "kernels/math/bf16.h"

namespace engine {

Storage::Storage(size_t n, Device dev) : nbytes(n), device(dev), allocator(&allocator_for(dev)) {
  data = allocator->allocate(n);
}

Storage::Storage(size_t n, Allocator& from) : nbytes(n), device(from.device()), allocator(&from) {
  data = allocator->allocate(n);
}

Storage::~Storage() { allocator->release(data, nbytes); }

Tensor Tensor::empty(const Shape& shape, DType dtype, Device device) {
  Tensor t;
  t.impl_ = std::make_shared<TensorImpl>();
  t.impl_->shape = shape;
  t.impl_->dtype = dtype;
  t.impl_->storage = std::make_shared<Storage>(dtype_bytes(dtype, shape.numel()), device);
  return t;
}

Tensor Tensor::empty_from(Allocator& allocator, const Shape& shape, DType dtype) {
  Tensor t;
  t.impl_ = std::make_shared<TensorImpl>();
  t.impl_->shape = shape;
  t.impl_->dtype = dtype;
  t.impl_->storage = std::make_shared<Storage>(dtype_bytes(dtype, shape.numel()), allocator);
  return t;
}

Tensor Tensor::zeros(const Shape& shape, DType dtype, Device device) {
  return full(shape, 0.0f, dtype, device);
}

Tensor Tensor::full(const Shape& shape, float value, DType dtype, Device device) {
  Tensor t = empty(shape, dtype, device);
  t.fill(value);
  return t;
}

Tensor Tensor::from_floats(const std::vector<float>& values, const Shape& shape) {
  ENGINE_CHECK(static_cast<int64_t>(values.size()) == shape.numel(), values.size(),
               " values for shape ", shape.str());
  Tensor t = empty(shape, DType::F32);
  if (!values.empty()) std::memcpy(t.raw_data(), values.data(), values.size() * sizeof(float));
  return t;
}

Tensor Tensor::from_ints(const std::vector<int32_t>& values, const Shape& shape) {
  ENGINE_CHECK(static_cast<int64_t>(values.size()) == shape.numel(), values.size(),
               " values for shape ", shape.str());
  Tensor t = empty(shape, DType::I32);
  if (!values.empty()) std::memcpy(t.raw_data(), values.data(), values.size() * sizeof(int32_t));
  return t;
}

const Shape& Tensor::shape() const {
  ENGINE_CHECK(defined(), "use of an undefined tensor");
  return impl_->shape;
}

DType Tensor::dtype() const {
  ENGINE_CHECK(defined(), "use of an undefined tensor");
  return impl_->dtype;
}

Device Tensor::device() const {
  ENGINE_CHECK(defined(), "use of an undefined tensor");
  return impl_->storage->device;
}

void* Tensor::raw_data() const {
  ENGINE_CHECK(defined(), "use of an undefined tensor");
  return static_cast<char*>(impl_->storage->data) + impl_->byte_offset;
}

void Tensor::check_element_type(size_t element_size) const {
  ENGINE_CHECK(dtype() != DType::NF4 && dtype_bits(dtype()) == 8 * static_cast<int>(element_size),
               "element access of size ", element_size, " on a ", dtype_name(dtype()), " tensor");
}

Tensor Tensor::to(Device device) const {
  Tensor out = empty(shape(), dtype(), device);
  backend::copy_bytes(out.raw_data(), device, raw_data(), this->device(), nbytes());
  return out;
}

Tensor Tensor::to_dtype(DType dtype) const {
  if (dtype == this->dtype()) return clone();
  Tensor out = empty(shape(), dtype, device());
  backend::convert(out, *this);
  return out;
}

Tensor Tensor::clone() const { return to(device()); }

void Tensor::copy_from(const Tensor& src) {
  ENGINE_CHECK(shape() == src.shape() && dtype() == src.dtype(), "copy_from ", src.str(), " into ",
               str());
  backend::copy_bytes(raw_data(), device(), src.raw_data(), src.device(), nbytes());
}

Tensor Tensor::view(const Shape& shape) const {
  ENGINE_CHECK(shape.numel() == numel(), "cannot view ", str(), " as ", shape.str());
  Tensor t;
  t.impl_ = std::make_shared<TensorImpl>();
  t.impl_->shape = shape;
  t.impl_->dtype = dtype();
  t.impl_->storage = impl_->storage;
  t.impl_->byte_offset = impl_->byte_offset;
  return t;
}

Tensor Tensor::detach() const { return view(shape()); }

std::vector<float> Tensor::to_floats() const {
  Tensor host = device().is_cpu() ? *this : to(Device::cpu());
  std::vector<float> out(numel());
  switch (dtype()) {
    case DType::F32: std::memcpy(out.data(), host.raw_data(), out.size() * 4); break;
    case DType::I32:
      for (size_t i = 0; i < out.size(); ++i) out[i] = static_cast<float>(host.data<int32_t>()[i]);
      break;
    case DType::BF16:
      for (size_t i = 0; i < out.size(); ++i) out[i] = kmath::bf16_bits_to_float(host.data<uint16_t>()[i]);
      break;
    case DType::F16: {
      Tensor f = host.to_dtype(DType::F32);
      std::memcpy(out.data(), f.raw_data(), out.size() * 4);
      break;
    }
    case DType::U8:
      for (size_t i = 0; i < out.size(); ++i) out[i] = host.data<uint8_t>()[i];
      break;
    case DType::NF4: ENGINE_CHECK(false, "to_floats on a packed nf4 tensor: dequantize it first");
  }
  return out;
}

std::vector<int32_t> Tensor::to_ints() const {
  ENGINE_CHECK(dtype() == DType::I32, "to_ints on ", str());
  Tensor host = device().is_cpu() ? *this : to(Device::cpu());
  return std::vector<int32_t>(host.data<int32_t>(), host.data<int32_t>() + numel());
}

float Tensor::item() const {
  ENGINE_CHECK(numel() == 1, "item() on ", str());
  return to_floats()[0];
}

void Tensor::fill(float value) { backend::fill(*this, value); }

bool Tensor::requires_grad() const { return defined() && impl_->requires_grad; }

Tensor& Tensor::set_requires_grad(bool on) {
  ENGINE_CHECK(defined(), "set_requires_grad on an undefined tensor");
  impl_->requires_grad = on;
  return *this;
}

Tensor Tensor::grad() const { return defined() ? impl_->grad : Tensor(); }
void Tensor::set_grad(const Tensor& g) { impl_->grad = g; }
void Tensor::zero_grad() {
  if (defined()) impl_->grad = Tensor();
}

std::shared_ptr<Node> Tensor::grad_fn() const { return defined() ? impl_->grad_fn : nullptr; }
int Tensor::output_index() const { return defined() ? impl_->output_index : 0; }

void Tensor::set_grad_fn(std::shared_ptr<Node> fn, int output_index) {
  impl_->grad_fn = std::move(fn);
  impl_->output_index = output_index;
  impl_->requires_grad = impl_->grad_fn != nullptr;
}

std::string Tensor::str() const {
  if (!defined()) return "undefined";
  return std::string(dtype_name(dtype())) + shape().str() + " " + device().str();
}

}  // namespace engine
