#include "engine/matmul_shape.h"

#include "engine/error.h"

namespace engine {

MatmulDims matmul_dims(const Shape& a, const Shape& b, bool ta, bool tb) {
  ENGINE_CHECK(a.rank() >= 2 && b.rank() >= 2, "matmul: operands need rank >= 2, got ", a.str(),
               " and ", b.str());
  MatmulDims d;
  d.m = ta ? a[-1] : a[-2];
  d.k = ta ? a[-2] : a[-1];
  const int64_t kb = tb ? b[-1] : b[-2];
  d.n = tb ? b[-2] : b[-1];
  ENGINE_CHECK(d.k == kb, "matmul: inner dimensions differ: ", a.str(), (ta ? "^T" : ""), " @ ",
               b.str(), (tb ? "^T" : ""));
  d.batch = 1;
  for (int i = 0; i < a.rank() - 2; ++i) d.batch *= a[i];
  d.b_shared = b.rank() == 2;
  if (!d.b_shared) {
    ENGINE_CHECK(b.rank() == a.rank(), "matmul: batch ranks differ: ", a.str(), " and ", b.str());
    for (int i = 0; i < a.rank() - 2; ++i)
      ENGINE_CHECK(a[i] == b[i], "matmul: batch dims differ: ", a.str(), " and ", b.str());
  }
  return d;
}

}  // namespace engine
