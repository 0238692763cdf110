// LoRA settings with PEFT conventions (facts.md): A [r, in] uniform in
// (-1/sqrt(in), 1/sqrt(in)), B [out, r] zeros, scaling alpha / r (rsLoRA:
// alpha / sqrt(r)), dropout on the input of A only.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace models {

// The seven Llama linears, in layer order.
const std::vector<std::string>& all_linear_names();

struct LoraConfig {
  int64_t r = 16;
  float alpha = 32.0f;
  float dropout = 0.05f;
  bool use_rslora = false;
  std::vector<std::string> targets = all_linear_names();
  float scaling() const;
  void validate() const;  // r > 0, 0 <= dropout < 1, known targets
};

// "all-linear" or a comma-separated subset such as "q_proj,v_proj".
std::vector<std::string> parse_lora_targets(const std::string& list);

}  // namespace models
