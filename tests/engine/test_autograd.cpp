// The tape: accumulation over shared inputs, no_grad, repeated backward, and
// gradient checkpointing giving bitwise the same gradients as storing activations.
#include <gtest/gtest.h>

#include "engine/autograd.h"
#include "engine/ops.h"
#include "engine/rng.h"

using namespace engine;

TEST(Autograd, DiamondGraphSumsBothPaths) {
  Tensor x = Tensor::from_floats({2.0f}, {1}).set_requires_grad();
  Tensor y = ops::add(ops::mul(x, x), ops::scale(x, 3.0f));  // x^2 + 3x
  backward(ops::sum(y));
  EXPECT_FLOAT_EQ(x.grad().item(), 2 * 2.0f + 3);
}

TEST(Autograd, GradientsAccumulateAcrossBackwardCalls) {
  Tensor x = Tensor::from_floats({1.0f, -2.0f}, {2}).set_requires_grad();
  for (int step = 0; step < 3; ++step) backward(ops::sum(ops::scale(x, 0.5f)));
  EXPECT_FLOAT_EQ(x.grad().to_floats()[0], 1.5f);
  x.zero_grad();
  EXPECT_FALSE(x.grad().defined());
}

TEST(Autograd, NoGradRecordsNothing) {
  Tensor x = Tensor::from_floats({1.0f}, {1}).set_requires_grad();
  NoGradGuard guard;
  Tensor y = ops::scale(x, 2.0f);
  EXPECT_FALSE(y.requires_grad());
  EXPECT_EQ(y.grad_fn(), nullptr);
}

TEST(Autograd, FrozenInputsGetNoGradient) {
  Generator gen(1);
  Tensor a = uniform({3, 4}, -1, 1, gen).set_requires_grad();
  Tensor b = uniform({4, 2}, -1, 1, gen);  // frozen
  backward(ops::sum(ops::matmul(a, b)));
  EXPECT_TRUE(a.grad().defined());
  EXPECT_FALSE(b.grad().defined());
}

namespace {
// A small residual block with parameters captured from outside (as a LoRA layer's
// weights are), seeded dropout included so the recompute must replay the mask.
struct Block {
  Tensor w1, w2, norm;
  std::vector<Tensor> operator()(const std::vector<Tensor>& in) const {
    Tensor h = ops::rms_norm(in[0], norm, 1e-5f);
    h = ops::swiglu(ops::matmul(h, w1, false, true), ops::matmul(h, w2, false, true));
    h = ops::dropout(h, 0.25f, 42, 0);
    return {ops::add(in[0], ops::matmul(h, w2))};
  }
};

std::vector<std::vector<float>> run(bool use_checkpoint, bool input_requires_grad) {
  Generator gen(5);
  Block blk{uniform({6, 8}, -0.5, 0.5, gen).set_requires_grad(),
            uniform({6, 8}, -0.5, 0.5, gen).set_requires_grad(),
            uniform({8}, 0.5, 1.5, gen).set_requires_grad()};
  Tensor x = uniform({2, 3, 8}, -1, 1, gen).set_requires_grad(input_requires_grad);
  Tensor y = x;
  for (int layer = 0; layer < 3; ++layer)
    y = use_checkpoint ? checkpoint(blk, {y})[0] : blk({y})[0];
  backward(ops::mean(ops::mul(y, y)));
  std::vector<std::vector<float>> grads{blk.w1.grad().to_floats(), blk.w2.grad().to_floats(),
                                        blk.norm.grad().to_floats()};
  if (input_requires_grad) grads.push_back(x.grad().to_floats());
  return grads;
}
}  // namespace

TEST(Checkpoint, GradientsBitwiseIdenticalWithAndWithout) {
  for (bool input_grad : {true, false}) {
    auto plain = run(false, input_grad);
    auto ckpt = run(true, input_grad);
    ASSERT_EQ(plain.size(), ckpt.size());
    for (size_t i = 0; i < plain.size(); ++i) EXPECT_EQ(plain[i], ckpt[i]) << "gradient " << i;
  }
}

TEST(Checkpoint, KeepsOnlyInputsAlive) {
  Generator gen(2);
  Tensor w = uniform({64, 64}, -1, 1, gen).set_requires_grad();
  Tensor x = uniform({64, 64}, -1, 1, gen);
  auto fn = [&](const std::vector<Tensor>& in) {
    Tensor h = in[0];
    for (int i = 0; i < 4; ++i) h = ops::silu(ops::matmul(h, w));
    return std::vector<Tensor>{h};
  };
  Allocator& a = cpu_allocator();
  size_t before = a.stats().in_use;
  Tensor plain = fn({x})[0];
  size_t plain_bytes = a.stats().in_use - before;
  plain = Tensor();
  before = a.stats().in_use;
  Tensor ck = checkpoint(fn, {x})[0];
  size_t ckpt_bytes = a.stats().in_use - before;
  // Without checkpointing, 8 intermediate 64x64 activations (16 KiB each) stay alive.
  EXPECT_GE(plain_bytes, 8u * 64 * 64 * 4);
  EXPECT_LE(ckpt_bytes, 2u * 64 * 64 * 4);  // the output (+ the detached input view)
}
