// Hugging Face model ids resolved from the local hub cache, never downloaded:
//   --model meta-llama/Llama-3.3-70B-Instruct
//   -> <cache>/models--meta-llama--Llama-3.3-70B-Instruct/snapshots/<revision>
// where <cache> is $HF_HUB_CACHE, else $HF_HOME/hub, else ~/.cache/huggingface/hub (the
// order huggingface_hub uses), and <revision> is the one refs/main names when that
// snapshot exists, else the most recently modified snapshot holding a config.json.
#pragma once
#include <string>

namespace models {

// The hub cache directory from the environment (it need not exist).
std::string hf_hub_cache_dir();

// "org/name": two non-empty parts of letters, digits, '-', '_', '.', not starting with '.'.
bool is_hf_model_id(const std::string& text);

// The snapshot directory of `model_id`; one InputError line saying how to download it
// (huggingface-cli download <id>) when the cache has no usable snapshot.
std::string resolve_hf_model(const std::string& model_id);

}  // namespace models
