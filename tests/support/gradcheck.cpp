#include "tests/support/gradcheck.h"

#include <cmath>
#include <sstream>

#include "engine/autograd.h"
#include "engine/rng.h"
#include "tests/support/compare.h"

namespace testing_support {

using engine::Tensor;

namespace {

constexpr int kMaxElementsPerInput = 48;

std::vector<float> forward_values(engine::OpId id, const std::vector<Tensor>& inputs,
                                  const engine::OpAttrs& attrs) {
  engine::NoGradGuard no_grad;
  return engine::call_op(id, inputs, attrs)[0].to_floats();
}

}  // namespace

GradCheckResult gradcheck(engine::OpId id, const OpCase& c, uint64_t seed,
                          const GradientTamper& tamper) {
  engine::Generator gen(seed);
  std::vector<Tensor> leaves;
  for (size_t i = 0; i < c.inputs.size(); ++i) {
    leaves.push_back(c.inputs[i].clone());
    if (c.differentiable[i]) leaves.back().set_requires_grad(true);
  }
  Tensor y = engine::call_op(id, leaves, c.attrs)[0];
  Tensor weights = engine::uniform(y.shape(), -1.0f, 1.0f, gen);
  engine::backward({y}, {weights});

  std::vector<Tensor> grads;
  for (const Tensor& leaf : leaves) grads.push_back(leaf.grad());
  if (tamper) tamper(grads);

  const std::vector<float> w = weights.to_floats();
  const std::vector<float> y0 = y.to_floats();
  const double y_rms = rms(y0);
  const double k_u = static_cast<double>(c.accumulation) * kUnitRoundoffF32;

  GradCheckResult result;
  for (size_t i = 0; i < leaves.size(); ++i) {
    if (!c.differentiable[i]) continue;
    if (!grads[i].defined()) {
      result.ok = false;
      result.worst = "input " + std::to_string(i) + " got no gradient";
      return result;
    }
    const std::vector<float> g = grads[i].to_floats();
    const double g_rms = rms(g);
    const int64_t n = c.inputs[i].numel();
    std::vector<int64_t> elements;
    if (n <= kMaxElementsPerInput) {
      for (int64_t j = 0; j < n; ++j) elements.push_back(j);
    } else {
      // A random sample, always including the largest analytic gradient.
      int64_t largest = 0;
      for (int64_t j = 1; j < n; ++j)
        if (std::fabs(g[j]) > std::fabs(g[largest])) largest = j;
      elements.push_back(largest);
      Tensor pick = engine::uniform({kMaxElementsPerInput - 1}, 0.0f, 1.0f, gen);
      for (float r : pick.to_floats()) elements.push_back(static_cast<int64_t>(r * n) % n);
    }
    for (int64_t j : elements) {
      // D(step): returns the central difference and the rounding scale S_j.
      auto central = [&](float step, double* noise_scale) {
        std::vector<Tensor> plus, minus;
        for (const Tensor& t : c.inputs) {
          plus.push_back(t.clone());
          minus.push_back(t.clone());
        }
        float x = c.inputs[i].data<float>()[j];
        float xp = x + step * std::max(1.0f, std::fabs(x));
        float xm = x - step * std::max(1.0f, std::fabs(x));
        plus[i].data<float>()[j] = xp;
        minus[i].data<float>()[j] = xm;
        std::vector<float> yp = forward_values(id, plus, c.attrs);
        std::vector<float> ym = forward_values(id, minus, c.attrs);
        double dl = 0, s = 0;
        for (size_t o = 0; o < yp.size(); ++o) {
          if (yp[o] == ym[o]) continue;  // unaffected outputs cancel exactly
          dl += double(w[o]) * (double(yp[o]) - double(ym[o]));
          s += std::fabs(w[o]) * (std::fabs(yp[o]) + y_rms) + std::fabs(w[o]) * (std::fabs(ym[o]) + y_rms);
        }
        *noise_scale = s;
        return dl / (double(xp) - double(xm));
      };
      const float h = 1.0f / 256;
      double s_h = 0, s_2h = 0;
      double d_h = central(h, &s_h);
      double d_2h = central(2 * h, &s_2h);
      double step = 2.0 * h * std::max(1.0f, std::fabs(c.inputs[i].data<float>()[j]));
      double tol = std::fabs(d_h - d_2h) + k_u * s_h / step + k_u * (std::fabs(g[j]) + g_rms);
      double err = std::fabs(g[j] - d_h);
      double ratio = tol > 0 ? err / tol : (err > 0 ? INFINITY : 0);
      ++result.checked;
      if (ratio > result.worst_ratio) {
        result.worst_ratio = ratio;
        std::ostringstream s;
        s << "input " << i << " element " << j << ": analytic " << g[j] << ", finite difference "
          << d_h << ", tolerance " << tol;
        result.worst = s.str();
      }
      if (err > tol) result.ok = false;
    }
  }
  return result;
}

}  // namespace testing_support
