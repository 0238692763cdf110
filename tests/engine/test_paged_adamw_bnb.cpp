// paged_adamw_8bit against bitsandbytes' AdamW8bit (0.50.2, its CPU backend), on the data
// tests/data/make_bnb_adamw8_reference.py wrote: three tensors (1000 values with fp32
// states; 5000 with a short last block; 4608 with an all-zero gradient block), three steps.
// Each step starts from bitsandbytes' state before it, so errors cannot accumulate.
//
// Bounds (u = 2^-24). Dequantization is one product of the same map entry and absmax on both
// sides, so the moments before the step are equal. After it:
// - the constants: the engine rounds 1 - b in fp32 from the fp32 beta (1 - 0.999f), torch
//   rounds the double 1 - 0.999: for beta2 they differ by 1.3e-5 relative. That difference is
//   computed exactly (in double, from both sides' constants) and added to each bound.
// - params: the engine and torch round the same terms in a different order (torch fuses
//   some into FMAs): at most ~6 roundings each side on the update and one on the decayed
//   parameter, so |dp| <= 16 u (|p'| + |update|) + the constants' difference.
// - fp32 moments and absmax: two or three roundings each side: |d| <= 4 u (|b m| + |(1-b) g|)
//   (v: with g^2) + the constants' difference, the absmax with the block's largest.
// - codes: equal, except where (a) bitsandbytes' CPU search did not pick the nearest entry
//   and the engine's is nearer (a known property of bnb's CPU quantizer, see
//   kernels/math/adamw8bit.h), (b) both are equally near within the rounding of the scaled
//   value, (c) the engine kept a nonzero m's sign (bnb's CUDA rule), or (d) an all-zero block
//   (absmax 0 on both sides: bnb's 0/0 gives code 0, the engine the map's zero; both decode
//   to 0). Anything else fails.
#include <gtest/gtest.h>

#include <cmath>
#include <initializer_list>
#include <string>
#include <vector>

#include "engine/io/safetensors.h"
#include "engine/optim/paged_adamw.h"
#include "kernels/math/adamw8bit.h"

