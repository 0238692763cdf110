// AdamW against an independent double-precision transcription of torch.optim.AdamW,
// gradient clipping, and the warmup schedules.
#include <gtest/gtest.h>

#include <cmath>

#include "engine/optim/adamw.h"
#include "engine/optim/lr_schedule.h"

using namespace engine;

TEST(AdamW, MatchesPyTorchUpdateRule) {
  const optim::AdamWConfig cfg{.lr = 0.01f, .beta1 = 0.9f, .beta2 = 0.99f, .eps = 1e-8f,
                               .weight_decay = 0.1f};
  Tensor p = Tensor::from_floats({0.5f, -1.0f, 2.0f}, {3});
  optim::AdamW opt({p}, cfg);
  double ref[3] = {0.5, -1.0, 2.0}, m[3] = {}, v[3] = {};
  const float grads[3][3] = {{0.1f, -0.2f, 0.3f}, {-0.05f, 0.4f, 0.0f}, {1.0f, 1.0f, -1.0f}};
  for (int t = 1; t <= 3; ++t) {
    p.set_grad(Tensor::from_floats({grads[t - 1][0], grads[t - 1][1], grads[t - 1][2]}, {3}));
    opt.step();
    for (int i = 0; i < 3; ++i) {
      double g = grads[t - 1][i];
      ref[i] *= 1 - 0.01 * 0.1;
      m[i] = 0.9 * m[i] + 0.1 * g;
      v[i] = 0.99 * v[i] + 0.01 * g * g;
      double mhat = m[i] / (1 - std::pow(0.9, t)), vhat = v[i] / (1 - std::pow(0.99, t));
      ref[i] -= 0.01 * mhat / (std::sqrt(vhat) + 1e-8);
    }
  }
  // fp32 state: a few roundings per step on values of size ~1 (u = 6e-8 each).
  for (int i = 0; i < 3; ++i) EXPECT_NEAR(p.data<float>()[i], ref[i], 3 * 10 * 6e-8 * 2) << i;
  EXPECT_EQ(opt.steps(), 3);
}

TEST(AdamW, SkipsParametersWithoutGradient) {
  Tensor p = Tensor::from_floats({1.0f}, {1});
  optim::AdamW opt({p}, {});
  opt.step();
  EXPECT_EQ(p.data<float>()[0], 1.0f);
}

TEST(ClipGradNorm, ScalesOnlyAboveTheLimit) {
  Tensor a = Tensor::from_floats({3.0f}, {1}), b = Tensor::from_floats({4.0f}, {1});
  a.set_grad(Tensor::from_floats({3.0f}, {1}));
  b.set_grad(Tensor::from_floats({4.0f}, {1}));
  EXPECT_FLOAT_EQ(optim::clip_grad_norm({a, b}, 10.0f), 5.0f);
  EXPECT_FLOAT_EQ(a.grad().item(), 3.0f);
  EXPECT_FLOAT_EQ(optim::clip_grad_norm({a, b}, 1.0f), 5.0f);
  EXPECT_NEAR(a.grad().item(), 0.6f, 1e-6);
  EXPECT_NEAR(b.grad().item(), 0.8f, 1e-6);
}

TEST(LrSchedule, WarmupThenShape) {
  optim::LrSchedule s{optim::ScheduleKind::Cosine, 1.0f, 10, 110};
  EXPECT_FLOAT_EQ(s.at(0), 0.0f);
  EXPECT_FLOAT_EQ(s.at(5), 0.5f);
  EXPECT_FLOAT_EQ(s.at(10), 1.0f);
  EXPECT_NEAR(s.at(60), 0.5f, 1e-6);
  EXPECT_NEAR(s.at(110), 0.0f, 1e-6);
  s.kind = optim::ScheduleKind::Linear;
  EXPECT_NEAR(s.at(60), 0.5f, 1e-6);
  s.kind = optim::ScheduleKind::Constant;
  EXPECT_FLOAT_EQ(s.at(100), 1.0f);
  EXPECT_THROW(optim::parse_schedule_kind("step"), Error);
}
