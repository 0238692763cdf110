#include "engine/tiling.h"

#include <algorithm>
#include <memory>
#include <string>
#include <vector>

#include "engine/autograd.h"
#include "engine/backend.h"
#include "engine/error.h"
#include "engine/nvtx.h"

namespace engine {

namespace {

size_t row_bytes(const Tensor& x) { return dtype_bytes(x.dtype(), x.shape().last()); }

// dst rows [first, first + src rows) = src (same row width and dtype, same device).
void write_rows(Tensor& dst, int64_t first, const Tensor& src) {
  ENGINE_CHECK(dst.dtype() == src.dtype() && dst.shape().last() == src.shape().last() &&
                   first + src.shape().rows() <= dst.shape().rows(),
               "tiled_rows: cannot write ", src.str(), " at row ", first, " of ", dst.str());
  backend::copy_bytes(static_cast<char*>(dst.raw_data()) + first * row_bytes(dst), dst.device(),
                      src.raw_data(), src.device(), src.nbytes());
}

class TiledNode final : public Node {
 public:
  TiledNode(TiledFn fn, Tensor x, bool x_wants_grad, int64_t tile_rows)
      : fn_(std::move(fn)), x_(std::move(x)), x_wants_grad_(x_wants_grad), tile_rows_(tile_rows) {}
  std::string name() const override { return "tiled_rows"; }

  std::vector<Tensor> backward(const std::vector<Tensor>& grad_outputs) override {
    const Tensor& dy = grad_outputs[0];
    const int64_t rows = x_.shape().rows();
    Tensor dx = x_wants_grad_ && dy.defined() ? Tensor::empty(x_.shape(), x_.dtype(), x_.device())
                                              : Tensor();
    if (!dy.defined()) return {dx};
    for (int64_t first = 0; first < rows; first += tile_rows_) {
      const int64_t count = std::min(tile_rows_, rows - first);
      Tensor x_tile = copy_rows(x_, first, count);
      x_tile.set_requires_grad(x_wants_grad_);
      Tensor y_tile;
      {
        NvtxRange range("recompute tile");
        GradModeGuard enable(true);
        y_tile = fn_(x_tile, first);
      }
      if (y_tile.requires_grad())
        engine::backward({y_tile}, {copy_rows(dy, first, count).view(y_tile.shape())});
      if (!dx.defined()) continue;
      Tensor g = x_tile.grad();
      if (!g.defined()) g = Tensor::zeros(x_tile.shape(), x_tile.dtype(), x_tile.device());
      write_rows(dx, first, g);
    }
    return {dx};
  }

 private:
  TiledFn fn_;
  Tensor x_;
  bool x_wants_grad_;
  int64_t tile_rows_;
};

}  // namespace

Tensor copy_rows(const Tensor& x, int64_t first, int64_t count) {
  const int64_t rows = x.shape().rows();
  ENGINE_CHECK(x.rank() >= 1 && first >= 0 && count >= 0 && first + count <= rows, "copy_rows: rows [",
               first, ", ", first + count, ") of ", x.str());
  Tensor out = Tensor::empty(Shape{count, x.shape().last()}, x.dtype(), x.device());
  backend::copy_bytes(out.raw_data(), out.device(),
                      static_cast<const char*>(x.raw_data()) + first * row_bytes(x), x.device(),
                      out.nbytes());
  return out;
}

Tensor tiled_rows(const TiledFn& fn, const Tensor& x, int64_t tile_rows) {
  const int64_t rows = x.shape().rows();
  if (tile_rows <= 0 || tile_rows >= rows) return fn(x, 0);
  Tensor y;
  {
    NoGradGuard no_grad;
    for (int64_t first = 0; first < rows; first += tile_rows) {
      const int64_t count = std::min(tile_rows, rows - first);
      Tensor y_tile = fn(copy_rows(x, first, count), first);
      ENGINE_CHECK(y_tile.shape().rows() == count, "tiled_rows: fn returned ", y_tile.str(), " for ",
                   count, " rows");
      if (!y.defined()) y = Tensor::empty(x.shape().with(-1, y_tile.shape().last()), y_tile.dtype(),
                                          y_tile.device());
      write_rows(y, first, y_tile);
    }
  }
  // Recorded even when x needs no gradient: fn may use parameters that do (LoRA factors).
  if (!grad_enabled()) return y;
  auto node = std::make_shared<TiledNode>(fn, x.detach(), x.requires_grad(), tile_rows);
  std::vector<Tensor> outputs{y};
  record(node, {x}, outputs);
  return outputs[0];
}

}  // namespace engine
