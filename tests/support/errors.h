// Checking the engine's error contract: `fn` must throw engine::Error whose message
// is one line and contains every one of `parts` (file names, positions, values).
#pragma once
#include <functional>
#include <initializer_list>
#include <string>

namespace testing_support {

void expect_one_line_error(const std::function<void()>& fn, std::initializer_list<std::string> parts);

}  // namespace testing_support
