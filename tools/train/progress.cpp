#include "tools/train/progress.h"

#include <sys/ioctl.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <string_view>
#include <vector>

#include "engine/allocator.h"

namespace train {

namespace {

// VmRSS and VmHWM from /proc/self/status ("VmRSS:    1234 kB").
void read_process_memory(size_t* rss, size_t* hwm) {
  std::ifstream status("/proc/self/status");
  for (std::string line; std::getline(status, line);) {
    if (line.rfind("VmRSS:", 0) == 0) *rss = std::strtoull(line.c_str() + 6, nullptr, 10) * 1024;
    if (line.rfind("VmHWM:", 0) == 0) *hwm = std::strtoull(line.c_str() + 6, nullptr, 10) * 1024;
  }
}

// "812 MiB", "31.4 GiB": short enough for the live line.
std::string short_bytes(size_t bytes) {
  char buf[32];
  if (bytes >= (size_t{1} << 30)) std::snprintf(buf, sizeof buf, "%.1f GiB", bytes / double(size_t{1} << 30));
  else std::snprintf(buf, sizeof buf, "%.0f MiB", bytes / double(size_t{1} << 20));
  return buf;
}

std::string printf_string(const char* format, auto... args) {
  char buf[256];
  std::snprintf(buf, sizeof buf, format, args...);
  return buf;
}

double eta_seconds(const StepStatus& s) {
  if (s.step <= 0) return -1;
  return s.elapsed_seconds / double(s.step) * double(s.total_steps - s.step);
}

std::string memory_field(const MemorySample& m) {
  if (m.gpu) return "gpu " + short_bytes(m.device_in_use) + " (peak " + short_bytes(m.device_peak) + ")";
  return "mem " + short_bytes(m.host_rss) + " (peak " + short_bytes(m.host_peak) + ")";
}

}  // namespace

MemorySample sample_memory(engine::Device device) {
  MemorySample m;
  read_process_memory(&m.host_rss, &m.host_peak);
  m.gpu = device.type != engine::DeviceType::CPU;
  if (m.gpu) {
    const engine::MemoryStats stats = engine::allocator_for(device).stats();
    m.device_in_use = stats.in_use;
    m.device_peak = stats.peak;
  } else {
    m.device_in_use = m.host_rss;
    m.device_peak = m.host_peak;
  }
  return m;
}

void LossEma::add(double loss) {
  if (!std::isfinite(loss)) return;
  sum_ = beta_ * sum_ + (1 - beta_) * loss;
  weight_ = beta_ * weight_ + (1 - beta_);  // = 1 - beta^n
}

double LossEma::value() const { return weight_ > 0 ? sum_ / weight_ : std::nan(""); }

std::string format_duration(double seconds) {
  if (!std::isfinite(seconds) || seconds < 0) return "?";
  const long long s = std::llround(seconds);
  if (s >= 3600) return printf_string("%lldh%02lldm", s / 3600, s / 60 % 60);
  if (s >= 60) return printf_string("%lldm%02llds", s / 60, s % 60);
  return printf_string("%llds", s);
}

std::string format_live_line(const StepStatus& s, int width) {
  std::vector<std::string> fields = {
      printf_string("step %lld/%lld", static_cast<long long>(s.step), static_cast<long long>(s.total_steps)),
      printf_string("ema loss %.4f", s.loss_ema),
      "ETA " + format_duration(eta_seconds(s)),
      printf_string("epoch %.2f/%.4g", s.epoch, s.total_epochs),
      printf_string("lr %.2e", s.lr),
      printf_string("%.0f tok/s", s.tokens_per_second),
      memory_field(s.memory),
  };
  if (s.memory.gpu) fields.push_back("host " + short_bytes(s.memory.host_rss));
  fields.push_back(printf_string("grad-norm %.3g", s.grad_norm));
  // A line as wide as the terminal makes some terminals wrap it: keep one column free.
  const size_t room = width > 1 ? static_cast<size_t>(width - 1) : 1;
  std::string line = fields[0].substr(0, room);
  for (size_t i = 1; i < fields.size(); ++i) {
    if (line.size() + 2 + fields[i].size() > room) break;
    line += "  " + fields[i];
  }
  return line;
}

std::string format_plain_line(const StepStatus& s) {
  std::string line = printf_string(
      "step %5lld/%lld  epoch %.2f  loss %.4f (ema %.4f)  lr %.2e  grad-norm %.3f  %.0f tokens/s  ETA %s  ",
      static_cast<long long>(s.step), static_cast<long long>(s.total_steps), s.epoch, s.loss, s.loss_ema,
      s.lr, s.grad_norm, s.tokens_per_second, format_duration(eta_seconds(s)).c_str());
  line += memory_field(s.memory);
  if (s.memory.gpu) line += "  host " + short_bytes(s.memory.host_rss);
  return line;
}

int terminal_width() {
  winsize ws{};
  if (::ioctl(STDOUT_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_col > 0) return ws.ws_col;
  if (const char* columns = std::getenv("COLUMNS")) {
    const int c = std::atoi(columns);
    if (c > 0) return c;
  }
  return 80;
}

ProgressMode choose_progress_mode(const std::ostream& log, bool quiet) {
  if (quiet) return ProgressMode::Quiet;
  return &log == &std::cout && ::isatty(STDOUT_FILENO) ? ProgressMode::Live : ProgressMode::Lines;
}

Progress::Progress(std::ostream& log, ProgressMode mode, int64_t log_every)
    : log_(log), mode_(mode), log_every_(log_every > 0 ? log_every : 1) {}

Progress::~Progress() { finish(); }

void Progress::step(const StepStatus& s) {
  switch (mode_) {
    case ProgressMode::Quiet:
      return;
    case ProgressMode::Live:
      log_ << "\r" << format_live_line(s, terminal_width()) << "\x1b[K" << std::flush;
      live_line_shown_ = true;
      return;
    case ProgressMode::Lines:
      if (s.step % log_every_ == 0 || s.step == 1 || s.step == s.total_steps)
        log_ << format_plain_line(s) << "\n" << std::flush;
      return;
  }
}

void Progress::print(const std::string& line) {
  if (mode_ == ProgressMode::Quiet) return;
  if (live_line_shown_) log_ << "\r\x1b[K";
  live_line_shown_ = false;
  log_ << line << "\n" << std::flush;
}

void Progress::finish() {
  if (!live_line_shown_) return;
  log_ << "\n" << std::flush;
  live_line_shown_ = false;
}

void note_eval(RunReport& report, const std::string& when, int64_t step, double loss, double accuracy) {
  const RunReport::Eval e{when, step, loss, accuracy};
  report.final_eval = e;
  if (std::isfinite(loss) && (!report.best_eval || loss < report.best_eval->loss)) report.best_eval = e;
}

std::string format_summary_table(const RunReport& r) {
  std::vector<std::pair<std::string, std::string>> rows;
  rows.push_back({"wall time", format_duration(r.wall_seconds)});
  rows.push_back({"steps", std::to_string(r.steps) + " of " + std::to_string(r.total_steps)});
  rows.push_back({"tokens", std::to_string(r.tokens)});
  auto eval_text = [](const RunReport::Eval& e) {
    return printf_string("loss %.4f (perplexity %.4g, accuracy %.1f%%) at step %lld, %s", e.loss,
                         std::exp(e.loss), 100 * e.accuracy, static_cast<long long>(e.step), e.when.c_str());
  };
  if (r.best_eval) rows.push_back({"best eval", eval_text(*r.best_eval)});
  if (r.final_eval) rows.push_back({"final eval", eval_text(*r.final_eval)});
  if (!r.forgetting.empty()) rows.push_back({"forgetting check", r.forgetting});
  if (r.peak_memory.gpu) rows.push_back({"peak device memory", engine::format_bytes(r.peak_memory.device_peak)});
  rows.push_back({"peak host memory", engine::format_bytes(r.peak_memory.host_peak)});
  if (!r.adapter_dir.empty()) rows.push_back({"adapter", r.adapter_dir});
  if (!r.metrics_file.empty()) rows.push_back({"metrics", r.metrics_file});
  if (!r.plots_dir.empty()) rows.push_back({"plots", r.plots_dir});
  if (!r.run_config.empty()) rows.push_back({"run config", r.run_config});
  // Fixed width, that of the longest row name, so CPU and GPU runs' tables line up alike.
  const size_t name_width = std::string_view("peak device memory").size();
  std::string table = "summary\n";
  for (const auto& [name, value] : rows)
    table += "  " + name + std::string(name_width - name.size() + 2, ' ') + value + "\n";
  return table;
}

}  // namespace train
