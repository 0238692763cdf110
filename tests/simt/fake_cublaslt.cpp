// A CPU test double of cuBLASLt, linked instead of libcublasLt by the SIMT emulation
// build only. Like fake_cudart.cpp, device memory is host memory and every call is
// synchronous: cublasLtMatmul has finished when it returns.
//
// cublasLtMatmul is a reference GEMM, not a fast one: column-major
// D = alpha * op(A) * op(B) + beta * C, each dot product accumulated in float in
// increasing k order, then alpha and beta applied in float and the result rounded
// once to D's type (bf16: round to nearest even). beta == 0 does not read C, and D
// may be C itself (same layout).
//
// Limits: compute type CUBLAS_COMPUTE_32F with scale type CUDA_R_32F; A and B both
// f32 with C and D f32, or A and B both bf16 with C and D both bf16 or both f32; op
// N or T; column order; strided batches. Other descriptor attributes (epilogues,
// pointer mode, ...) and layout attributes are CUBLAS_STATUS_NOT_SUPPORTED; alpha and
// beta are host floats. The algorithm, workspace and preferences are ignored.
#include <cublasLt.h>
#include <cuda_bf16.h>

#include <cstdint>
#include <cstring>
#include <limits>
#include <new>
#include <type_traits>
#include <vector>

struct cublasLtContext {};  // the handle carries no state

