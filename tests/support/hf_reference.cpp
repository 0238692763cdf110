#include "tests/support/hf_reference.h"

#include "engine/autograd.h"
#include "engine/io/safetensors.h"
#include "models/adapter.h"
#include "models/hf_config.h"

namespace testing_support {

HfReference load_hf_reference(const std::string& dir) {
  HfReference r;
  r.dir = dir;
  r.config = models::load_hf_config(r.dir + "/config.json");
  engine::io::SafetensorsFile file(r.dir + "/reference.safetensors");
  r.ids = file.load("input_ids");
  r.labels = file.load("labels");
  r.mask = file.load("attention_mask").to_ints();
  r.logits = file.load("logits").to_floats();
  r.bf16_logits = file.load("bf16.logits").to_floats();
  r.loss = file.load("loss").to_floats().at(0);
  r.bf16_loss = file.load("bf16.loss").to_floats().at(0);
  for (const std::string& name : file.names()) {
    const std::string f32 = "grad.", bf16 = "bf16.grad.";
    if (name.rfind(f32, 0) == 0) r.grads[name.substr(f32.size())] = file.load(name).to_floats();
    if (name.rfind(bf16, 0) == 0) r.bf16_grads[name.substr(bf16.size())] = file.load(name).to_floats();
  }
  auto it = file.metadata().find("versions");
  if (it != file.metadata().end()) r.versions = it->second;
  return r;
}

std::unique_ptr<models::LlamaModel> load_engine_model(const HfReference& ref, float scaling_factor) {
  engine::io::SafetensorsIndex index(ref.dir);  // picks model.safetensors
  models::NamedTensors weights;
  for (const std::string& n : index.names()) weights.push_back({n, index.load(n)});
  auto model = std::make_unique<models::LlamaModel>(ref.config, weights, ref.dir);
  model->freeze_base(models::BaseFormat::F32);
  models::PeftAdapter adapter = models::read_peft_adapter(ref.dir);
  adapter.lora.alpha *= scaling_factor;
  model->add_lora(adapter.lora, /*seed, overwritten by the adapter's factors*/ 1);
  models::load_adapter_weights(*model, adapter, ref.dir);
  return model;
}

EngineRun run_engine(const models::LlamaModel& model, const HfReference& ref) {
  EngineRun run;
  {
    engine::NoGradGuard no_grad;
    run.logits = model.logits(ref.ids).to_floats();
  }
  engine::Tensor loss = model.loss(ref.ids, ref.labels);
  engine::backward(loss);
  run.loss = loss.item();
  for (auto& [name, t] : model.lora_parameters()) run.grads[name] = t.grad().to_floats();
  return run;
}

std::vector<float> real_positions(const std::vector<float>& logits, const HfReference& ref) {
  const size_t vocab = static_cast<size_t>(ref.config.vocab);
  std::vector<float> out;
  for (size_t p = 0; p < ref.mask.size(); ++p)
    if (ref.mask[p]) out.insert(out.end(), logits.begin() + p * vocab, logits.begin() + (p + 1) * vocab);
  return out;
}

}  // namespace testing_support
