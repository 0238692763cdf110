// cuBLASLt GEMM; the contract and the row-major/column-major mapping are in cublaslt.h.
#include "engine/cuda/cublaslt.h"

#include <limits>
#include <map>
#include <memory>
#include <mutex>

#include "engine/allocator.h"
#include "engine/cuda/op_helpers.h"
#include "kernels/check.h"
#include "kernels/elementwise.h"

namespace engine::cuda {

namespace {

struct DeviceBlas {
  cublasLtHandle_t handle = nullptr;
  void* workspace = nullptr;
};

// Created once per device and kept for the life of the process (never destroyed:
// the CUDA runtime may be gone by the time static destructors run).
DeviceBlas& device_blas() {
  int device = 0;
  CUDA_CHECK(cudaGetDevice(&device));
  static std::mutex mutex;
  static std::map<int, DeviceBlas>* table = new std::map<int, DeviceBlas>();
  std::lock_guard<std::mutex> lock(mutex);
  auto it = table->find(device);
  if (it != table->end()) return it->second;
  DeviceBlas blas;
  // Allocate first: if the budget refuses, no handle is left behind.
  MemoryOwnerScope owner("workspace");
  blas.workspace = allocator_for(Device::cuda(device)).allocate(kCublasWorkspaceBytes);
  cublasStatus_t status = cublasLtCreate(&blas.handle);
  if (status != CUBLAS_STATUS_SUCCESS) {
    allocator_for(Device::cuda(device)).release(blas.workspace, kCublasWorkspaceBytes);
    CUBLAS_CHECK(status);
  }
  return table->emplace(device, blas).first->second;
}

// RAII for the descriptor objects of one call.
struct LayoutDeleter {
  void operator()(cublasLtMatrixLayoutOpaque_t* p) const { (void)cublasLtMatrixLayoutDestroy(p); }
};
struct MatmulDescDeleter {
  void operator()(cublasLtMatmulDescOpaque_t* p) const { (void)cublasLtMatmulDescDestroy(p); }
};
struct PreferenceDeleter {
  void operator()(cublasLtMatmulPreferenceOpaque_t* p) const {
    (void)cublasLtMatmulPreferenceDestroy(p);
  }
};
using Layout = std::unique_ptr<cublasLtMatrixLayoutOpaque_t, LayoutDeleter>;

cudaDataType_t cuda_type(DType t) {
  switch (t) {
    case DType::F32: return CUDA_R_32F;
    case DType::BF16: return CUDA_R_16BF;
    default: break;
  }
  ENGINE_CHECK(false, "gemm: unsupported element type ", dtype_name(t), " (f32, bf16)");
  return CUDA_R_32F;
}

// A column-major [rows, cols] layout with leading dimension ld, repeated `batch`
// times `stride` elements apart.
Layout make_layout(DType t, int64_t rows, int64_t cols, int64_t ld, int64_t batch, int64_t stride) {
  cublasLtMatrixLayout_t raw = nullptr;
  CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&raw, cuda_type(t), static_cast<uint64_t>(rows),
                                          static_cast<uint64_t>(cols), ld));
  Layout layout(raw);
  if (batch > 1) {
    int32_t count = static_cast<int32_t>(batch);
    CUBLAS_CHECK(cublasLtMatrixLayoutSetAttribute(raw, CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT, &count,
                                                  sizeof count));
    CUBLAS_CHECK(cublasLtMatrixLayoutSetAttribute(raw, CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET,
                                                  &stride, sizeof stride));
  }
  return layout;
}

// The largest power of two (<= 256) dividing the address of every batch's matrix.
// The heuristic must be told: by default it assumes 256-byte aligned operands.
uint32_t alignment_of(const void* p, int64_t stride, size_t element_bytes, int64_t batch) {
  uintptr_t bits = reinterpret_cast<uintptr_t>(p);
  if (batch > 1) bits |= static_cast<uintptr_t>(stride) * element_bytes;
  uint32_t a = 256;
  while (a > 1 && bits % a != 0) a /= 2;
  return a;
}

void set_pref(cublasLtMatmulPreference_t pref, cublasLtMatmulPreferenceAttributes_t attr,
              uint32_t value) {
  CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, attr, &value, sizeof value));
}


}  // namespace

