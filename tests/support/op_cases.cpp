#include "tests/support/op_cases.h"

#include <algorithm>
#include <cmath>
#include <sstream>

#include "engine/frozen_linear.h"
#include "engine/quant/nf4_linear.h"
#include "engine/rng.h"

namespace testing_support {

using engine::OpAttrs;
using engine::OpId;
using engine::Shape;
using engine::Tensor;

namespace {

struct CaseBuilder {
  engine::Generator gen;
  std::vector<OpCase> cases;

  Tensor rand(const Shape& s, float lo = -1.0f, float hi = 1.0f) {
    return engine::uniform(s, lo, hi, gen);
  }
  Tensor ids(const Shape& s, int32_t upper, float ignore_fraction = 0.0f, int ignore = -100) {
    Tensor u = rand(s, 0.0f, 1.0f);
    std::vector<int32_t> v(s.numel());
    for (int64_t i = 0; i < s.numel(); ++i) {
      float r = u.data<float>()[i];
      v[i] = r < ignore_fraction ? ignore
                                 : static_cast<int32_t>((r - ignore_fraction) /
                                                        (1.0f - ignore_fraction) * upper) % upper;
    }
    return Tensor::from_ints(v, s);
  }
  void add(std::string label, std::vector<Tensor> in, std::vector<bool> diff, int64_t acc,
           OpAttrs attrs = {}) {
    cases.push_back({std::move(label), std::move(in), attrs, std::move(diff), acc, 0, 0, {}});
  }
};

void matmul_cases(CaseBuilder& b) {
  for (int t = 0; t < 4; ++t) {
    bool ta = t & 1, tb = t & 2;
    OpAttrs a;
    a.transpose_a = ta;
    a.transpose_b = tb;
    int64_t m = 3, k = 7, n = 5;
    Shape sa = ta ? Shape{k, m} : Shape{m, k}, sb = tb ? Shape{n, k} : Shape{k, n};
    b.add("2d ta=" + std::to_string(ta) + " tb=" + std::to_string(tb), {b.rand(sa), b.rand(sb)},
          {true, true}, k, a);
  }
  OpAttrs tb;
  tb.transpose_b = true;
  // Reduction lengths: forward K; dW of a shared W sums over all 2*3*5 rows.
  b.add("batched x@W^T shared W [2,3,5,7]x[4,7]", {b.rand({2, 3, 5, 7}), b.rand({4, 7})},
        {true, true}, 30, tb);
  b.add("batched [2,3,4]x[2,4,5]", {b.rand({2, 3, 4}), b.rand({2, 4, 5})}, {true, true}, 5);
}

void elementwise_cases(CaseBuilder& b, OpId id) {
  for (Shape s : {Shape{7}, Shape{3, 5}, Shape{2, 3, 1, 9}}) {
    switch (id) {
      case OpId::Add:
      case OpId::Mul:
      case OpId::SwiGLU: b.add(s.str(), {b.rand(s), b.rand(s)}, {true, true}, 1); break;
      case OpId::Scale: {
        OpAttrs a;
        a.factor = -1.75f;
        b.add(s.str(), {b.rand(s)}, {true}, 1, a);
        break;
      }
      case OpId::Silu: b.add(s.str(), {b.rand(s, -4.0f, 4.0f)}, {true}, 1); break;
      case OpId::Softmax: b.add(s.str(), {b.rand(s, -3.0f, 3.0f)}, {true}, s.last()); break;
      case OpId::Sum:
      case OpId::Mean: b.add(s.str(), {b.rand(s)}, {true}, s.numel()); break;
      case OpId::Reshape: {
        OpAttrs a;
        a.shape = Shape{s.numel()};
        b.add(s.str(), {b.rand(s)}, {true}, 1, a);
        break;
      }
      case OpId::Dropout: {
        OpAttrs a;
        a.p = 0.3f;
        a.seed = 1234;
        a.offset = 77;
        b.add(s.str(), {b.rand(s)}, {true}, 1, a);
        break;
      }
      default: break;
    }
  }
}

void rms_norm_cases(CaseBuilder& b) {
  for (Shape s : {Shape{1, 8}, Shape{3, 13}, Shape{2, 3, 33}}) {
    OpAttrs a;
    a.eps = 1e-5f;
    b.add(s.str(), {b.rand(s, -2.0f, 2.0f), b.rand({s.last()}, 0.5f, 1.5f)}, {true, true},
          s.last(), a);
  }
}

// Packed sequences: per batch entry, document lengths summing to the sequence length.
// Returns doc_start (attention) or, with positions = true, the restarting positions (rope).
Tensor doc_layout(const std::vector<std::vector<int32_t>>& lengths, bool positions) {
  std::vector<int32_t> v;
  for (const auto& row : lengths) {
    int32_t t = 0;
    for (int32_t n : row)
      for (int32_t p = 0; p < n; ++p, ++t) v.push_back(positions ? p : t - p);
  }
  const int64_t seq = static_cast<int64_t>(v.size() / lengths.size());
  return Tensor::from_ints(v, Shape{static_cast<int64_t>(lengths.size()), seq});
}

void rope_cases(CaseBuilder& b) {
  OpAttrs plain;
  plain.rope.theta = 10000.0f;
  plain.position_offset = 0;
  b.add("[1,5,2,8] theta 1e4", {b.rand({1, 5, 2, 8})}, {true}, 8, plain);
  OpAttrs llama3;
  llama3.rope.theta = 500000.0f;
  llama3.rope.scaling_factor = 8.0f;
  llama3.rope.original_max_position = 32.0f;  // small so all three frequency bands occur
  llama3.position_offset = 3;
  b.add("[2,7,3,16] llama3 scaling, offset 3", {b.rand({2, 7, 3, 16})}, {true}, 16, llama3);
  b.add("[2,7,3,16] packed positions {3,4} {1,1,5}, offset 3",
        {b.rand({2, 7, 3, 16}), doc_layout({{3, 4}, {1, 1, 5}}, true)}, {true, false}, 16, llama3);
}

void attention_cases(CaseBuilder& b) {
  struct Dims { int64_t batch, seq, hq, hkv, d; };
  for (Dims d : {Dims{1, 1, 1, 1, 4}, Dims{1, 5, 2, 2, 8}, Dims{2, 7, 4, 2, 6}, Dims{1, 9, 6, 1, 5}}) {
    std::ostringstream label;  // (not operator+: GCC 12 raises a false -Wrestrict there)
    label << "B" << d.batch << " T" << d.seq << " Hq" << d.hq << " Hkv" << d.hkv << " D" << d.d;
    OpAttrs a;
    a.softmax_scale = 1.0f;  // not the default 1/sqrt(D): the scale must be applied, not assumed
    b.add(label.str(),
          {b.rand({d.batch, d.seq, d.hq, d.d}), b.rand({d.batch, d.seq, d.hkv, d.d}),
           b.rand({d.batch, d.seq, d.hkv, d.d})},
          {true, true, true}, d.seq * d.d, a);
  }
  // Packed sequences: documents of one token, of the whole sequence, and in between; the
  // lengths straddle where the kernels' tiles would split.
  struct Packed { Dims d; std::vector<std::vector<int32_t>> docs; const char* label; };
  for (const Packed& p :
       {Packed{{2, 9, 4, 2, 6}, {{3, 4, 2}, {1, 8}}, "B2 T9 Hq4 Hkv2 D6 docs {3,4,2} {1,8}"},
        Packed{{1, 7, 3, 1, 5}, {{1, 1, 2, 1, 2}}, "B1 T7 Hq3 Hkv1 D5 docs {1,1,2,1,2}"}}) {
    OpAttrs a;
    a.softmax_scale = 1.0f;
    const Dims& d = p.d;
    b.add(p.label,
          {b.rand({d.batch, d.seq, d.hq, d.d}), b.rand({d.batch, d.seq, d.hkv, d.d}),
           b.rand({d.batch, d.seq, d.hkv, d.d}), doc_layout(p.docs, false)},
          {true, true, true, false}, d.seq * d.d, a);
  }
}

void embedding_cases(CaseBuilder& b) {
  b.add("ids [2,5] table [11,6] (repeats likely)", {b.ids({2, 5}, 11), b.rand({11, 6})},
        {false, true}, 1);
  b.add("ids [3] table [4,3]", {b.ids({3}, 4), b.rand({4, 3})}, {false, true}, 1);
}

void cross_entropy_cases(CaseBuilder& b) {
  b.add("[6,9] no ignores", {b.rand({6, 9}, -3.0f, 3.0f), b.ids({6}, 9)}, {true, false}, 9);
  b.add("[11,17] 30% ignored", {b.rand({11, 17}, -3.0f, 3.0f), b.ids({11}, 17, 0.3f)},
        {true, false}, 17);
}

void lora_linear_cases(CaseBuilder& b) {
  struct Dims { int64_t rows, in, out, r; float p; };
  for (Dims d : {Dims{5, 7, 6, 2, 0.0f}, Dims{9, 13, 11, 4, 0.25f}}) {
    OpAttrs a;
    a.frozen = std::make_shared<engine::DenseFrozenLinear>(b.rand({d.out, d.in}));
    a.lora_scaling = 2.0f;
    a.p = d.p;
    a.seed = 5;
    a.offset = 100;
    std::ostringstream label;
    label << "x [" << d.rows << "," << d.in << "] out " << d.out << " r " << d.r << " dropout " << d.p;
    // B is random rather than PEFT's zeros so that every gradient path is exercised.
    b.add(label.str(), {b.rand({d.rows, d.in}), b.rand({d.r, d.in}), b.rand({d.out, d.r})},
          {true, true, true}, d.in + d.r, a);
  }
  OpAttrs a3;
  a3.frozen = std::make_shared<engine::DenseFrozenLinear>(b.rand({4, 6}));
  a3.lora_scaling = 0.5f;
  b.add("x [2,3,6] batched", {b.rand({2, 3, 6}), b.rand({3, 6}), b.rand({4, 3})}, {true, true, true},
        6 + 3, a3);

  // QLoRA: an NF4 (double-quantized) frozen weight with a short last block. 9 rows take
  // the direct NF4 kernel on CUDA, 80 rows the dequantize-then-GEMM path. Longest chain:
  // dA sums dy B (out terms) over the rows, so K = max(in, out) + max(r, rows).
  struct Nf4Dims { Shape x; int64_t out, r; float p; };
  for (Nf4Dims d : {Nf4Dims{{9, 13}, 11, 4, 0.25f}, Nf4Dims{{2, 40, 13}, 7, 3, 0.0f}}) {
    const int64_t in = d.x.last(), rows = d.x.numel() / in;
    OpAttrs a;
    auto w = engine::quant::Nf4FrozenLinear::quantize(b.rand({d.out, in}));
    a.frozen = w;
    a.lora_scaling = 2.0f;
    a.p = d.p;
    a.seed = 9;
    a.offset = 7;
    std::ostringstream label;
    label << "NF4 x " << d.x.str() << " out " << d.out << " r " << d.r << " dropout " << d.p;
    b.add(label.str(), {b.rand(d.x), b.rand({d.r, in}), b.rand({d.out, d.r})}, {true, true, true},
          std::max(in, d.out) + std::max(d.r, rows), a);
    // On bf16 inputs CUDA computes in bf16 (engine/cuda/lora_linear.cpp): y and dx pass
    // through two bf16 roundings (W, then t = d(x) A^T or g_b = dy B, then the staged
    // term the last GEMM adds), dA and dB through one (g_b, t).
    OpCase& c = b.cases.back();
    c.bf16_roundings = 2;
    c.abs_attrs = a;
    std::vector<float> abs_w = w->dequantize(engine::DType::F32, engine::Device::cpu()).to_floats();
    for (float& v : abs_w) v = std::fabs(v);
    c.abs_attrs.frozen = std::make_shared<engine::DenseFrozenLinear>(
        Tensor::from_floats(abs_w, {d.out, in}));
  }
}

// Reduction lengths: logits sum over H, lse and dh over V, the loss and dW over N.
// The CUDA bf16 path alone adds 128: it carries the logits' gradient as a bf16 hi + lo
// pair, exact to 2^-16 = 256 u_f32 relative (kernels/math/cross_entropy.h), and the
// bound counts 2 u_f32 per unit of accumulation.
void lm_head_cross_entropy_cases(CaseBuilder& b) {
  struct Dims { int64_t n, h, v, chunk; float ignored; };
  for (Dims d : {Dims{11, 7, 17, 4, 0.3f}, Dims{5, 9, 13, 0, 0.0f}, Dims{6, 5, 3, 1, 0.5f}}) {
    OpAttrs a;
    a.chunk_rows = d.chunk;
    std::ostringstream label;
    label << "h [" << d.n << "," << d.h << "] W [" << d.v << "," << d.h << "] chunk " << d.chunk
          << " ignored " << d.ignored;
    b.add(label.str(),
          {b.rand({d.n, d.h}, -1.5f, 1.5f), b.rand({d.v, d.h}, -1.5f, 1.5f),
           b.ids({d.n}, static_cast<int32_t>(d.v), d.ignored)},
          {true, true, false}, d.n + d.h + d.v, a);
    b.cases.back().bf16_accumulation = 128;
  }
}

// Sequences of `seg` rows (0: one), summed or averaged (IPO); some rows ignored, as the
// prompt and padding of a DPO batch are.
void lm_head_logprobs_cases(CaseBuilder& b) {
  struct Dims { int64_t n, h, v, chunk, seg; bool mean; float ignored; };
  for (Dims d : {Dims{12, 7, 17, 5, 4, false, 0.3f}, Dims{10, 9, 13, 0, 5, true, 0.4f},
                 Dims{6, 5, 3, 1, 0, false, 0.0f}, Dims{8, 6, 11, 3, 2, true, 0.5f}}) {
    OpAttrs a;
    a.chunk_rows = d.chunk;
    a.segment_rows = d.seg;
    a.segment_mean = d.mean;
    std::ostringstream label;
    label << "h [" << d.n << "," << d.h << "] W [" << d.v << "," << d.h << "] chunk " << d.chunk
          << " segment " << d.seg << (d.mean ? " mean" : " sum") << " ignored " << d.ignored;
    b.add(label.str(),
          {b.rand({d.n, d.h}, -1.5f, 1.5f), b.rand({d.v, d.h}, -1.5f, 1.5f),
           b.ids({d.n}, static_cast<int32_t>(d.v), d.ignored)},
          {true, true, false}, d.n + d.h + d.v, a);
    b.cases.back().bf16_accumulation = 128;
  }
}

}  // namespace

std::vector<OpCase> op_cases(OpId id, uint64_t seed) {
  CaseBuilder b{engine::Generator(seed), {}};
  switch (id) {
    case OpId::Matmul: matmul_cases(b); break;
    case OpId::RmsNorm: rms_norm_cases(b); break;
    case OpId::Rope: rope_cases(b); break;
    case OpId::Attention: attention_cases(b); break;
    case OpId::Embedding: embedding_cases(b); break;
    case OpId::CrossEntropy: cross_entropy_cases(b); break;
    case OpId::LoraLinear: lora_linear_cases(b); break;
    case OpId::LmHeadCrossEntropy: lm_head_cross_entropy_cases(b); break;
    case OpId::LmHeadLogprobs: lm_head_logprobs_cases(b); break;
    default: elementwise_cases(b, id); break;
  }
  return std::move(b.cases);
}

}  // namespace testing_support