namespace {

// A reference entry's name, appended piece by piece (`"s" + std::string` trips GCC 12's
// -Wrestrict false positive).
std::string entry(std::initializer_list<std::string> parts) {
  std::string name;
  for (const std::string& part : parts) name += part;
  return name;
}

using engine::DType;
using engine::Tensor;

constexpr double kU = 1.0 / (1 << 24);
const char* kFile = ENGINE_SOURCE_DIR "/tests/data/bnb_adamw8_reference/reference.safetensors";

TEST(PagedAdamWBnb, MapsAreBitsandbytesDynamicMaps) {
  engine::io::SafetensorsFile f(kFile);
  const std::vector<float> s = f.load("map.signed").to_floats(), u = f.load("map.unsigned").to_floats();
  ASSERT_EQ(s.size(), 256u);
  ASSERT_EQ(u.size(), 256u);
  for (int i = 0; i < 256; ++i) {
    EXPECT_EQ(kmath::dynamic_map_value(i), s[size_t(i)]) << "signed " << i;
    EXPECT_EQ(kmath::unsigned_dynamic_map_value(i), u[size_t(i)]) << "unsigned " << i;
  }
}

struct Counts {
  size_t equal = 0, bnb_not_nearest = 0, tie = 0, sign_rule = 0, zero_block = 0, bad = 0;
};

TEST(PagedAdamWBnb, EightBitStepMatchesBitsandbytes) {
  engine::io::SafetensorsFile f(kFile);
  const auto& meta = f.metadata();
  const engine::optim::AdamWConfig config{.lr = std::stof(meta.at("lr")),
                                          .beta1 = std::stof(meta.at("beta1")),
                                          .beta2 = std::stof(meta.at("beta2")),
                                          .eps = std::stof(meta.at("eps")),
                                          .weight_decay = std::stof(meta.at("weight_decay"))};
  const int steps = std::stoi(meta.at("steps"));
  // The constants each side rounds to fp32: the engine takes 1 - b in fp32 from the fp32 beta
  // (kmath::adamw_update), torch rounds the double 1 - b; likewise lr wd and the step size.
  const double lr = std::stod(meta.at("lr")), wd = std::stod(meta.at("weight_decay"));
  const double beta1 = std::stod(meta.at("beta1")), beta2 = std::stod(meta.at("beta2"));
  const double b1 = config.beta1, b2 = config.beta2;
  const double c1_engine = 1.0f - config.beta1, c2_engine = 1.0f - config.beta2;
  const double c1_bnb = float(1.0 - beta1), c2_bnb = float(1.0 - beta2);
  const double decay_engine = 1.0f - config.lr * config.weight_decay, decay_bnb = float(1.0 - lr * wd);
  Counts codes;
  for (int step = 1; step <= steps; ++step) {
    std::vector<Tensor> params;
    for (int i = 0; i < 3; ++i) {
      const std::string p = step == 1 ? entry({"t", std::to_string(i), ".p0"})
                                      : entry({"s", std::to_string(step - 1), ".t", std::to_string(i), ".p"});
      params.push_back(f.load(p));
    }
    engine::optim::PagedAdamW opt(params, config, /*eight_bit=*/true, 4096);
    ASSERT_FALSE(opt.quantized(0));
    ASSERT_TRUE(opt.quantized(1) && opt.quantized(2));
    engine::optim::OptimizerState before = opt.state();  // zeros: bnb's initial state
    if (step > 1) {
      before[0].second = Tensor::from_ints({step - 1, 0}, {2});
      const std::string prev = entry({"s", std::to_string(step - 1), ".t"});
      before[1].second = f.load(prev + "0.state1");
      before[2].second = f.load(prev + "0.state2");
      for (int i = 1; i < 3; ++i) {
        const size_t k = 3 + 4 * size_t(i - 1);
        const std::string t = prev + std::to_string(i);
        before[k].second = f.load(t + ".state1").view(params[size_t(i)].shape());
        before[k + 1].second = f.load(t + ".state2").view(params[size_t(i)].shape());
        before[k + 2].second = f.load(t + ".absmax1");
        before[k + 3].second = f.load(t + ".absmax2");
      }
      opt.load_state(before);
    }
    const std::vector<std::vector<float>> p_before = {params[0].to_floats(), params[1].to_floats(),
                                                      params[2].to_floats()};
    const std::string now = entry({"s", std::to_string(step), ".t"});
    std::vector<std::vector<float>> grads;
    for (int i = 0; i < 3; ++i) {
      Tensor g = f.load(now + std::to_string(i) + ".grad");
      grads.push_back(g.to_floats());
      params[size_t(i)].set_grad(g);
    }
    opt.step();
    const engine::optim::OptimizerState after = opt.state();
    const double step_engine = float(config.lr / (1.0 - std::pow(b1, step)));
    const double bias2_engine = float(std::sqrt(1.0 - std::pow(b2, step)));
    const double step_bnb = float(lr / (1.0 - std::pow(beta1, step)));
    const double bias2_bnb = float(std::sqrt(1.0 - std::pow(beta2, step)));
    const double eps = config.eps;
    for (int i = 0; i < 3; ++i) {
      const std::string t = now + std::to_string(i);
      const std::string what = t + " ";
      const std::vector<float> p = params[size_t(i)].to_floats(), want_p = f.load(t + ".p").to_floats();
      const std::vector<float>& g = grads[size_t(i)];
      const size_t n = p.size();
      // The moments before the step, dequantized (exact on both sides) or fp32.
      std::vector<double> m0(n), v0(n);
      if (i == 0) {
        const auto bm = before[1].second.to_floats(), bv = before[2].second.to_floats();
        for (size_t j = 0; j < n; ++j) m0[j] = step > 1 ? bm[j] : 0.0, v0[j] = step > 1 ? bv[j] : 0.0;
      } else {
        const size_t k = 3 + 4 * size_t(i - 1);
        const Tensor& qm = before[k].second;
        const Tensor& qv = before[k + 1].second;
        const auto am = before[k + 2].second.to_floats(), av = before[k + 3].second.to_floats();
        for (size_t j = 0; j < n; ++j) {
          m0[j] = kmath::blockwise_dequantize(kmath::dynamic_map_value(qm.data<uint8_t>()[j]), am[j / 256]);
          v0[j] = kmath::blockwise_dequantize(kmath::unsigned_dynamic_map_value(qv.data<uint8_t>()[j]),
                                              av[j / 256]);
        }
      }
      std::vector<double> m1(n), v1(n), m_err(n), v_err(n);
      for (size_t j = 0; j < n; ++j) {
        const double g2 = double(g[j]) * g[j];
        m1[j] = b1 * m0[j] + c1_engine * g[j];
        v1[j] = b2 * v0[j] + c2_engine * g2;
        const double m1_bnb = b1 * m0[j] + c1_bnb * g[j], v1_bnb = b2 * v0[j] + c2_bnb * g2;
        m_err[j] = 4 * kU * (std::fabs(b1 * m0[j]) + std::fabs(c1_engine * g[j])) + std::fabs(m1[j] - m1_bnb);
        v_err[j] = 4 * kU * (b2 * v0[j] + c2_engine * g2) + std::fabs(v1[j] - v1_bnb);
        const double update = step_engine * m1[j] / (std::sqrt(v1[j]) / bias2_engine + eps);
        const double update_bnb = step_bnb * m1_bnb / (std::sqrt(v1_bnb) / bias2_bnb + eps);
        const double bound = 16 * kU * (std::fabs(want_p[j]) + std::fabs(update)) +
                             std::fabs(update - update_bnb) +
                             std::fabs(p_before[size_t(i)][j]) * std::fabs(decay_engine - decay_bnb);
        ASSERT_LE(std::fabs(double(p[j]) - want_p[j]), bound)
            << what << "param " << j << ": engine " << p[j] << " bitsandbytes " << want_p[j]
            << " (before " << p_before[size_t(i)][j] << ")";
      }
      if (i == 0) {
        const auto m = after[1].second.to_floats(), v = after[2].second.to_floats();
        const auto want_m = f.load(t + ".state1").to_floats(), want_v = f.load(t + ".state2").to_floats();
        for (size_t j = 0; j < n; ++j) {
          ASSERT_LE(std::fabs(double(m[j]) - want_m[j]), m_err[j]) << what << "m " << j;
          ASSERT_LE(std::fabs(double(v[j]) - want_v[j]), v_err[j]) << what << "v " << j;
        }
        continue;
      }
      const size_t k = 3 + 4 * size_t(i - 1);
      const Tensor qm = after[k].second, qv = after[k + 1].second;
      const auto am = after[k + 2].second.to_floats(), av = after[k + 3].second.to_floats();
      const Tensor want_qm = f.load(t + ".state1"), want_qv = f.load(t + ".state2");
      const auto want_am = f.load(t + ".absmax1").to_floats(), want_av = f.load(t + ".absmax2").to_floats();
      for (size_t b = 0; b < am.size(); ++b) {
        double m_bound = 0, v_bound = 0;
        for (size_t j = b * 256; j < std::min(n, b * 256 + 256); ++j)
          m_bound = std::max(m_bound, m_err[j]), v_bound = std::max(v_bound, v_err[j]);
        ASSERT_LE(std::fabs(double(am[b]) - want_am[b]), m_bound) << what << "absmax_m " << b;
        ASSERT_LE(std::fabs(double(av[b]) - want_av[b]), v_bound) << what << "absmax_v " << b;
      }
      for (int moment = 0; moment < 2; ++moment) {
        const uint8_t* got = (moment == 0 ? qm : qv).data<uint8_t>();
        const uint8_t* want = (moment == 0 ? want_qm : want_qv).data<uint8_t>();
        for (size_t j = 0; j < n; ++j) {
          if (got[j] == want[j]) {
            ++codes.equal;
            continue;
          }
          const double absmax = moment == 0 ? am[j / 256] : av[j / 256];
          if (absmax == 0.0 && (moment == 0 ? want_am : want_av)[j / 256] == 0.0f) {
            ++codes.zero_block;  // all-zero block: any code dequantizes to 0 on both sides
            continue;
          }
          const double x = (moment == 0 ? m1[j] : v1[j]) / absmax;
          auto entry = [&](int q) {
            return moment == 0 ? kmath::dynamic_map_value(q) : kmath::unsigned_dynamic_map_value(q);
          };
          const double de = std::fabs(entry(got[j]) - x), db = std::fabs(entry(want[j]) - x);
          const double tol = 16 * kU * std::fabs(x) + 1e-12;
          if (de < db - tol) ++codes.bnb_not_nearest;
          else if (std::fabs(de - db) <= tol) ++codes.tie;
          else if (moment == 0 && x < 0 && entry(want[j]) >= 0 && entry(got[j]) < 0) ++codes.sign_rule;
          else {
            ++codes.bad;
            ADD_FAILURE() << what << (moment == 0 ? "qm " : "qv ") << j << ": engine " << int(got[j])
                          << " (" << entry(got[j]) << ") bitsandbytes " << int(want[j]) << " ("
                          << entry(want[j]) << ") for x = " << x;
          }
        }
      }
    }
  }
  std::printf("codes: %zu equal, %zu where bitsandbytes' CPU search is not nearest, %zu ties, "
              "%zu by the sign rule, %zu in all-zero blocks, %zu unexplained\n",
              codes.equal, codes.bnb_not_nearest, codes.tie, codes.sign_rule, codes.zero_block, codes.bad);
  EXPECT_EQ(codes.bad, 0u);
  EXPECT_GT(codes.equal, 20 * (codes.bnb_not_nearest + codes.tie + codes.sign_rule));
}

}  // namespace
