// The two kinds of engine error (engine/error.h): a broken invariant names the check's
// place in the sources, for a bug report; a problem in the user's input carries only the
// message, which names the user's file and place. Both are caught as engine::Error.
#include <gtest/gtest.h>

#include <string>

#include "engine/error.h"

namespace {

int check_line = 0;

void broken_invariant() {
  check_line = __LINE__ + 1;
  ENGINE_CHECK(1 + 1 == 3, "the sum is ", 2);
}

void bad_input() {
  ENGINE_INPUT_CHECK(false, "data.jsonl:3: field \"text\" must be a string, got ", 17);
}

}  // namespace

TEST(Error, InputChecksCarryOnlyTheMessage) {
  try {
    bad_input();
    ADD_FAILURE() << "no error";
  } catch (const engine::InputError& e) {
    EXPECT_STREQ(e.what(), "data.jsonl:3: field \"text\" must be a string, got 17");
  }
  EXPECT_THROW(bad_input(), engine::Error);  // callers that catch engine::Error still do
}

TEST(Error, InternalChecksNameTheirPlaceInTheSources) {
  try {
    broken_invariant();
    ADD_FAILURE() << "no error";
  } catch (const engine::InputError& e) {
    ADD_FAILURE() << "an invariant is not an input error: " << e.what();
  } catch (const engine::Error& e) {
    EXPECT_EQ(std::string(e.what()),
              std::string(__FILE__) + ":" + std::to_string(check_line) + ": the sum is 2");
  }
}
