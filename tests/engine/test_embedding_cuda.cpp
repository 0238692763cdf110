// The CUDA embedding (kernels/embedding.cu) beyond the parity harness: a deterministic
// backward under heavy id repetition and a Llama-sized vocabulary, and out-of-range ids
// reported with the CPU reference's message.
//
// The backward sums each table row's gradients in fp32 in increasing position, the
// CPU reference's order, so f32 results are bitwise equal to the CPU's; bf16 results
// are that fp32 sum rounded once, so two runs must be bitwise equal too.
#include <gtest/gtest.h>

#include <cstring>
#include <string>
#include <vector>

#include "engine/autograd.h"
#include "engine/ops.h"
#include "engine/rng.h"
#include "tests/support/compare.h"
#include "tests/support/gpu.h"

namespace {

using engine::Device;
using engine::DType;
using engine::Shape;
using engine::Tensor;

// ids in [0, upper) (heavily repeated when upper is small), deterministic.
Tensor make_ids(const Shape& s, int32_t upper, uint64_t seed) {
  engine::Generator gen(seed);
  const std::vector<float> u = engine::uniform(s, 0.0f, 1.0f, gen).to_floats();
  std::vector<int32_t> v(u.size());
  for (size_t i = 0; i < u.size(); ++i) v[i] = static_cast<int32_t>(u[i] * upper) % upper;
  return Tensor::from_ints(v, s);
}

// dtable of embedding(ids, table) under upstream gradient `grad`, on table's device.
Tensor table_grad(const Tensor& ids, const Tensor& table, const Tensor& grad) {
  Tensor t = table.detach().set_requires_grad(true);
  Tensor out = engine::ops::embedding(ids, t);
  engine::backward({out}, {grad});
  return t.grad();
}

using testing_support::bitwise_equal;

struct Case {
  int64_t vocab, d;
  Shape ids;
  int32_t id_range;  // ids drawn from [0, id_range): small = many repeats
};

TEST(EmbeddingCuda, BackwardIsDeterministicAndMatchesCpu) {
  SKIP_WITHOUT_GPU();
  const std::vector<Case> cases = {
      {50, 40, {4, 250}, 7},        // 1000 ids over 7 rows, vector path (f32 and bf16)
      {50, 13, {1000}, 3},          // odd width: scalar path
      {128256, 24, {2, 2048}, 128256},  // Llama 3 vocabulary: 17 key bits
      {128256, 16, {4096}, 5},      // a huge segment per id
  };
  engine::Generator gen(3);
  for (const Case& c : cases) {
    const Tensor ids = make_ids(c.ids, c.id_range, c.vocab + c.d);
    const Tensor table = engine::uniform({c.vocab, c.d}, -1.0f, 1.0f, gen);
    Shape out_shape = c.ids.rank() == 1 ? Shape{c.ids[0], c.d} : Shape{c.ids[0], c.ids[1], c.d};
    const Tensor grad = engine::uniform(out_shape, -1.0f, 1.0f, gen);
    const Tensor ref = table_grad(ids, table, grad);
    const Tensor ids_d = ids.to(Device::cuda());
    for (DType dt : {DType::F32, DType::BF16}) {
      const std::string what = "vocab " + std::to_string(c.vocab) + " d " + std::to_string(c.d) +
                               " " + engine::dtype_name(dt);
      const Tensor table_d = table.to_dtype(dt).to(Device::cuda());
      const Tensor grad_d = grad.to_dtype(dt).to(Device::cuda());
      const Tensor first = table_grad(ids_d, table_d, grad_d);
      const Tensor second = table_grad(ids_d, table_d, grad_d);
      EXPECT_EQ(first.dtype(), dt) << what;
      EXPECT_TRUE(bitwise_equal(first, second)) << what << ": two runs differ";
      if (dt == DType::F32) {
        EXPECT_TRUE(bitwise_equal(first, ref)) << what << ": differs from the CPU";
      } else {
        // The CPU sum of the bf16-rounded gradients, rounded once to bf16.
        const Tensor ref_bf16 =
            table_grad(ids, table, grad.to_dtype(DType::BF16).to_dtype(DType::F32))
                .to_dtype(DType::BF16);
        EXPECT_TRUE(bitwise_equal(first, ref_bf16)) << what << ": differs from the CPU";
      }
    }
  }
}

TEST(EmbeddingCuda, ForwardGathersRows) {
  SKIP_WITHOUT_GPU();
  engine::Generator gen(5);
  const Tensor ids = make_ids({3, 7}, 11, 9);
  const Tensor table = engine::uniform({11, 10}, -1.0f, 1.0f, gen);
  const Tensor ref = engine::ops::embedding(ids, table);
  for (DType dt : {DType::F32, DType::BF16}) {
    const Tensor out = engine::ops::embedding(ids.to(Device::cuda()),
                                              table.to_dtype(dt).to(Device::cuda()));
    EXPECT_EQ(out.shape(), ref.shape());
    EXPECT_TRUE(bitwise_equal(out, ref.to_dtype(dt))) << engine::dtype_name(dt);
  }
}

std::string error_of(const Tensor& ids, const Tensor& table) {
  try {
    engine::ops::embedding(ids, table);
  } catch (const engine::Error& e) {
    return e.what();
  }
  return "no error";
}

TEST(EmbeddingCuda, OutOfRangeIdIsTheCpuError) {
  SKIP_WITHOUT_GPU();
  const Tensor table = Tensor::zeros({5, 4});
  // The first bad position in index order is [0, 4] (id -3); [1, 0] (id 7) comes later.
  const Tensor ids = Tensor::from_ints({0, 1, 2, 3, -3, 7, 4, 4, 0, 1}, {2, 5});
  const std::string cpu = error_of(ids, table);
  const std::string gpu = error_of(ids.to(Device::cuda()), table.to(Device::cuda()));
  EXPECT_NE(cpu.find("embedding: id -3 at ids[0, 4] is outside the table's [0, 5)"),
            std::string::npos)
      << cpu;
  EXPECT_NE(gpu.find("embedding: id -3 at ids[0, 4] is outside the table's [0, 5)"),
            std::string::npos)
      << gpu;
  const Tensor high = Tensor::from_ints({4, 5}, {2});
  EXPECT_NE(error_of(high.to(Device::cuda()), table.to(Device::cuda()))
                .find("embedding: id 5 at ids[1] is outside the table's [0, 5)"),
            std::string::npos);
}

}  // namespace