void gemm(bool transpose_a, bool transpose_b, int64_t m, int64_t n, int64_t k, float alpha,
          const void* a, DType a_type, int64_t stride_a, const void* b, DType b_type,
          int64_t stride_b, float beta, void* c, DType c_type, int64_t stride_c, int64_t batch,
          cudaStream_t stream) {
  ENGINE_CHECK(m >= 0 && n >= 0 && k >= 0 && batch >= 0, "gemm: negative size m=", m, " n=", n,
               " k=", k, " batch=", batch);
  ENGINE_CHECK(batch <= std::numeric_limits<int32_t>::max(), "gemm: batch ", batch, " too large");
  ENGINE_CHECK(stride_a >= 0 && stride_b >= 0 && stride_c >= 0, "gemm: negative batch stride");
  bool supported = a_type == b_type && ((a_type == DType::F32 && c_type == DType::F32) ||
                                        (a_type == DType::BF16 && (c_type == DType::BF16 ||
                                                                   c_type == DType::F32)));
  ENGINE_CHECK(supported, "gemm: unsupported types ", dtype_name(a_type), " x ",
               dtype_name(b_type), " -> ", dtype_name(c_type),
               " (f32 x f32 -> f32, bf16 x bf16 -> bf16 or f32)");
  if (m == 0 || n == 0 || batch == 0) return;
  ENGINE_CHECK(c != nullptr, "gemm: null C");
  ENGINE_CHECK(batch == 1 || stride_c >= m * n, "gemm: C batches overlap (stride ", stride_c,
               " < ", m, " x ", n, ")");
  if (k == 0) {  // C = beta * C, which cuBLASLt does not promise for an empty sum
    for (int64_t i = 0; i < batch; ++i) {
      void* ci = static_cast<char*>(c) + i * stride_c * static_cast<int64_t>(dtype_bits(c_type) / 8);
      if (beta == 0.0f)
        kernels::fill(ci, cuda_ops::elem_type(c_type), 0.0f, m * n, stream);
      else
        kernels::scale(ci, ci, beta, cuda_ops::elem_type(c_type), m * n, stream);
    }
    return;
  }
  ENGINE_CHECK(a != nullptr && b != nullptr, "gemm: null A or B");

  DeviceBlas& blas = device_blas();
  const size_t ab_bytes = static_cast<size_t>(dtype_bits(a_type) / 8);
  const size_t c_bytes = static_cast<size_t>(dtype_bits(c_type) / 8);

  // cuBLAS "A" = our B seen column-major: [n, k] (ld n), or [k, n] (ld k) when transposed.
  Layout la = transpose_b ? make_layout(b_type, k, n, k, batch, stride_b)
                          : make_layout(b_type, n, k, n, batch, stride_b);
  // cuBLAS "B" = our A seen column-major: [k, m] (ld k), or [m, k] (ld m) when transposed.
  Layout lb = transpose_a ? make_layout(a_type, m, k, m, batch, stride_a)
                          : make_layout(a_type, k, m, k, batch, stride_a);
  // C^T: [n, m] column-major, ld n.
  Layout lc = make_layout(c_type, n, m, n, batch, stride_c);

  cublasLtMatmulDesc_t raw_desc = nullptr;
  CUBLAS_CHECK(cublasLtMatmulDescCreate(&raw_desc, CUBLAS_COMPUTE_32F, CUDA_R_32F));
  std::unique_ptr<cublasLtMatmulDescOpaque_t, MatmulDescDeleter> desc(raw_desc);
  cublasOperation_t op_a = transpose_b ? CUBLAS_OP_T : CUBLAS_OP_N;
  cublasOperation_t op_b = transpose_a ? CUBLAS_OP_T : CUBLAS_OP_N;
  CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(raw_desc, CUBLASLT_MATMUL_DESC_TRANSA, &op_a, sizeof op_a));
  CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(raw_desc, CUBLASLT_MATMUL_DESC_TRANSB, &op_b, sizeof op_b));

  cublasLtMatmulPreference_t raw_pref = nullptr;
  CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&raw_pref));
  std::unique_ptr<cublasLtMatmulPreferenceOpaque_t, PreferenceDeleter> pref(raw_pref);
  uint64_t workspace = kCublasWorkspaceBytes;
  CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(
      raw_pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &workspace, sizeof workspace));
  set_pref(raw_pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES,
           alignment_of(b, stride_b, ab_bytes, batch));
  set_pref(raw_pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES,
           alignment_of(a, stride_a, ab_bytes, batch));
  uint32_t c_align = alignment_of(c, stride_c, c_bytes, batch);
  set_pref(raw_pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, c_align);
  set_pref(raw_pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, c_align);

  cublasLtMatmulHeuristicResult_t heuristic{};
  int found = 0;
  cublasStatus_t status = cublasLtMatmulAlgoGetHeuristic(blas.handle, raw_desc, la.get(), lb.get(),
                                                         lc.get(), lc.get(), raw_pref, 1,
                                                         &heuristic, &found);
  ENGINE_CHECK(status == CUBLAS_STATUS_SUCCESS && found > 0,
               "gemm: cuBLASLt found no algorithm for ", dtype_name(a_type), " -> ",
               dtype_name(c_type), " m=", m, " n=", n, " k=", k, " batch=", batch,
               transpose_a ? " A^T" : "", transpose_b ? " B^T" : "", " (",
               cublasLtGetStatusName(status), ")");
  CUBLAS_CHECK(cublasLtMatmul(blas.handle, raw_desc, &alpha, b, la.get(), a, lb.get(), &beta, c,
                              lc.get(), c, lc.get(), &heuristic.algo, blas.workspace,
                              kCublasWorkspaceBytes, stream));
}

}  // namespace engine::cuda
