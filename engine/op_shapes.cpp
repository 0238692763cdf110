#include "engine/op_shapes.h"

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

kmath::AttentionDims attention_dims(const Shape& q, const Shape& k, const Shape& v) {
  ENGINE_CHECK(q.rank() == 4 && k.rank() == 4 && v.rank() == 4,
               "attention: q, k, v must be [B, T, H, D], got ", q.str(), ", ", k.str(), ", ",
               v.str());
  ENGINE_CHECK(k == v, "attention: k ", k.str(), " and v ", v.str(), " differ");
  ENGINE_CHECK(q[0] == k[0] && q[1] == k[1] && q[3] == k[3], "attention: q ", q.str(), " and k ",
               k.str(), " differ in batch, tokens or head dim");
  const kmath::AttentionDims d{q[0], q[1], q[2], k[2], q[3]};
  ENGINE_CHECK(d.kv_heads > 0 && d.q_heads % d.kv_heads == 0, "attention: ", d.q_heads,
               " query heads are not a multiple of ", d.kv_heads, " KV heads");
  return d;
}

void check_rms_norm(const Shape& x, const Shape& w, float eps) {
  ENGINE_CHECK(x.rank() >= 1 && x.last() > 0, "rms_norm: x must be [..., D], got ", x.str());
  ENGINE_CHECK(w.rank() == 1 && w[0] == x.last(), "rms_norm: weight must be [", x.last(),
               "], got ", w.str());
  ENGINE_CHECK(eps >= 0.0f, "rms_norm: eps must be >= 0, got ", eps);
}

void check_rope(const Shape& s, const OpAttrs& a) {
  ENGINE_CHECK(s.rank() == 4, "rope: x must be [B, T, H, Dh], got ", s.str());
  ENGINE_CHECK(s[3] > 0 && s[3] % 2 == 0, "rope: head dim must be even and positive, got ",
               s.str());
  ENGINE_CHECK(a.position_offset >= 0, "rope: position_offset must be >= 0, got ",
               a.position_offset);
  const RopeConfig& c = a.rope;
  ENGINE_CHECK(c.theta > 0.0f, "rope: theta must be positive, got ", c.theta);
  if (c.scaling_factor > 0.0f)
    ENGINE_CHECK(c.low_freq_factor > 0.0f && c.high_freq_factor > c.low_freq_factor &&
                     c.original_max_position > 0.0f,
                 "rope: llama3 scaling needs 0 < low_freq_factor < high_freq_factor and "
                 "original_max_position > 0, got low ",
                 c.low_freq_factor, ", high ", c.high_freq_factor, ", original ",
                 c.original_max_position);
}

Shape embedding_output_shape(const Shape& s, int64_t d) {
  switch (s.rank()) {
    case 0: return Shape{d};
    case 1: return Shape{s[0], d};
    case 2: return Shape{s[0], s[1], d};
    case 3: return Shape{s[0], s[1], s[2], d};
  }
  ENGINE_CHECK(false, "embedding: ids of rank ", s.rank(), " leave no room for the embedding dim");
  return {};
}

std::string index_text(const Shape& s, int64_t n) {
  std::string text = "]";
  for (int i = s.rank() - 1; i >= 0; --i) {
    text = std::to_string(n % s[i]) + (i == s.rank() - 1 ? "" : ", ") + text;
    n /= s[i];
  }
  return "[" + text;
}

}  // namespace engine
