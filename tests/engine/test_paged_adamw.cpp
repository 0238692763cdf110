// Paged AdamW on the CPU (engine/optim/paged_adamw.h): the 32-bit variant is bitwise
// resident AdamW whatever the page size; the chunk plan covers every state exactly once;
// state()/load_state() continue bit for bit; the factory and its errors.
#include <gtest/gtest.h>

#include <memory>
#include <string>
#include <vector>

#include "engine/error.h"
#include "engine/optim/make_optimizer.h"
#include "engine/optim/paged_adamw.h"
#include "engine/rng.h"
#include "kernels/math/adamw8bit.h"
#include "tests/support/compare.h"

namespace {

using engine::DType;
using engine::Shape;
using engine::Tensor;
using engine::optim::AdamWConfig;
using engine::optim::PagedAdamW;
using testing_support::expect_bitwise;

const std::vector<Shape> kShapes = {{1}, {7}, {33}, {4, 1000}, {4099}, {3, 5, 7}, {16, 520}, {5}};
const AdamWConfig kConfig{.lr = 2e-3f, .beta1 = 0.9f, .beta2 = 0.99f, .eps = 1e-8f, .weight_decay = 0.1f};

std::vector<Tensor> make_params(uint64_t seed) {
  engine::Generator gen(seed);
  std::vector<Tensor> out;
  for (const Shape& s : kShapes) out.push_back(engine::uniform(s, -1.0f, 1.0f, gen));
  return out;
}

// The same random gradients on each list (the last parameter never gets one).
void set_grads(std::vector<std::vector<Tensor>*> lists, engine::Generator& gen) {
  for (size_t i = 0; i + 1 < kShapes.size(); ++i) {
    Tensor g = engine::uniform(kShapes[i], -2.0f, 2.0f, gen);
    for (auto* list : lists) (*list)[i].set_grad(g.clone());
  }
}

std::vector<Tensor> clones(const std::vector<Tensor>& v) {
  std::vector<Tensor> out;
  for (const Tensor& t : v) out.push_back(t.clone());
  return out;
}

void expect_states_bitwise(const engine::optim::OptimizerState& got,
                           const engine::optim::OptimizerState& want, const std::string& what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  for (size_t k = 0; k < got.size(); ++k) {
    EXPECT_EQ(got[k].first, want[k].first) << what;
    expect_bitwise(got[k].second, want[k].second, what + " " + got[k].first);
  }
}

TEST(PagedAdamW, ThirtyTwoBitIsBitwiseResidentAdamW) {
  // 4096-byte pages split the larger tensors over many chunks; the default keeps one chunk.
  for (size_t page : {size_t{4096}, engine::optim::kOptimizerPageBytes}) {
    std::vector<Tensor> resident = make_params(7), paged = clones(resident);
    engine::optim::AdamW reference(resident, kConfig);
    PagedAdamW opt(paged, kConfig, /*eight_bit=*/false, page);
    if (page == 4096) {
      EXPECT_GT(opt.chunks().size(), 10u);
    }
    engine::Generator gen(99);
    for (int step = 1; step <= 3; ++step) {
      set_grads({&resident, &paged}, gen);
      reference.step();
      opt.step();
      const std::string what = "page " + std::to_string(page) + " step " + std::to_string(step);
      for (size_t i = 0; i < kShapes.size(); ++i) expect_bitwise(paged[i], resident[i], what + " param");
      expect_states_bitwise(opt.state(), reference.state(), what);
    }
  }
}

TEST(PagedAdamW, ChunkPlanCoversEveryStateOnceWithinThePage) {
  const std::vector<int64_t> numels = {1, 4095, 4096, 5000, 70000, 3, 300000};
  for (bool eight_bit : {false, true}) {
    const size_t page = 8192;
    const auto chunks = engine::optim::plan_state_chunks(numels, eight_bit, page);
    std::vector<int64_t> covered(numels.size(), 0);
    size_t offset = 0, state_bytes = 0;
    for (const auto& c : chunks) {
      EXPECT_EQ(c.offset, offset);
      EXPECT_LE(c.bytes, page);
      EXPECT_FALSE(c.segments.empty());
      offset += c.bytes;
      for (const auto& s : c.segments) {
        EXPECT_EQ(s.begin, covered[s.param]) << "segments of a parameter in order, no gap";
        covered[s.param] = s.end;
        EXPECT_EQ(s.quantized, eight_bit && numels[s.param] >= kmath::kAdamW8bitMinNumel);
        if (s.quantized) {
          EXPECT_EQ(s.begin % kmath::kAdamW8bitBlock, 0);
        }
        EXPECT_EQ(s.m % 16, 0u);
        EXPECT_EQ(s.v % 16, 0u);
      }
    }
    for (size_t i = 0; i < numels.size(); ++i) {
      EXPECT_EQ(covered[i], numels[i]);
      state_bytes += engine::optim::optimizer_state_bytes(numels[i], eight_bit);
    }
    // Alignment costs at most 64 bytes per segment.
    size_t segments = 0;
    for (const auto& c : chunks) segments += c.segments.size();
    EXPECT_GE(offset, state_bytes);
    EXPECT_LE(offset, state_bytes + 64 * segments);
    EXPECT_EQ(engine::optim::paged_device_bytes(chunks) % 16, 0u);
  }
}

// Two steps, state() into a fresh optimizer over copies of the parameters, two more steps
// on both with the same gradients: parameters and states stay bitwise equal.
TEST(PagedAdamW, StateRoundTripContinuesBitwise) {
  for (const std::string kind : {"adamw", "paged_adamw_32bit", "paged_adamw_8bit"}) {
    std::vector<Tensor> a = make_params(3);
    engine::Generator big(5);
    a.push_back(engine::uniform({2, 4100}, -1.0f, 1.0f, big));  // quantized in 8-bit
    std::vector<Tensor> a_params = a;
    auto first = engine::optim::make_optimizer(kind, a_params, kConfig);
    EXPECT_EQ(first->kind(), kind);
    engine::Generator gen(11);
    auto grads = [&](std::vector<Tensor>& x, std::vector<Tensor>* y) {
      for (size_t i = 0; i < x.size(); ++i) {
        if (i == kShapes.size() - 1) continue;
        Tensor g = engine::uniform(x[i].shape(), -1.0f, 1.0f, gen);
        x[i].set_grad(g.clone());
        if (y) (*y)[i].set_grad(g.clone());
      }
    };
    for (int s = 0; s < 2; ++s) {
      grads(a, nullptr);
      first->step();
    }
    std::vector<Tensor> b = clones(a);
    auto second = engine::optim::make_optimizer(kind, b, kConfig);
    second->load_state(first->state());
    EXPECT_EQ(second->steps(), 2);
    for (int s = 0; s < 2; ++s) {
      grads(a, &b);
      first->step();
      second->step();
    }
    for (size_t i = 0; i < a.size(); ++i) expect_bitwise(b[i], a[i], kind + " param");
    expect_states_bitwise(second->state(), first->state(), kind);
  }
}

TEST(PagedAdamW, LoadStateNamesTheEntryThatDoesNotMatch) {
  std::vector<Tensor> p = {Tensor::zeros({5000}), Tensor::zeros({10})};
  PagedAdamW eight(p, kConfig, true);
  auto state = eight.state();
  ASSERT_EQ(state.size(), 1u + 4u + 2u);
  EXPECT_EQ(state[1].first, "qm.0");
  EXPECT_EQ(state[3].first, "absmax_m.0");
  EXPECT_EQ(state[3].second.numel(), 20);  // ceil(5000 / 256)
  EXPECT_EQ(state[5].first, "m.1");
  state[3].second = Tensor::zeros({19});
  try {
    eight.load_state(state);
    ADD_FAILURE() << "a wrong absmax shape was accepted";
  } catch (const engine::InputError& e) {
    EXPECT_NE(std::string(e.what()).find("absmax_m.0"), std::string::npos) << e.what();
  }
  PagedAdamW thirty_two(p, kConfig, false);
  EXPECT_THROW(thirty_two.load_state(eight.state()), engine::InputError);
}

TEST(MakeOptimizer, KnowsTheBitsandbytesNamesAndRefusesOthers) {
  EXPECT_EQ(engine::optim::optimizer_kinds(),
            (std::vector<std::string>{"adamw", "paged_adamw_32bit", "paged_adamw_8bit"}));
  std::vector<Tensor> p = {Tensor::zeros({3})};
  for (const std::string& kind : engine::optim::optimizer_kinds())
    EXPECT_EQ(engine::optim::make_optimizer(kind, p, kConfig)->kind(), kind);
  try {
    engine::optim::make_optimizer("adam8bit", p, kConfig);
    ADD_FAILURE() << "an unknown kind was accepted";
  } catch (const engine::InputError& e) {
    EXPECT_EQ(std::string(e.what()),
              "unknown optimizer 'adam8bit' (adamw, paged_adamw_32bit, paged_adamw_8bit)");
  }
}

}  // namespace
