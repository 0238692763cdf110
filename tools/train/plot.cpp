// `train70b plot` and the charts written at the end of a run (plot.h).
#include "tools/train/plot.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <limits>
#include <map>
#include <nlohmann/json.hpp>

#include "engine/error.h"
#include "engine/io/atomic_file.h"
#include "tools/train/cli.h"
#include "tools/train/progress.h"
#include "tools/train/run_output.h"
#include "tools/train/svg_chart.h"

namespace train {

namespace fs = std::filesystem;

namespace {

const double kNaN = std::numeric_limits<double>::quiet_NaN();

// One value per step (the last line for a step wins: a resumed run repeats steps).
using StepSeries = std::map<int64_t, double>;

struct Metrics {
  std::map<std::string, StepSeries> train;  // field -> step -> value
  std::map<std::string, StepSeries> eval;   // evaluated set -> step -> loss
  std::map<std::string, StepSeries> eval_accuracy;  // DPO: evaluated set -> step -> rewards/accuracies
};

double number_or_nan(const nlohmann::json& j, const char* key) {
  auto it = j.find(key);
  return it != j.end() && it->is_number() ? it->get<double>() : kNaN;
}

Metrics read_metrics(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  ENGINE_INPUT_CHECK(in.good(), path, ": cannot open");
  const std::string content((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  Metrics m;
  size_t line_no = 0;
  for (size_t begin = 0; begin < content.size();) {
    const size_t newline = content.find('\n', begin);
    ++line_no;
    if (newline == std::string::npos) break;  // being written: not a line yet
    const std::string line = content.substr(begin, newline - begin);
    begin = newline + 1;
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    nlohmann::json j = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
    ENGINE_INPUT_CHECK(j.is_object(), path, ":", line_no, ": not a JSON object");
    const std::string event = j.value("event", "");
    auto step_it = j.find("step");
    if (step_it == j.end() || !step_it->is_number_integer()) continue;
    const int64_t step = step_it->get<int64_t>();
    if (event == "train") {
      for (const char* key : {"loss", "lr", "grad_norm", "tokens_per_second", "step_tokens_per_second",
                              "host_memory_bytes", "device_memory_bytes", "device_memory_peak_bytes",
                              "rewards/accuracies"})
        if (j.contains(key)) m.train[key][step] = number_or_nan(j, key);
    } else if (event == "eval") {
      const auto split = j.find("split");
      const std::string name = split != j.end() && split->is_string() ? split->get<std::string>() : "held-out";
      m.eval[name][step] = number_or_nan(j, "loss");
      if (j.contains("rewards/accuracies")) m.eval_accuracy[name][step] = number_or_nan(j, "rewards/accuracies");
    }
  }
  return m;
}

ChartSeries to_series(const std::string& name, const StepSeries& values, const std::string& color,
                      double scale = 1) {
  ChartSeries s{name, {}, {}, color};
  for (const auto& [step, v] : values) {
    s.x.push_back(double(step));
    s.y.push_back(v * scale);
  }
  return s;
}

// The EMA the progress line shows, over the same steps (a gap where the loss is one).
ChartSeries ema_series(const StepSeries& loss, const std::string& color) {
  ChartSeries s{"train loss (EMA 0.9)", {}, {}, color};
  LossEma ema;
  for (const auto& [step, v] : loss) {
    ema.add(v);
    s.x.push_back(double(step));
    s.y.push_back(std::isfinite(v) ? ema.value() : kNaN);
  }
  return s;
}

// A log axis helps when the positive values span more than two decades.
bool spans_decades(const StepSeries& values) {
  double lo = std::numeric_limits<double>::infinity(), hi = 0;
  for (const auto& [step, v] : values)
    if (std::isfinite(v) && v > 0) lo = std::min(lo, v), hi = std::max(hi, v);
  return hi > 0 && hi / lo > 100;
}

const char* const kColors[] = {"#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b"};

}  // namespace

std::string find_metrics_file(const std::string& run_dir) {
  std::error_code ec;
  if (fs::is_regular_file(run_dir, ec)) return run_dir;
  // A run in progress writes into its staging directory beside RUN_DIR (run_output.h).
  if (const fs::path live = live_metrics_path(run_dir); !live.empty()) return live.string();
  ENGINE_INPUT_CHECK(fs::is_directory(run_dir, ec), run_dir, ": not a run directory (no such directory)");
  for (const char* name : {"metrics.jsonl", "metrics.jsonl.partial"}) {
    const fs::path p = fs::path(run_dir) / name;
    if (fs::is_regular_file(p, ec)) return p.string();
  }
  throw engine::InputError(run_dir + ": not a run directory (no metrics.jsonl or metrics.jsonl.partial)");
}

std::vector<std::string> write_plots(const std::string& metrics_file, const std::string& out_dir,
                                     const PlotOptions& options) {
  const Metrics m = read_metrics(metrics_file);
  std::vector<std::pair<std::string, std::string>> charts;  // file name, SVG
  auto train = [&](const char* key) {
    auto it = m.train.find(key);
    return it == m.train.end() ? StepSeries{} : it->second;
  };
  {
    std::vector<ChartSeries> loss = {to_series("train loss", train("loss"), "#9ecae1"),
                                     ema_series(train("loss"), kColors[0])};
    size_t color = 1;
    for (const auto& [name, values] : m.eval) {
      loss.push_back(to_series(name + " loss", values, kColors[color++ % std::size(kColors)]));
      loss.back().markers = true;
    }
    charts.push_back({"loss.svg", render_line_chart({"Loss", "step", "loss", options.log_loss}, loss)});
  }
  charts.push_back({"learning_rate.svg",
                    render_line_chart({"Learning rate", "step", "lr"}, {to_series("lr", train("lr"), kColors[2])})});
  charts.push_back({"grad_norm.svg",
                    render_line_chart({"Gradient norm (before clipping)", "step", "global L2 norm",
                                       spans_decades(train("grad_norm"))},
                                      {to_series("grad norm", train("grad_norm"), kColors[3])})});
  {
    // Each step's own rate (light; older metrics files lack it) under the run's average
    // since its start, which includes evaluations and checkpoint saves.
    std::vector<ChartSeries> rate;
    if (m.train.count("step_tokens_per_second"))
      rate.push_back(to_series("this step", train("step_tokens_per_second"), "#fdd0a2"));
    rate.push_back(to_series("average since start", train("tokens_per_second"), kColors[4]));
    const ChartSpec spec{.title = "Throughput", .x_label = "step", .y_label = "tokens / s", .y_from_zero = true};
    charts.push_back({"tokens_per_second.svg", render_line_chart(spec, rate)});
  }
  if (m.train.count("host_memory_bytes") || m.train.count("device_memory_bytes")) {
    // GiB once any value reaches 1 GiB, else MiB: a tiny run's axis reads 9.5, not 0.0093.
    double largest = 0;
    for (const char* key : {"host_memory_bytes", "device_memory_bytes", "device_memory_peak_bytes"})
      for (const auto& [step, v] : train(key))
        if (std::isfinite(v)) largest = std::max(largest, v);
    const bool gib = largest >= double(1ull << 30);
    const double scale = 1.0 / double(gib ? 1ull << 30 : 1ull << 20);
    std::vector<ChartSeries> memory;
    if (m.train.count("device_memory_bytes")) {
      memory.push_back(to_series("device in use", train("device_memory_bytes"), kColors[0], scale));
      memory.push_back(to_series("device peak", train("device_memory_peak_bytes"), kColors[1], scale));
    }
    if (m.train.count("host_memory_bytes"))
      memory.push_back(to_series("host (RSS)", train("host_memory_bytes"), kColors[2], scale));
    const ChartSpec spec{.title = "Memory", .x_label = "step", .y_label = gib ? "GiB" : "MiB", .y_from_zero = true};
    charts.push_back({"memory.svg", render_line_chart(spec, memory)});
  }
  if (m.train.count("rewards/accuracies")) {  // DPO (docs/train70b.md): the preference learned
    std::vector<ChartSeries> accuracy = {to_series("train (per step)", train("rewards/accuracies"), "#c7e9c0")};
    size_t color = 1;
    for (const auto& [name, values] : m.eval_accuracy) {
      accuracy.push_back(to_series(name, values, kColors[color++ % std::size(kColors)]));
      accuracy.back().markers = true;
    }
    const ChartSpec spec{.title = "DPO reward accuracy (chosen reward above rejected)", .x_label = "step",
                         .y_label = "rewards/accuracies", .y_from_zero = true};
    charts.push_back({"reward_accuracy.svg", render_line_chart(spec, accuracy)});
  }
  std::error_code ec;
  fs::create_directories(out_dir, ec);
  ENGINE_INPUT_CHECK(!ec, out_dir, ": cannot create the plot directory: ", ec.message());
  std::vector<std::string> written;
  for (const auto& [name, svg] : charts) {
    const std::string path = (fs::path(out_dir) / name).string();
    engine::io::write_file_atomic(path, svg);
    written.push_back(path);
  }
  return written;
}

int plot_main(int argc, char** argv) {
  std::string run_dir, output;
  PlotOptions o;
  CLI::App app{"train70b plot: SVG charts of a run (loss, learning rate, gradient norm, tokens/s,\n"
               "memory) from RUN_DIR/metrics.jsonl, or metrics.jsonl.partial while it runs.",
               "train70b plot"};
  app.add_option("RUN_DIR", run_dir, "A train70b --output directory (or a metrics.jsonl file)")->required();
  app.add_option("--output", output, "Directory for the charts (default: RUN_DIR/plots)");
  app.add_flag("--log-loss", o.log_loss, "Loss on a log axis");
  if (const std::optional<int> end = parse_command_line(app, argc, argv, "train70b plot")) return *end;
  try {
    const std::string metrics = find_metrics_file(run_dir);
    if (output.empty() && fs::is_regular_file(run_dir)) output = (fs::path(metrics).parent_path() / "plots").string();
    if (output.empty()) {
      // RUN_DIR/plots, also for a run in progress, whose metrics are in its hidden staging
      // directory: the output directory (with its marker) is the run's either way.
      if (fs::path(metrics) == live_metrics_path(run_dir)) ensure_output_dir(run_dir);
      output = (fs::path(run_dir) / "plots").string();
    }
    for (const std::string& path : write_plots(metrics, output, o)) std::cout << path << "\n";
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "train70b plot: %s\n", e.what());
    return 1;
  }
}

}  // namespace train