namespace {

// The descriptors are the header's fixed-size opaque structs; these states live in
// their `data` words, copied in and out with memcpy.
struct DescState {
  cublasComputeType_t compute;
  cudaDataType_t scale;
  bool transpose_a;
  bool transpose_b;
};

struct LayoutState {
  cudaDataType_t type;
  int64_t rows;
  int64_t cols;
  int64_t ld;
  int32_t batch_count;
  int64_t batch_stride;  // elements
};

template <class State, class Opaque>
State load(const Opaque* opaque) {
  static_assert(std::is_trivially_copyable_v<State> && sizeof(State) <= sizeof(opaque->data));
  State state;
  std::memcpy(&state, opaque->data, sizeof state);
  return state;
}

template <class State, class Opaque>
void store(Opaque* opaque, const State& state) {
  static_assert(std::is_trivially_copyable_v<State> && sizeof(State) <= sizeof(opaque->data));
  std::memcpy(opaque->data, &state, sizeof state);
}

template <class Opaque>
cublasStatus_t allocate(Opaque** out) {
  if (out == nullptr) return CUBLAS_STATUS_INVALID_VALUE;
  *out = new (std::nothrow) Opaque{};
  return *out != nullptr ? CUBLAS_STATUS_SUCCESS : CUBLAS_STATUS_ALLOC_FAILED;
}

template <class Opaque, class State>
cublasStatus_t create(Opaque** out, const State& state) {
  cublasStatus_t status = allocate(out);
  if (status == CUBLAS_STATUS_SUCCESS) store(*out, state);
  return status;
}

// An attribute value of exactly type T, as cuBLASLt checks sizeInBytes.
template <class T>
bool read_value(const void* buf, size_t size, T* value) {
  if (buf == nullptr || size != sizeof(T)) return false;
  std::memcpy(value, buf, sizeof(T));
  return true;
}

// One validated matmul: op(A) is m x k, op(B) is k x n, C and D are m x n.
struct Problem {
  DescState op;
  LayoutState a, b, c, d;
  int64_t m, n, k;
};

bool supported_types(const LayoutState& a, const LayoutState& b, const LayoutState& c,
                     const LayoutState& d) {
  if (a.type != b.type || c.type != d.type) return false;
  if (a.type == CUDA_R_32F) return c.type == CUDA_R_32F;
  return a.type == CUDA_R_16BF && (c.type == CUDA_R_16BF || c.type == CUDA_R_32F);
}

cublasStatus_t describe(cublasLtMatmulDesc_t desc, cublasLtMatrixLayout_t a_desc,
                        cublasLtMatrixLayout_t b_desc, cublasLtMatrixLayout_t c_desc,
                        cublasLtMatrixLayout_t d_desc, Problem* p) {
  if (!desc || !a_desc || !b_desc || !c_desc || !d_desc) return CUBLAS_STATUS_INVALID_VALUE;
  p->op = load<DescState>(desc);
  p->a = load<LayoutState>(a_desc);
  p->b = load<LayoutState>(b_desc);
  p->c = load<LayoutState>(c_desc);
  p->d = load<LayoutState>(d_desc);
  if (p->op.compute != CUBLAS_COMPUTE_32F || p->op.scale != CUDA_R_32F ||
      !supported_types(p->a, p->b, p->c, p->d))
    return CUBLAS_STATUS_NOT_SUPPORTED;
  p->m = p->op.transpose_a ? p->a.cols : p->a.rows;
  p->k = p->op.transpose_a ? p->a.rows : p->a.cols;
  p->n = p->op.transpose_b ? p->b.rows : p->b.cols;
  const int64_t k_of_b = p->op.transpose_b ? p->b.cols : p->b.rows;
  if (k_of_b != p->k) return CUBLAS_STATUS_INVALID_VALUE;
  for (const LayoutState* x : {&p->c, &p->d})
    if (x->rows != p->m || x->cols != p->n) return CUBLAS_STATUS_INVALID_VALUE;
  for (const LayoutState* x : {&p->a, &p->b, &p->c, &p->d})
    if (x->ld < x->rows || x->ld < 1 || x->batch_count != p->a.batch_count)
      return CUBLAS_STATUS_INVALID_VALUE;
  return CUBLAS_STATUS_SUCCESS;
}

size_t element_bytes(cudaDataType_t type) { return type == CUDA_R_16BF ? 2 : 4; }

float read_element(const void* base, cudaDataType_t type, int64_t index) {
  if (type == CUDA_R_16BF) return __bfloat162float(static_cast<const __nv_bfloat16*>(base)[index]);
  return static_cast<const float*>(base)[index];
}

void write_element(void* base, cudaDataType_t type, int64_t index, float value) {
  if (type == CUDA_R_16BF) static_cast<__nv_bfloat16*>(base)[index] = __float2bfloat16_rn(value);
  else static_cast<float*>(base)[index] = value;
}

// Matrix `batch` of a strided batch.
template <class Byte>
Byte* batch_base(Byte* base, const LayoutState& layout, int64_t batch) {
  return base == nullptr ? nullptr
                         : base + batch * layout.batch_stride *
                                      static_cast<int64_t>(element_bytes(layout.type));
}

// One matrix of the batch. op(A) and op(B) are first unpacked to float, op(A) by rows
// and op(B) by columns, so every dot product reads two contiguous vectors.
void multiply(const Problem& p, float alpha, const void* a, const void* b, float beta,
              const void* c, void* d, std::vector<float>& a_rows, std::vector<float>& b_cols) {
  const int64_t m = p.m, n = p.n, k = p.k;
  for (int64_t i = 0; i < m; ++i)
    for (int64_t l = 0; l < k; ++l)
      a_rows[i * k + l] =
          read_element(a, p.a.type, p.op.transpose_a ? l + i * p.a.ld : i + l * p.a.ld);
  for (int64_t j = 0; j < n; ++j)
    for (int64_t l = 0; l < k; ++l)
      b_cols[j * k + l] =
          read_element(b, p.b.type, p.op.transpose_b ? j + l * p.b.ld : l + j * p.b.ld);
  for (int64_t j = 0; j < n; ++j) {
    for (int64_t i = 0; i < m; ++i) {
      const float* x = a_rows.data() + i * k;
      const float* y = b_cols.data() + j * k;
      float acc = 0.0f;
      for (int64_t l = 0; l < k; ++l) acc += x[l] * y[l];
      float out = alpha * acc;
      // Read C before writing D: they may be the same memory.
      if (beta != 0.0f) out += beta * read_element(c, p.c.type, i + j * p.c.ld);
      write_element(d, p.d.type, i + j * p.d.ld, out);
    }
  }
}

}  // namespace

