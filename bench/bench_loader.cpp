// The streaming quantizing loader (models/weight_loader.h) on a synthetic BF16 checkpoint.
//
//   bench_loader [--gb N] [--device cpu|cuda] [--threads T] [--dir D] [--cold] [--check]
//
// Writes a Llama-shaped sharded BF16 checkpoint of about N GB (default 4) into a temporary
// folder (or D), loads it in a child process and reports (the files are in the page cache,
// as just written, so the loader's own work is measured; --cold drops them first, and the
// disk's read speed is measured too):
//   GB/s       checkpoint bytes / load time (files read, converted, quantized, placed);
//   peak RSS   the child's VmHWM, against the bound of issue 10:
//              final host model + largest tensor + 256 MB;
//   on CUDA    also the NF4 quantize kernel alone on the largest weight, as GB/s of its
//              bf16 input and as a fraction of a device-to-device copy of the same bytes.
// Targets: CPU >= 1 GB/s of BF16 input on 2 cores; on a GPU the load is bound by reading
// the files; peak RSS within the bound. --check exits 1 when the RSS bound is missed (the
// CI smoke runs --gb 0.05 --check). Plain program, any build (no GPU needed on the CPU).
#include <fcntl.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>

#include "engine/backend.h"
#include "engine/io/safetensors.h"
#include "engine/quant/nf4_linear.h"
#include "engine/rng.h"
#include "kernels/math/bf16.h"
#include "models/weight_loader.h"

namespace fs = std::filesystem;
using engine::DType;
using engine::Tensor;

