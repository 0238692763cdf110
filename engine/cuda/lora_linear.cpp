// The (Q)LoRA linear op on CUDA; semantics of the CPU reference (engine/cpu/lora_linear.cpp):
//   y  = x W^T + s d(x) A^T B^T               d = seeded inverted dropout (kmath)
//   dx = dy W + s d'((dy B) A)                 d' = the same mask and 1/(1-p)
//   dA = s (dy B)^T d(x)        dB = s dy^T (d(x) A^T)        W gets no gradient
// x [..., in] is flattened to [n, in]; W [out, in] (frozen: dense or NF4); A [r, in];
// B [out, r]. d(x) = q m(x), m = the bare 0/1 mask (kernels/dropout.h with scale 1),
// q = 1/(1-p); q is folded into the alpha of the GEMM that consumes m(x).
//
// Compute dtype c: bf16 when x is bf16 and the frozen weight is NF4 or bf16 (the
// training path); f32 when x is f32 or the frozen weight is dense f32 (then x, A, B
// are widened, nothing is rounded below the weight's precision, and the result is
// rounded once to x's dtype). A and B (fp32 masters, or bf16) are converted to c for
// the GEMMs (a few KiB to MiB); dA, dB come out in A's and B's dtypes, dx in x's.
// Every GEMM is cuBLASLt with fp32 accumulation (engine/cuda/cublaslt.h).
//
// Forward, in order (all on the current stream):
//   t = q m(x) A^T                    [n, r]    GEMM, alpha q
//   y = s t B^T                       [n, out]  GEMM, alpha s          (LoRA first ...)
//   y = x W^T + y                     [n, out]  GEMM, beta 1           (... base adds it)
// The base GEMM reads the LoRA term in its epilogue (fp32) and rounds once, so only
// the small LoRA term is rounded twice, and there is no extra pass over y. W is
// frozen->dequantize(c) into a [out, in] buffer from the caching allocator, released
// as soon as the GEMM is queued: one layer's weight at a time, and the pool hands the
// same block to the next layer. Few tokens (n <= 64, x already in c): first
// y = frozen->matmul_direct(x) (the NF4 kernel reads the 4-bit weight directly, no
// dense W), then y += s t B^T (beta 1); a weight without a direct kernel returns nothing and
// the dequantize path runs.
//
// Backward (saved: x, A, B only; the mask and t are recomputed):
//   g_b = dy B                        [n, r]
//   dx  = s q g_b A ; dx = m(dx) ; dx = dy W + dx   (dequantize again; beta 1)
//   dA  = s q g_b^T m(x)              [r, in]   reduction over the n rows, in one GEMM
//   t   = q m(x) A^T ; dB = s dy^T t  [out, r]  reduction over the n rows, in one GEMM
// Reductions over tokens run inside cuBLASLt (no atomics): deterministic for a fixed
// device, library and shape.
//
// Device: the frozen weight is an attribute, not a tensor input, so call_op does not
// move it. A weight on another device than x (the op tests build it on the CPU) is
// copied with frozen->to(x.device()) for the call and dropped afterwards; nothing is
// cached. Models keep their frozen weights on the device, where this costs nothing.
#include <string_view>

#include "engine/cuda/cublaslt.h"
#include "engine/cuda/op_helpers.h"
#include "engine/cuda/ops.h"
#include "engine/cuda/runtime.h"
#include "engine/frozen_linear.h"
#include "engine/nvtx.h"
#include "kernels/dropout.h"
#include "kernels/math/activations.h"