extern "C" {

cublasStatus_t cublasLtCreate(cublasLtHandle_t* lightHandle) {
  if (lightHandle == nullptr) return CUBLAS_STATUS_INVALID_VALUE;
  *lightHandle = new (std::nothrow) cublasLtContext{};
  return *lightHandle != nullptr ? CUBLAS_STATUS_SUCCESS : CUBLAS_STATUS_ALLOC_FAILED;
}

cublasStatus_t cublasLtDestroy(cublasLtHandle_t lightHandle) {
  if (lightHandle == nullptr) return CUBLAS_STATUS_NOT_INITIALIZED;
  delete lightHandle;
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatmulDescCreate(cublasLtMatmulDesc_t* matmulDesc,
                                        cublasComputeType_t computeType,
                                        cudaDataType_t scaleType) {
  return create(matmulDesc, DescState{computeType, scaleType, false, false});
}

cublasStatus_t cublasLtMatmulDescDestroy(cublasLtMatmulDesc_t matmulDesc) {
  delete matmulDesc;
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatmulDescSetAttribute(cublasLtMatmulDesc_t matmulDesc,
                                              cublasLtMatmulDescAttributes_t attr,
                                              const void* buf, size_t sizeInBytes) {
  if (matmulDesc == nullptr) return CUBLAS_STATUS_INVALID_VALUE;
  if (attr != CUBLASLT_MATMUL_DESC_TRANSA && attr != CUBLASLT_MATMUL_DESC_TRANSB)
    return CUBLAS_STATUS_NOT_SUPPORTED;
  int32_t op = 0;  // the header's type for TRANSA and TRANSB
  if (!read_value(buf, sizeInBytes, &op)) return CUBLAS_STATUS_INVALID_VALUE;
  if (op != CUBLAS_OP_N && op != CUBLAS_OP_T) return CUBLAS_STATUS_NOT_SUPPORTED;
  DescState state = load<DescState>(matmulDesc);
  (attr == CUBLASLT_MATMUL_DESC_TRANSA ? state.transpose_a : state.transpose_b) = op == CUBLAS_OP_T;
  store(matmulDesc, state);
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatrixLayoutCreate(cublasLtMatrixLayout_t* matLayout, cudaDataType type,
                                          uint64_t rows, uint64_t cols, int64_t ld) {
  // The header: "usually only values that can be expressed as int32_t are supported".
  constexpr uint64_t kMaxDim = std::numeric_limits<int32_t>::max();
  if (rows > kMaxDim || cols > kMaxDim) return CUBLAS_STATUS_NOT_SUPPORTED;
  return create(matLayout, LayoutState{type, static_cast<int64_t>(rows),
                                       static_cast<int64_t>(cols), ld, 1, 0});
}

cublasStatus_t cublasLtMatrixLayoutDestroy(cublasLtMatrixLayout_t matLayout) {
  delete matLayout;
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatrixLayoutSetAttribute(cublasLtMatrixLayout_t matLayout,
                                                cublasLtMatrixLayoutAttribute_t attr,
                                                const void* buf, size_t sizeInBytes) {
  if (matLayout == nullptr) return CUBLAS_STATUS_INVALID_VALUE;
  LayoutState state = load<LayoutState>(matLayout);
  switch (attr) {
    case CUBLASLT_MATRIX_LAYOUT_ORDER: {
      int32_t order = 0;
      if (!read_value(buf, sizeInBytes, &order)) return CUBLAS_STATUS_INVALID_VALUE;
      return order == CUBLASLT_ORDER_COL ? CUBLAS_STATUS_SUCCESS : CUBLAS_STATUS_NOT_SUPPORTED;
    }
    case CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT:
      if (!read_value(buf, sizeInBytes, &state.batch_count) || state.batch_count < 1)
        return CUBLAS_STATUS_INVALID_VALUE;
      break;
    case CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET:
      if (!read_value(buf, sizeInBytes, &state.batch_stride)) return CUBLAS_STATUS_INVALID_VALUE;
      break;
    default: return CUBLAS_STATUS_NOT_SUPPORTED;
  }
  store(matLayout, state);
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatmulPreferenceCreate(cublasLtMatmulPreference_t* pref) {
  return allocate(pref);  // no state: preferences are ignored
}

cublasStatus_t cublasLtMatmulPreferenceDestroy(cublasLtMatmulPreference_t pref) {
  delete pref;
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatmulPreferenceSetAttribute(cublasLtMatmulPreference_t pref,
                                                    cublasLtMatmulPreferenceAttributes_t /*attr*/,
                                                    const void* buf, size_t /*sizeInBytes*/) {
  return pref != nullptr && buf != nullptr ? CUBLAS_STATUS_SUCCESS : CUBLAS_STATUS_INVALID_VALUE;
}

cublasStatus_t cublasLtMatmulAlgoGetHeuristic(
    cublasLtHandle_t lightHandle, cublasLtMatmulDesc_t operationDesc, cublasLtMatrixLayout_t Adesc,
    cublasLtMatrixLayout_t Bdesc, cublasLtMatrixLayout_t Cdesc, cublasLtMatrixLayout_t Ddesc,
    cublasLtMatmulPreference_t /*preference*/, int requestedAlgoCount,
    cublasLtMatmulHeuristicResult_t heuristicResultsArray[], int* returnAlgoCount) {
  if (lightHandle == nullptr) return CUBLAS_STATUS_NOT_INITIALIZED;
  if (requestedAlgoCount <= 0 || heuristicResultsArray == nullptr || returnAlgoCount == nullptr)
    return CUBLAS_STATUS_INVALID_VALUE;
  *returnAlgoCount = 0;
  Problem problem;
  cublasStatus_t status = describe(operationDesc, Adesc, Bdesc, Cdesc, Ddesc, &problem);
  if (status != CUBLAS_STATUS_SUCCESS) return status;
  heuristicResultsArray[0] = cublasLtMatmulHeuristicResult_t{};  // workspaceSize 0
  heuristicResultsArray[0].state = CUBLAS_STATUS_SUCCESS;
  heuristicResultsArray[0].wavesCount = 1.0f;
  *returnAlgoCount = 1;
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatmul(cublasLtHandle_t lightHandle, cublasLtMatmulDesc_t computeDesc,
                              const void* alpha, const void* A, cublasLtMatrixLayout_t Adesc,
                              const void* B, cublasLtMatrixLayout_t Bdesc, const void* beta,
                              const void* C, cublasLtMatrixLayout_t Cdesc, void* D,
                              cublasLtMatrixLayout_t Ddesc, const cublasLtMatmulAlgo_t* /*algo*/,
                              void* /*workspace*/, size_t /*workspaceSizeInBytes*/,
                              cudaStream_t /*stream*/) {
  if (lightHandle == nullptr) return CUBLAS_STATUS_NOT_INITIALIZED;
  Problem p;
  cublasStatus_t status = describe(computeDesc, Adesc, Bdesc, Cdesc, Ddesc, &p);
  if (status != CUBLAS_STATUS_SUCCESS) return status;
  if (alpha == nullptr || beta == nullptr) return CUBLAS_STATUS_INVALID_VALUE;
  const float alpha_value = *static_cast<const float*>(alpha);
  const float beta_value = *static_cast<const float*>(beta);
  if (p.m == 0 || p.n == 0) return CUBLAS_STATUS_SUCCESS;
  if ((p.k > 0 && (A == nullptr || B == nullptr)) || D == nullptr ||
      (beta_value != 0.0f && C == nullptr))
    return CUBLAS_STATUS_INVALID_VALUE;
  try {
    std::vector<float> a_rows(static_cast<size_t>(p.m * p.k));
    std::vector<float> b_cols(static_cast<size_t>(p.n * p.k));
    const auto* a = static_cast<const char*>(A);
    const auto* b = static_cast<const char*>(B);
    const auto* c = static_cast<const char*>(C);
    auto* d = static_cast<char*>(D);
    for (int64_t i = 0; i < p.a.batch_count; ++i)
      multiply(p, alpha_value, batch_base(a, p.a, i), batch_base(b, p.b, i), beta_value,
               batch_base(c, p.c, i), batch_base(d, p.d, i), a_rows, b_cols);
  } catch (const std::bad_alloc&) {
    return CUBLAS_STATUS_ALLOC_FAILED;
  }
  return CUBLAS_STATUS_SUCCESS;
}

const char* cublasLtGetStatusName(cublasStatus_t status) {
  switch (status) {
#define STATUS_NAME(s) case s: return #s;
    STATUS_NAME(CUBLAS_STATUS_SUCCESS)
    STATUS_NAME(CUBLAS_STATUS_NOT_INITIALIZED)
    STATUS_NAME(CUBLAS_STATUS_ALLOC_FAILED)
    STATUS_NAME(CUBLAS_STATUS_INVALID_VALUE)
    STATUS_NAME(CUBLAS_STATUS_ARCH_MISMATCH)
    STATUS_NAME(CUBLAS_STATUS_MAPPING_ERROR)
    STATUS_NAME(CUBLAS_STATUS_EXECUTION_FAILED)
    STATUS_NAME(CUBLAS_STATUS_INTERNAL_ERROR)
    STATUS_NAME(CUBLAS_STATUS_NOT_SUPPORTED)
    STATUS_NAME(CUBLAS_STATUS_LICENSE_ERROR)
#undef STATUS_NAME
  }
  return "<unknown>";
}

const char* cublasLtGetStatusString(cublasStatus_t status) {
  switch (status) {
    case CUBLAS_STATUS_SUCCESS: return "success";
    case CUBLAS_STATUS_NOT_INITIALIZED: return "the library was not initialized";
    case CUBLAS_STATUS_ALLOC_FAILED: return "the resource allocation failed";
    case CUBLAS_STATUS_INVALID_VALUE: return "an invalid numeric value was used as an argument";
    case CUBLAS_STATUS_ARCH_MISMATCH: return "an absent device architectural feature is required";
    case CUBLAS_STATUS_MAPPING_ERROR: return "an access to GPU memory space failed";
    case CUBLAS_STATUS_EXECUTION_FAILED: return "the GPU program failed to execute";
    case CUBLAS_STATUS_INTERNAL_ERROR: return "an internal operation failed";
    case CUBLAS_STATUS_NOT_SUPPORTED: return "the requested functionality is not supported";
    case CUBLAS_STATUS_LICENSE_ERROR: return "error detected trying to check the license";
  }
  return "unknown error";
}

}  // extern "C"
