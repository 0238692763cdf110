// Every registry op, every case: finite-difference gradient check on the CPU
// reference (tolerance derivation in tests/support/gradcheck.h), plus a check that
// the harness itself catches a 1% error in any op's gradient.
#include <gtest/gtest.h>

#include <cmath>

#include "tests/support/gradcheck.h"

using engine::OpId;
using testing_support::gradcheck;
using testing_support::op_cases;

namespace {

constexpr uint64_t kSeed = 20261128;

std::vector<OpId> all_op_ids() {
  std::vector<OpId> ids;
  for (const engine::OpDef& def : engine::all_ops()) ids.push_back(def.id);
  return ids;
}

std::string op_name(const testing::TestParamInfo<OpId>& info) {
  return engine::op_def(info.param).name;
}

class OpGradient : public testing::TestWithParam<OpId> {};

TEST_P(OpGradient, MatchesFiniteDifferences) {
  auto cases = op_cases(GetParam(), kSeed);
  ASSERT_FALSE(cases.empty());
  for (const auto& c : cases) {
    bool any = false;
    for (bool d : c.differentiable) any |= d;
    if (!any) continue;
    auto r = gradcheck(GetParam(), c, kSeed + 1);
    EXPECT_TRUE(r.ok) << c.label << ": " << r.worst;
    EXPECT_GT(r.checked, 0) << c.label;
  }
}

// The check must have teeth: scaling one gradient element by 1.01 must fail it.
TEST_P(OpGradient, HarnessCatchesOnePercentError) {
  auto cases = op_cases(GetParam(), kSeed);
  bool caught_any = false;
  for (const auto& c : cases) {
    bool any = false;
    for (bool d : c.differentiable) any |= d;
    if (!any) continue;
    auto tamper = [](std::vector<engine::Tensor>& grads) {
      for (auto& g : grads) {
        if (!g.defined()) continue;
        g = g.clone();
        // Corrupt the largest element: the finite-difference sample includes every
        // element of small inputs, so use a case-independent choice.
        float* p = g.data<float>();
        int64_t best = 0;
        for (int64_t i = 1; i < g.numel(); ++i)
          if (std::fabs(p[i]) > std::fabs(p[best])) best = i;
        p[best] *= 1.01f;
        return;
      }
    };
    auto r = gradcheck(GetParam(), c, kSeed + 1, tamper);
    caught_any |= !r.ok;
  }
  EXPECT_TRUE(caught_any) << "a 1% gradient error went unnoticed for every case";
}

INSTANTIATE_TEST_SUITE_P(AllOps, OpGradient, testing::ValuesIn(all_op_ids()), op_name);

TEST(RegistryCoverage, EveryOpHasCases) {
  for (const engine::OpDef& def : engine::all_ops())
    EXPECT_FALSE(op_cases(def.id, kSeed).empty()) << def.name << " has no test cases";
}

}  // namespace
