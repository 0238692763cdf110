// Packed sequences on the CPU reference: rope at per-token positions followed by
// attention with document masking gives, for every document of a packed row, exactly
// what the same ops give on that document alone (outputs and input gradients, bitwise:
// the reference sums the same terms in the same order). A wrong mask or a position that
// does not restart would mix documents and change the values.
#include <gtest/gtest.h>

#include <vector>

#include "engine/autograd.h"
#include "engine/ops.h"
#include "tests/support/errors.h"

namespace engine {
namespace {

Tensor random_tensor(const Shape& shape, uint32_t seed) {
  std::vector<float> v(static_cast<size_t>(shape.numel()));
  uint32_t x = seed * 2654435761u + 1u;
  for (auto& f : v) {
    x = x * 1664525u + 1013904223u;
    f = static_cast<float>(x >> 8) / static_cast<float>(1u << 24) * 2.0f - 1.0f;
  }
  return Tensor::from_floats(v, shape).set_requires_grad();
}

// Tokens [t0, t0 + n) of batch entry b of x [B, T, ...] as a [1, n, ...] tensor.
std::vector<float> token_slice(const std::vector<float>& x, const Shape& s, int64_t b,
                               int64_t t0, int64_t n) {
  const int64_t row = s.numel() / (s[0] * s[1]);
  auto first = x.begin() + (b * s[1] + t0) * row;
  return std::vector<float>(first, first + n * row);
}

struct Layout {
  std::vector<int32_t> doc_start, positions;
};

Layout layout(const std::vector<std::vector<int32_t>>& docs) {
  Layout l;
  for (const auto& row : docs) {
    int32_t t = 0;
    for (int32_t n : row)
      for (int32_t p = 0; p < n; ++p, ++t) {
        l.doc_start.push_back(t - p);
        l.positions.push_back(p);
      }
  }
  return l;
}

TEST(Packing, DocumentsSeeOnlyThemselves) {
  const std::vector<std::vector<int32_t>> docs = {{3, 5, 1, 2}, {11}};
  const int64_t batch = 2, seq = 11, hq = 4, hkv = 2, d = 8;
  RopeConfig rope;
  rope.theta = 500000.0f;
  const Layout l = layout(docs);
  const Tensor doc_start = Tensor::from_ints(l.doc_start, Shape{batch, seq});
  const Tensor positions = Tensor::from_ints(l.positions, Shape{batch, seq});

  auto run = [&](const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& ds,
                 const Tensor& pos, const Tensor& dout) {
    Tensor out =
        ops::attention(ops::rope(q, rope, 0, pos), ops::rope(k, rope, 0, pos), v, 0.0f, ds);
    backward({out}, {dout});
    return out.to_floats();
  };
  Tensor q = random_tensor({batch, seq, hq, d}, 1), k = random_tensor({batch, seq, hkv, d}, 2);
  Tensor v = random_tensor({batch, seq, hkv, d}, 3);
  Tensor dout = random_tensor({batch, seq, hq, d}, 4).detach();
  const std::vector<float> out = run(q, k, v, doc_start, positions, dout);
  const std::vector<float> dq = q.grad().to_floats(), dk = k.grad().to_floats(),
                           dv = v.grad().to_floats();

  for (int64_t b = 0; b < batch; ++b) {
    int64_t t0 = 0;
    for (int32_t n : docs[b]) {
      auto part = [&](const Tensor& x, int64_t heads) {
        return Tensor::from_floats(token_slice(x.to_floats(), x.shape(), b, t0, n),
                                   Shape{1, n, heads, d});
      };
      Tensor qs = part(q, hq).set_requires_grad(), ks = part(k, hkv).set_requires_grad();
      Tensor vs = part(v, hkv).set_requires_grad();
      const std::vector<float> alone = run(qs, ks, vs, Tensor(), Tensor(), part(dout, hq));
      SCOPED_TRACE(testing::Message() << "batch " << b << ", document at " << t0);
      EXPECT_EQ(alone, token_slice(out, q.shape(), b, t0, n));
      EXPECT_EQ(qs.grad().to_floats(), token_slice(dq, q.shape(), b, t0, n));
      EXPECT_EQ(ks.grad().to_floats(), token_slice(dk, k.shape(), b, t0, n));
      EXPECT_EQ(vs.grad().to_floats(), token_slice(dv, v.shape(), b, t0, n));
      t0 += n;
    }
  }
}

TEST(Packing, OneDocumentIsPlainCausalAttention) {
  const int64_t seq = 6;
  std::vector<int32_t> zeros(seq, 0);
  Tensor q = random_tensor({1, seq, 2, 4}, 5), k = random_tensor({1, seq, 1, 4}, 6);
  Tensor v = random_tensor({1, seq, 1, 4}, 7);
  EXPECT_EQ(ops::attention(q, k, v, 0.0f, Tensor::from_ints(zeros, Shape{1, seq})).to_floats(),
            ops::attention(q, k, v).to_floats());
}

TEST(Packing, RejectsDocumentStartsThatAreNotContiguousDocuments) {
  Tensor q = random_tensor({1, 4, 1, 4}, 8), k = random_tensor({1, 4, 1, 4}, 9);
  Tensor v = random_tensor({1, 4, 1, 4}, 10);
  // Token 3 claims a document starting at 1 while token 2 started one at 2.
  const Tensor bad = Tensor::from_ints({0, 0, 2, 1}, Shape{1, 4});
  testing_support::expect_one_line_error([&] { ops::attention(q, k, v, 0.0f, bad); },
                                         {"doc_start", "contiguous documents"});
  const Tensor wrong_shape = Tensor::from_ints({0, 0, 0}, Shape{1, 3});
  testing_support::expect_one_line_error([&] { ops::attention(q, k, v, 0.0f, wrong_shape); },
                                         {"doc_start must be i32 [1, 4]"});
}

}  // namespace
}  // namespace engine