namespace {

double now_s() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

// A Llama-3-like shape scaled to about `gb` GB of BF16, as many layers as fit (at least
// one): Llama-3-8B's layers (hidden 4096, intermediate 14336) from 4 GB, half that from
// 0.5 GB, hidden 512 / intermediate 1792 below.
models::LlamaConfig config_for(double gb) {
  models::LlamaConfig c;
  const int64_t scale = gb >= 4.0 ? 8 : gb >= 0.5 ? 4 : 1;
  c.hidden = 512 * scale;
  c.intermediate = 1792 * scale;
  c.heads = c.hidden / 128;
  c.head_dim = 128;
  c.kv_heads = std::max<int64_t>(1, c.heads / 4);
  c.vocab = scale > 1 ? 32000 : 8000;
  const double per_layer = 2.0 * (2 * c.hidden * c.hidden + 2 * c.hidden * c.kv_heads * 128 +
                                  3 * c.hidden * c.intermediate);
  const double dense = 2.0 * 2 * c.vocab * c.hidden;
  c.layers = std::max<int64_t>(1, static_cast<int64_t>((gb * 1e9 - dense) / per_layer));
  return c;
}

void fill_bf16(Tensor& t, uint64_t seed) {
  uint16_t* p = t.data<uint16_t>();
  uint64_t s = seed * 0x9E3779B97F4A7C15ull + 1;
  for (int64_t i = 0; i < t.numel(); ++i) {
    s = s * 6364136223846793005ull + 1442695040888963407ull;
    p[i] = kmath::float_to_bf16_bits((static_cast<float>((s >> 40) & 0xffff) / 32768.0f - 1.0f) * 0.05f);
  }
}

// One shard per layer (plus one for the rest): what the Hugging Face writers do, roughly.
uint64_t write_checkpoint(const fs::path& dir, const models::LlamaConfig& c) {
  fs::create_directories(dir);
  nlohmann::json config = {{"architectures", {"LlamaForCausalLM"}}, {"model_type", "llama"},
                           {"hidden_size", c.hidden}, {"num_hidden_layers", c.layers},
                           {"num_attention_heads", c.heads}, {"num_key_value_heads", c.kv_heads},
                           {"head_dim", c.head_dim}, {"intermediate_size", c.intermediate},
                           {"vocab_size", c.vocab}, {"rms_norm_eps", 1e-5}, {"torch_dtype", "bfloat16"}};
  std::ofstream(dir / "config.json") << config.dump(1);
  nlohmann::json map = nlohmann::json::object();
  uint64_t bytes = 0, seed = 1;
  std::vector<std::pair<std::string, Tensor>> shard;
  int shard_index = 0;
  auto flush = [&] {
    if (shard.empty()) return;
    const std::string name = "model-" + std::to_string(++shard_index) + ".safetensors";
    for (auto& [n, t] : shard) map[n] = name;
    engine::io::write_safetensors((dir / name).string(), shard, {{"format", "pt"}});
    shard.clear();
  };
  for (const models::WeightSpec& s : models::llama_weight_specs(c)) {
    Tensor t = Tensor::empty(s.shape, DType::BF16);
    if (s.shape.rank() == 1) t = Tensor::full(s.shape, 1.0f, DType::BF16);
    else fill_bf16(t, seed++);
    bytes += t.nbytes();
    shard.push_back({s.name, t});
    if (s.name.find("down_proj") != std::string::npos) flush();
  }
  flush();
  std::ofstream(dir / "model.safetensors.index.json")
      << nlohmann::json{{"metadata", {{"total_size", bytes}}}, {"weight_map", map}}.dump(1);
  return bytes;
}

// Cold cache: the load reads the files from the disk, as the first load of a downloaded
// model does (then the disk's speed is what is measured).
void drop_from_page_cache(const fs::path& dir) {
  for (const auto& e : fs::directory_iterator(dir)) {
    const int fd = ::open(e.path().c_str(), O_RDONLY);
    if (fd < 0) continue;
    ::fdatasync(fd);
    ::posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
    ::close(fd);
  }
}

struct ChildResult {
  double seconds = -1, peak_rss = 0, host_model = 0, kernel_gbs = 0, copy_gbs = 0;
  double cpu_seconds = 0;  // the child's user + system time (from wait4)
};

ChildResult load_in_child(const fs::path& dir, const models::LlamaConfig& c, engine::Device device,
                          int threads) {
  int fds[2];
  if (::pipe(fds) != 0) return {};
  const pid_t pid = ::fork();
  if (pid == 0) {
    ::close(fds[0]);
    ChildResult r;
    try {
      models::LoadOptions o;
      o.device = device;
      o.threads = threads;
      const double t0 = now_s();
      const auto m = models::load_llama(c, dir.string(), o);
      if (device.is_cuda()) engine::backend::synchronize(device);
      r.seconds = now_s() - t0;
      r.peak_rss = static_cast<double>(models::peak_rss_bytes());
      if (device.is_cpu()) {
        r.host_model = static_cast<double>(m->frozen_bytes());
        for (const auto& [n, t] : m->named_parameters()) r.host_model += static_cast<double>(t.nbytes());
      }
      if (device.is_cuda()) {  // the quantize kernel alone vs a copy of its input
        Tensor w = Tensor::empty({c.intermediate, c.hidden}, DType::BF16, device);
        engine::fill_normal(w, 0.0f, 0.02f, 1, 0);
        Tensor copy = Tensor::empty(w.shape(), DType::BF16, device);
        auto time = [&](auto fn) {
          fn();
          engine::backend::synchronize(device);
          const double s = now_s();
          for (int i = 0; i < 10; ++i) fn();
          engine::backend::synchronize(device);
          return (now_s() - s) / 10;
        };
        const double q = time([&] { engine::quant::Nf4FrozenLinear::quantize_on_device(w); });
        const double cp = time([&] {
          engine::backend::copy_bytes(copy.raw_data(), device, w.raw_data(), device, w.nbytes());
        });
        r.kernel_gbs = w.nbytes() / q / 1e9;
        r.copy_gbs = 2.0 * w.nbytes() / cp / 1e9;  // read + write
      }
    } catch (const std::exception& e) {
      std::fprintf(stderr, "bench_loader: %s\n", e.what());
    }
    (void)!::write(fds[1], &r, sizeof r);
    ::_exit(r.seconds < 0);
  }
  ::close(fds[1]);
  ChildResult r;
  if (::read(fds[0], &r, sizeof r) != sizeof r) r.seconds = -1;
  ::close(fds[0]);
  int status = 0;
  struct rusage usage{};
  ::wait4(pid, &status, 0, &usage);
  r.cpu_seconds = usage.ru_utime.tv_sec + usage.ru_utime.tv_usec * 1e-6 + usage.ru_stime.tv_sec +
                  usage.ru_stime.tv_usec * 1e-6;
  return r;
}

}  // namespace

