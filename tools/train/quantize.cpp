// `train70b quantize --model DIR --output DIR [--max-shard-size 5GB]` (models/bnb_checkpoint.h).
#include "tools/train/quantize.h"

#include <cstdio>
#include <exception>
#include <filesystem>
#include <iostream>

#include "models/bnb_checkpoint.h"
#include "models/hf_hub.h"
#include "tools/train/cli.h"

namespace train {

int quantize_main(int argc, char** argv) {
  std::string model, output, shard_size = "5GB";
  models::QuantizeOptions o;
  CLI::App app{"train70b quantize: writes a dense Llama checkpoint (BF16/F16/F32 safetensors) as a\n"
               "bitsandbytes 4-bit one (NF4, double quantization, quantization_config in\n"
               "config.json), about 4x smaller; transformers + bitsandbytes open it with\n"
               "from_pretrained, and train70b --model loads it without re-quantizing.",
               "train70b quantize"};
  app.add_option("--model", model, "Hugging Face model directory or id in the local hub cache")
      ->required();
  app.add_option("--output", output, "New directory for the 4-bit checkpoint (absent or empty)")
      ->required();
  app.add_option("--max-shard-size", shard_size, "Largest safetensors shard: 5GB, 500MB, 2GiB")
      ->capture_default_str();
  app.add_option("--threads", o.threads, "Quantizer threads (0: all cores)")->capture_default_str();
  if (const std::optional<int> end = parse_command_line(app, argc, argv, "train70b quantize"))
    return *end;
  try {
    o.max_shard_bytes = models::parse_shard_size(shard_size);
    o.log = &std::cout;
    const std::string dir = !std::filesystem::exists(model) && models::is_hf_model_id(model)
                                ? models::resolve_hf_model(model)
                                : model;
    models::write_bnb_checkpoint(dir, output, o);
    std::cout << "quantize: wrote " << output << "\n";
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "train70b quantize: %s\n", e.what());
    return 1;
  }
}

}  // namespace train
