// Command-line parsing shared by train70b and its subcommands: --help prints and ends
// the run with status 0, a parse error is one line on stderr and status 2.
#pragma once
#include <CLI/CLI.hpp>

#include <cstdio>
#include <optional>

namespace train {

// nullopt: parsed, go on; otherwise the exit status to end the run with.
inline std::optional<int> parse_command_line(CLI::App& app, int argc, char** argv,
                                             const char* program) {
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp&) {
    std::printf("%s", app.help().c_str());
    return 0;
  } catch (const CLI::ParseError& e) {
    std::fprintf(stderr, "%s: %s (see --help)\n", program, e.what());
    return 2;
  }
  return std::nullopt;
}

}  // namespace train
