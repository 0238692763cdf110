// The CUDA half of the optimizer (engine/optim/adamw.cpp): fused multi-tensor launches
// of the AdamW update (kernels/adamw.cu), the gradient sum of squares and the clipping
// scale (kernels/grad_norm.cu, kernels/elementwise.cu), all on the current stream.
#include <cstring>

#include "engine/backend.h"
#include "engine/cuda/op_helpers.h"
#include "engine/cuda/runtime.h"
#include "kernels/adamw.h"
#include "kernels/elementwise.h"
#include "kernels/grad_norm.h"

namespace engine::backend {

double device_sum_squares(const std::vector<Tensor>& tensors) {
  if (tensors.empty()) return 0.0;
  const Device device = tensors[0].device();
  std::vector<kernels::SquaresTensor> list;
  for (const Tensor& t : tensors)
    list.push_back({t.raw_data(), cuda_ops::elem_type(t.dtype()), t.numel()});
  const int n = static_cast<int>(list.size());
  Tensor workspace = Tensor::empty(
      {static_cast<int64_t>(kernels::sum_squares_workspace_bytes(list.data(), n))}, DType::U8,
      device);
  Tensor result = Tensor::empty({8}, DType::U8, device);
  kernels::sum_squares(list.data(), n, reinterpret_cast<double*>(result.raw_data()),
                       workspace.raw_data(), workspace.nbytes(), cuda::current_stream());
  const Tensor host = result.to(Device::cpu());
  double total = 0;
  std::memcpy(&total, host.raw_data(), sizeof total);
  return total;
}

void device_scale(Tensor& t, float factor) {
  kernels::scale(t.raw_data(), t.raw_data(), factor, cuda_ops::elem_type(t.dtype()), t.numel(),
                 cuda::current_stream());
}

void device_adamw_step(const std::vector<Tensor>& params, std::vector<Tensor>& m,
                       std::vector<Tensor>& v, const std::vector<size_t>& indices,
                       const kmath::AdamWStep& step) {
  if (indices.empty()) return;
  const Device device = params[indices[0]].device();
  std::vector<kernels::AdamWTensor> list;
  std::vector<Tensor> keep;  // gradients converted to f32 stay alive until the launch is queued
  for (size_t i : indices) {
    Tensor g = params[i].grad();
    ENGINE_CHECK(g.device() == device && g.shape() == params[i].shape(), "AdamW: gradient ",
                 g.str(), " does not match parameter ", params[i].str());
    if (g.dtype() != DType::F32) keep.push_back(g = g.to_dtype(DType::F32));
    list.push_back({params[i].data<float>(), g.data<float>(), m[i].data<float>(),
                    v[i].data<float>(), params[i].numel()});
  }
  const int n = static_cast<int>(list.size());
  // The caching allocator is stream-ordered: freeing the workspace after queueing is safe.
  Tensor workspace = Tensor::empty({static_cast<int64_t>(kernels::adamw_workspace_bytes(n))},
                                   DType::U8, device);
  kernels::adamw_step(list.data(), n, step, workspace.raw_data(), workspace.nbytes(),
                      cuda::current_stream());
}

}  // namespace engine::backend
