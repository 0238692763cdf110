// A run's resolved configuration as JSON: OUTPUT/run_config.json holds every TrainOptions
// field under its flag's name (without "--"), plus "resolved" (what the model and dataset
// turned out to be: informational, ignored when read). `train70b --config FILE` reads the
// same JSON back; flags given on the command line override the file.
#pragma once
#include <functional>
#include <nlohmann/json.hpp>
#include <set>
#include <string>
#include <vector>

#include "tools/train/options.h"

namespace train {

// Every field except --resume, --config and --quiet, which say how one invocation starts or
// shows itself, not what the run is. Floats are written as the shortest decimal that reads
// back to the same float.
nlohmann::json options_to_json(const TrainOptions& options);

// The keys options_to_json writes, in its order.
std::vector<std::string> run_config_keys();

// Sets each field of `options` found in the JSON object at `path` for which
// given_on_command_line(key) is false; returns the keys the file held. Throws
// engine::InputError naming the file and the key: unknown keys, wrong types, bad JSON.
std::set<std::string> apply_run_config(const std::string& path, TrainOptions& options,
                                       const std::function<bool(const std::string&)>& given_on_command_line);

}  // namespace train