namespace engine::cuda_ops {

namespace {

constexpr int64_t kDirectMaxRows = 64;  // FrozenLinear::matmul_direct's documented range

void check_operand(const Tensor& t, const Device& device, const char* what) {
  ENGINE_CHECK(t.device() == device, "lora_linear: ", what, " ", t.str(), " is not on ",
               device.str());
  ENGINE_CHECK(t.dtype() == DType::F32 || t.dtype() == DType::BF16, "lora_linear: ", what, " ",
               t.str(), " must be f32 or bf16");
}

// Shapes, the compute dtype and the frozen weight on x's device, for one call.
struct Call {
  int64_t n = 0, in = 0, out = 0, r = 0;
  DType c = DType::BF16;
  Device device;
  float s = 1.0f;      // LoRA scaling
  bool drop = false;   // p > 0
  float q = 1.0f;      // 1/(1-p)
  std::shared_ptr<const FrozenLinear> w;
};

Call plan(const OpAttrs& at, const Tensor& x, const Tensor& a, const Tensor& b) {
  ENGINE_CHECK(at.frozen != nullptr, "lora_linear: no frozen base weight");
  Call k;
  k.device = x.device();
  ENGINE_CHECK(k.device.is_cuda(), "lora_linear: x ", x.str(), " must be on a CUDA device");
  check_operand(x, k.device, "x");
  check_operand(a, k.device, "lora_A");
  check_operand(b, k.device, "lora_B");
  k.out = at.frozen->out_features();
  k.in = at.frozen->in_features();
  ENGINE_CHECK(x.rank() >= 2 && x.shape().last() == k.in, "lora_linear: input ", x.str(),
               " does not end in in_features ", k.in);
  ENGINE_CHECK(a.rank() == 2 && a.dim(1) == k.in, "lora_linear: lora_A ", a.str(), " is not [r, ",
               k.in, "]");
  ENGINE_CHECK(b.rank() == 2 && b.dim(0) == k.out && b.dim(1) == a.dim(0), "lora_linear: lora_B ",
               b.str(), " is not [", k.out, ", ", a.dim(0), "]");
  k.n = x.shape().rows();
  k.r = a.dim(0);
  const bool dense_f32 = std::string_view(at.frozen->format()) == "f32";
  k.c = (x.dtype() == DType::F32 || dense_f32) ? DType::F32 : DType::BF16;
  k.s = at.lora_scaling;
  k.drop = at.p > 0.0f;  // as the CPU reference: p <= 0 means no dropout
  if (k.drop) {
    ENGINE_CHECK(at.p < 1.0f, "dropout: p must be in [0, 1), got ", at.p);
    k.q = kmath::dropout_scale(at.p);
  }
  k.w = at.frozen->device() == k.device ? at.frozen : at.frozen->to(k.device);
  return k;
}


Tensor in_dtype(const Tensor& t, DType dtype) { return t.dtype() == dtype ? t : t.to_dtype(dtype); }

// c [m, n] = alpha op(a) op(b) + beta c; a, b dense row-major in the same dtype.
void mm(const Tensor& c, const Tensor& a, bool ta, const Tensor& b, bool tb, int64_t m, int64_t n,
        int64_t k, float alpha, float beta) {
  ENGINE_CHECK(a.numel() == m * k && b.numel() == k * n && c.numel() == m * n,
               "lora_linear: internal GEMM shapes ", a.str(), " ", b.str(), " -> ", c.str(),
               " do not fit m=", m, " n=", n, " k=", k);
  cuda::gemm(ta, tb, m, n, k, alpha, a.raw_data(), a.dtype(), 0, b.raw_data(), b.dtype(), 0, beta,
             c.raw_data(), c.dtype(), 0, 1, cuda::current_stream());
}

// The bare dropout mask m(t) in a fresh tensor (t itself when p == 0).
Tensor masked(const Tensor& t, const Call& k, const OpAttrs& at) {
  if (!k.drop) return t;
  Tensor out = Tensor::empty(t.shape(), t.dtype(), t.device());
  kernels::dropout(out.raw_data(), t.raw_data(), cuda_ops::elem_type(t.dtype()), at.p, 1.0f,
                   at.seed, at.offset, t.numel(), cuda::current_stream());
  return out;
}

void mask_in_place(Tensor& t, const Call& k, const OpAttrs& at) {
  if (!k.drop) return;
  kernels::dropout(t.raw_data(), t.raw_data(), cuda_ops::elem_type(t.dtype()), at.p, 1.0f, at.seed,
                   at.offset, t.numel(), cuda::current_stream());
}

// W [out, in] in the compute dtype, in a buffer from the caching allocator.
Tensor dense_weight(const Call& k) {
  NvtxRange range("lora_linear.dequantize");
  Tensor w = k.w->dequantize(k.c, k.device);
  ENGINE_CHECK(w.dtype() == k.c && w.device() == k.device && w.numel() == k.out * k.in,
               "lora_linear: ", k.w->format(), " dequantize gave ", w.str(), ", expected ",
               dtype_name(k.c), "[", k.out, ", ", k.in, "] on ", k.device.str());
  return w;
}

// A weight-gradient buffer: written in `want` directly when the operands are bf16
// (cuBLASLt's bf16 -> f32 and bf16 -> bf16), in f32 otherwise (converted afterwards).
Tensor grad_buffer(const Shape& shape, DType want, const Call& k) {
  return Tensor::empty(shape, k.c == DType::BF16 ? want : DType::F32, k.device);
}

}  // namespace

std::vector<Tensor> lora_linear_forward(OpContext& ctx, const std::vector<Tensor>& in) {
  NvtxRange range("lora_linear_forward");
  const Tensor &x = in[0], &a = in[1], &b = in[2];
  const OpAttrs& at = ctx.attrs;
  const Call k = plan(at, x, a, b);
  const Tensor xc = in_dtype(x, k.c).view({k.n, k.in});
  const Tensor ac = in_dtype(a, k.c), bc = in_dtype(b, k.c);

  Tensor t = Tensor::empty({k.n, k.r}, k.c, k.device);  // t = q m(x) A^T
  mm(t, masked(xc, k, at), false, ac, true, k.n, k.r, k.in, k.q, 0.0f);

  Tensor y;
  if (x.dtype() == k.c && k.n > 0 && k.n <= kDirectMaxRows) {
    NvtxRange direct("lora_linear.direct");
    y = k.w->matmul_direct(xc);
  }
  if (y.defined()) {  // y = x W^T from the stored format; then y += s t B^T
    ENGINE_CHECK(y.dtype() == k.c && y.device() == k.device && y.numel() == k.n * k.out,
                 "lora_linear: ", k.w->format(), " matmul_direct gave ", y.str(), ", expected ",
                 dtype_name(k.c), "[", k.n, ", ", k.out, "]");
    y = y.view({k.n, k.out});
    mm(y, t, false, bc, true, k.n, k.out, k.r, k.s, 1.0f);
  } else {  // y = s t B^T; y = x W^T + y
    y = Tensor::empty({k.n, k.out}, k.c, k.device);
    mm(y, t, false, bc, true, k.n, k.out, k.r, k.s, 0.0f);
    const Tensor w = dense_weight(k);
    mm(y, xc, false, w, true, k.n, k.out, k.in, 1.0f, 1.0f);
  }  // w goes back to the pool here
  ctx.save({x, a, b});
  return {in_dtype(y, x.dtype()).view(x.shape().with(-1, k.out))};
}

std::vector<Tensor> lora_linear_backward(OpContext& ctx, const std::vector<Tensor>& grad_out) {
  NvtxRange range("lora_linear_backward");
  const Tensor &x = ctx.saved[0], &a = ctx.saved[1], &b = ctx.saved[2];
  const OpAttrs& at = ctx.attrs;
  const Call k = plan(at, x, a, b);
  const Tensor& g0 = grad_out[0];
  if (!g0.defined()) return {Tensor(), Tensor(), Tensor()};  // zero gradient: nothing flows
  ENGINE_CHECK(g0.shape() == x.shape().with(-1, k.out) && g0.device() == k.device,
               "lora_linear: gradient ", g0.str(), " does not match the output of ", x.str());
  check_operand(g0, k.device, "gradient");
  const Tensor g = in_dtype(g0, k.c).view({k.n, k.out});
  const Tensor ac = in_dtype(a, k.c), bc = in_dtype(b, k.c);
  const bool want_dx = ctx.wants_grad(0), want_da = ctx.wants_grad(1), want_db = ctx.wants_grad(2);

  Tensor gb;  // g_b = dy B  [n, r]
  if (want_dx || want_da) {
    gb = Tensor::empty({k.n, k.r}, k.c, k.device);
    mm(gb, g, false, bc, false, k.n, k.r, k.out, 1.0f, 0.0f);
  }
  Tensor dx, da, db;
  if (want_dx) {
    Tensor d = Tensor::empty({k.n, k.in}, k.c, k.device);
    mm(d, gb, false, ac, false, k.n, k.in, k.r, k.s * k.q, 0.0f);  // s q g_b A
    mask_in_place(d, k, at);
    {
      const Tensor w = dense_weight(k);
      mm(d, g, false, w, false, k.n, k.in, k.out, 1.0f, 1.0f);  // dy W + d
    }
    dx = in_dtype(d, x.dtype()).view(x.shape());
  }
  if (want_da || want_db) {
    const Tensor xm = masked(in_dtype(x, k.c).view({k.n, k.in}), k, at);
    if (want_da) {  // dA = s q g_b^T m(x)
      da = grad_buffer(a.shape(), a.dtype(), k);
      mm(da, gb, true, xm, false, k.r, k.in, k.n, k.s * k.q, 0.0f);
      da = in_dtype(da, a.dtype());
    }
    if (want_db) {  // t = q m(x) A^T; dB = s dy^T t
      Tensor t = Tensor::empty({k.n, k.r}, k.c, k.device);
      mm(t, xm, false, ac, true, k.n, k.r, k.in, k.q, 0.0f);
      db = grad_buffer(b.shape(), b.dtype(), k);
      mm(db, g, true, t, false, k.out, k.r, k.n, k.s, 0.0f);
      db = in_dtype(db, b.dtype());
    }
  }
  return {dx, da, db};
}

}  // namespace engine::cuda_ops
