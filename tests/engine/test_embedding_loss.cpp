// Semantics of the CPU reference embedding and cross-entropy (gradients are checked by
// the op harness): gathers, repeated ids sum in backward, hand-computed losses,
// ignore_index rows neither count nor get gradient, and bad ids / targets are named.
#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <string>
#include <vector>

#include "engine/autograd.h"
#include "engine/ops.h"
#include "tests/support/compare.h"

namespace engine {
namespace {

// Runs fn, expecting an engine::Error whose message contains `needle`.
void expect_error_mentions(const std::function<void()>& fn, const std::string& needle) {
  try {
    fn();
    ADD_FAILURE() << "no error thrown; expected one mentioning '" << needle << "'";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
  }
}

using testing_support::expect_near_all;

// -log softmax(row)[t] and softmax(row) computed the textbook way.
double row_loss(const std::vector<double>& row, int t) {
  double z = 0;
  for (double x : row) z += std::exp(x);
  return std::log(z) - row[t];
}
std::vector<double> row_softmax(const std::vector<double>& row) {
  double z = 0;
  for (double x : row) z += std::exp(x);
  std::vector<double> p;
  for (double x : row) p.push_back(std::exp(x) / z);
  return p;
}

Tensor table_4x2() {  // row r = (10r, 10r + 1)
  return Tensor::from_floats({0, 1, 10, 11, 20, 21, 30, 31}, Shape{4, 2});
}

TEST(EmbeddingRef, GathersRows) {
  Tensor ids = Tensor::from_ints({3, 0, 2, 2, 1, 3}, Shape{2, 3});
  Tensor out = ops::embedding(ids, table_4x2());
  ASSERT_EQ(out.shape(), (Shape{2, 3, 2}));
  expect_near_all(out.to_floats(), {30, 31, 0, 1, 20, 21, 20, 21, 10, 11, 30, 31}, 0.0f);
  // A scalar id gives one row [D].
  Tensor one = ops::embedding(Tensor::from_ints({1}, Shape{}), table_4x2());
  ASSERT_EQ(one.shape(), (Shape{2}));
  expect_near_all(one.to_floats(), {10, 11}, 0.0f);
}

TEST(EmbeddingRef, BackwardSumsRepeatedIds) {
  Tensor table = table_4x2().set_requires_grad();
  Tensor ids = Tensor::from_ints({1, 3, 1, 1}, Shape{4});
  Tensor out = ops::embedding(ids, table);
  Tensor dout = Tensor::from_floats({1, 2, 3, 4, 5, 6, 7, 8}, Shape{4, 2});
  backward({out}, {dout});
  // Row 1 collects positions 0, 2, 3; row 3 position 1; rows 0 and 2 nothing.
  expect_near_all(table.grad().to_floats(), {0, 0, 1 + 5 + 7, 2 + 6 + 8, 0, 0, 3, 4}, 0.0f);
}

TEST(EmbeddingRef, OutOfRangeIdIsNamed) {
  Tensor ids = Tensor::from_ints({0, 1, 2, 7}, Shape{2, 2});
  expect_error_mentions([&] { ops::embedding(ids, table_4x2()); }, "id 7 at ids[1, 1]");
  Tensor neg = Tensor::from_ints({0, -3}, Shape{2});
  expect_error_mentions([&] { ops::embedding(neg, table_4x2()); }, "id -3 at ids[1]");
}

TEST(CrossEntropyRef, MatchesHandComputedValue) {
  // 2 x 3: row 0 targets class 2, row 1 class 0.
  const std::vector<double> r0 = {1, 2, 3}, r1 = {1, 0, -1};
  Tensor logits = Tensor::from_floats({1, 2, 3, 1, 0, -1}, Shape{2, 3}).set_requires_grad();
  Tensor targets = Tensor::from_ints({2, 0}, Shape{2});
  Tensor loss = ops::cross_entropy(logits, targets);
  ASSERT_EQ(loss.shape(), Shape{});
  // log(e + e^2 + e^3) - 3 = 0.40760596, log(e + 1 + 1/e) - 1 = 0.40760596 as well.
  const double expected = (row_loss(r0, 2) + row_loss(r1, 0)) / 2;
  EXPECT_NEAR(loss.item(), expected, 1e-6);
  EXPECT_NEAR(loss.item(), 0.40760596, 1e-6);

  backward(loss);
  std::vector<double> p0 = row_softmax(r0), p1 = row_softmax(r1);
  expect_near_all(logits.grad().to_floats(),
                  {float(p0[0] / 2), float(p0[1] / 2), float((p0[2] - 1) / 2),
                   float((p1[0] - 1) / 2), float(p1[1] / 2), float(p1[2] / 2)},
                  1e-6f);
}

TEST(CrossEntropyRef, LargeLogitsStayFinite) {
  Tensor logits = Tensor::from_floats({1000, 1001, 999}, Shape{1, 3});
  float loss = ops::cross_entropy(logits, Tensor::from_ints({1}, Shape{1})).item();
  EXPECT_NEAR(loss, row_loss({1, 2, 0}, 1), 1e-5);
}

TEST(CrossEntropyRef, IgnoredRowsDoNotCount) {
  // Row 1 is ignored: the loss is the mean over rows 0 and 2 only.
  Tensor logits =
      Tensor::from_floats({1, 2, 3, 9, -9, 4, 1, 0, -1}, Shape{3, 3}).set_requires_grad();
  Tensor targets = Tensor::from_ints({2, -100, 0}, Shape{3});
  Tensor loss = ops::cross_entropy(logits, targets);
  const std::vector<double> r0 = {1, 2, 3}, r2 = {1, 0, -1};
  EXPECT_NEAR(loss.item(), (row_loss(r0, 2) + row_loss(r2, 0)) / 2, 1e-6);

  backward(ops::scale(loss, 3.0f));  // an upstream gradient g = 3 scales dlogits
  std::vector<float> g = logits.grad().to_floats();
  std::vector<double> p0 = row_softmax(r0), p2 = row_softmax(r2);
  for (int j = 0; j < 3; ++j) {
    EXPECT_NEAR(g[j], 3 * (p0[j] - (j == 2)) / 2, 1e-6) << "row 0 col " << j;
    EXPECT_EQ(g[3 + j], 0.0f) << "ignored row got gradient at col " << j;
    EXPECT_NEAR(g[6 + j], 3 * (p2[j] - (j == 0)) / 2, 1e-6) << "row 2 col " << j;
  }
}

TEST(CrossEntropyRef, CustomIgnoreIndex) {
  Tensor logits = Tensor::from_floats({1, 2, 3, 9, -9, 4}, Shape{2, 3});
  Tensor targets = Tensor::from_ints({2, -1}, Shape{2});
  EXPECT_NEAR(ops::cross_entropy(logits, targets, -1).item(), row_loss({1, 2, 3}, 2), 1e-6);
  // With the default ignore_index, -1 is an invalid target.
  expect_error_mentions([&] { ops::cross_entropy(logits, targets); }, "target -1");
}

TEST(CrossEntropyRef, AllIgnoredGivesZero) {
  Tensor logits = Tensor::from_floats({1, 2, 3, 4, 5, 6}, Shape{2, 3}).set_requires_grad();
  Tensor loss = ops::cross_entropy(logits, Tensor::from_ints({-100, -100}, Shape{2}));
  EXPECT_EQ(loss.item(), 0.0f);
  backward(loss);
  ASSERT_TRUE(logits.grad().defined());
  for (float x : logits.grad().to_floats()) EXPECT_EQ(x, 0.0f);
}

TEST(CrossEntropyRef, OutOfRangeTargetIsNamed) {
  Tensor logits = Tensor::zeros(Shape{2, 3});
  expect_error_mentions(
      [&] { ops::cross_entropy(logits, Tensor::from_ints({0, 3}, Shape{2})); }, "target 3 at row 1");
  expect_error_mentions(
      [&] { ops::cross_entropy(logits, Tensor::from_ints({-7, 0}, Shape{2})); }, "target -7 at row 0");
}

}  // namespace
}  // namespace engine
