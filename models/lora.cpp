#include "models/lora.h"

#include <algorithm>
#include <cmath>
#include <sstream>

#include "engine/error.h"

namespace models {

const std::vector<std::string>& all_linear_names() {
  static const std::vector<std::string> names{"q_proj", "k_proj", "v_proj", "o_proj",
                                              "gate_proj", "up_proj", "down_proj"};
  return names;
}

float LoraConfig::scaling() const {
  return use_rslora ? alpha / std::sqrt(static_cast<float>(r)) : alpha / static_cast<float>(r);
}

void LoraConfig::validate() const {
  // The settings come from the user (flags or an adapter_config.json): input errors.
  ENGINE_INPUT_CHECK(r > 0, "lora rank must be positive, got ", r);
  ENGINE_INPUT_CHECK(dropout >= 0.0f && dropout < 1.0f, "lora dropout must be in [0, 1), got ",
                     dropout);
  ENGINE_INPUT_CHECK(!targets.empty(), "lora needs at least one target module");
  for (const std::string& t : targets) {
    const auto& all = all_linear_names();
    ENGINE_INPUT_CHECK(std::find(all.begin(), all.end(), t) != all.end(), "unknown lora target '",
                       t, "' (q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj)");
  }
}

std::vector<std::string> parse_lora_targets(const std::string& list) {
  if (list == "all-linear" || list == "all") return all_linear_names();
  std::vector<std::string> out;
  std::stringstream s(list);
  for (std::string item; std::getline(s, item, ',');)
    if (!item.empty() && std::find(out.begin(), out.end(), item) == out.end()) out.push_back(item);
  LoraConfig probe;
  probe.targets = out;
  probe.validate();
  return out;
}

}  // namespace models
