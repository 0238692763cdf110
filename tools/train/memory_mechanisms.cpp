#include "tools/train/memory_mechanisms.h"

#include "engine/error.h"

namespace train {

MemoryMechanisms resolve_memory_mechanisms(const TrainOptions& o, const models::LlamaConfig& c) {
  MemoryMechanisms m;
  m.offload_checkpoints = o.offload_checkpoints == "on" && o.checkpoint_layers;
  ENGINE_INPUT_CHECK(!(o.embedding_on_host == "on" && c.tie_embeddings),
                     "--embedding-on-host on: this model ties its embedding to the lm_head, which "
                     "needs it on the device");
  m.embedding_on_host = o.embedding_on_host == "on";
  if (o.tile_tokens > 0) {
    m.tile_tokens = o.tile_tokens;
  } else {
    int64_t tile = 1;
    while (2 * tile * c.intermediate * 2 <= kAutoTileBytes) tile *= 2;
    m.tile_tokens = o.batch_size * o.max_seq_len > tile ? tile : 0;
  }
  return m;
}

void apply_to(const MemoryMechanisms& m, models::ForwardOptions& forward) {
  forward.offload_checkpoints = m.offload_checkpoints;
  forward.tile_tokens = m.tile_tokens;
}

}  // namespace train