int main(int argc, char** argv) {
  double gb = 4.0;
  int threads = 0;
  bool check = false, cold = false;
  std::string device_name = "cpu", dir_arg;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto value = [&] { return i + 1 < argc ? std::string(argv[++i]) : std::string(); };
    if (a == "--gb") gb = std::stod(value());
    else if (a == "--threads") threads = std::stoi(value());
    else if (a == "--device") device_name = value();
    else if (a == "--dir") dir_arg = value();
    else if (a == "--check") check = true;
    else if (a == "--cold") cold = true;
    else {
      std::fprintf(stderr, "usage: bench_loader [--gb N] [--device cpu|cuda] [--threads T] [--dir D] [--cold] [--check]\n");
      return 2;
    }
  }
  engine::Device device = engine::Device::cpu();
  if (device_name == "cuda") {
    std::string why;
    if (!engine::cuda_available(&why)) {
      std::printf("bench_loader: skipped on cuda: %s\n", why.c_str());
      return 0;
    }
    device = engine::Device::cuda();
  }
  const models::LlamaConfig c = config_for(gb);
  const fs::path dir = dir_arg.empty() ? fs::temp_directory_path() / ("bench_loader_" + std::to_string(::getpid()))
                                       : fs::path(dir_arg);
  const double t0 = now_s();
  const uint64_t bytes = write_checkpoint(dir, c);
  std::printf("checkpoint: %d layers, hidden %lld, intermediate %lld, vocab %lld: %.2f GB BF16, written in %.1f s\n",
              static_cast<int>(c.layers), static_cast<long long>(c.hidden),
              static_cast<long long>(c.intermediate), static_cast<long long>(c.vocab), bytes / 1e9,
              now_s() - t0);
  if (cold) drop_from_page_cache(dir);
  int64_t largest = 0;
  for (const models::WeightSpec& s : models::llama_weight_specs(c)) largest = std::max(largest, 2 * s.shape.numel());
  const ChildResult r = load_in_child(dir, c, device, threads);
  if (dir_arg.empty()) fs::remove_all(dir);
  if (r.seconds < 0) {
    std::printf("bench_loader: the load failed\n");
    return 1;
  }
  const unsigned cores = threads > 0 ? threads : std::max(1u, std::thread::hardware_concurrency());
  std::printf("load on %s (%u threads, %s page cache): %.2f s, %.2f GB/s of BF16 input (target on the CPU: >= 1 GB/s on 2 cores)\n",
              device.str().c_str(), cores, cold ? "cold" : "warm", r.seconds, bytes / r.seconds / 1e9);
  // On a shared machine the wall time includes waiting for the cores; the CPU time does not.
  std::printf("CPU time %.2f s (user + system, all threads): %.2f GB per CPU-second; on %u free cores that is %.2f GB/s\n",
              r.cpu_seconds, bytes / r.cpu_seconds / 1e9, cores, cores * bytes / r.cpu_seconds / 1e9);
  const double bound = r.host_model + largest + 256.0 * (1 << 20);
  bool ok = true;
  if (device.is_cpu()) {
    ok = r.peak_rss <= bound;
    std::printf("peak RSS %.0f MB, bound %.0f MB = final host model %.0f MB + largest tensor %.0f MB + 256 MB: %s\n",
                r.peak_rss / 1e6, bound / 1e6, r.host_model / 1e6, largest / 1e6, ok ? "within" : "ABOVE");
  } else {
    std::printf("peak host RSS %.0f MB (host model: none; largest tensor %.0f MB + 256 MB = %.0f MB): %s\n",
                r.peak_rss / 1e6, largest / 1e6, (largest + 256.0 * (1 << 20)) / 1e6,
                r.peak_rss <= largest + 256.0 * (1 << 20) ? "within" : "ABOVE");
    std::printf("NF4 quantize kernel: %.1f GB/s of bf16 input; device copy %.1f GB/s; ratio %.2f\n",
                r.kernel_gbs, r.copy_gbs, r.kernel_gbs / r.copy_gbs);
  }
  return check && !ok ? 1 : 0;
}
