#include "tests/support/errors.h"

#include <gtest/gtest.h>

#include "engine/error.h"

namespace testing_support {

void expect_one_line_error(const std::function<void()>& fn, std::initializer_list<std::string> parts) {
  try {
    fn();
  } catch (const engine::Error& e) {
    const std::string msg = e.what();
    EXPECT_EQ(msg.find('\n'), std::string::npos) << msg;
    for (const std::string& p : parts)
      EXPECT_NE(msg.find(p), std::string::npos) << "'" << p << "' not in: " << msg;
    return;
  }
  ADD_FAILURE() << "no engine::Error thrown";
}

}  // namespace testing_support
