// Tests for engine/io/atomic_file: a committed write replaces the target and leaves no
// temporary file; a writer destroyed before commit (an exception mid-write) leaves
// neither target nor temporary file and an existing target untouched; errors are
// one-line engine::Errors naming the target path.
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <filesystem>
#include <fstream>
#include <functional>
#include <initializer_list>
#include <iterator>
#include <stdexcept>
#include <string>
#include <vector>

#include "engine/error.h"
#include "engine/io/atomic_file.h"
#include "tests/support/errors.h"

namespace {

namespace fs = std::filesystem;
using engine::io::AtomicFileWriter;
using engine::io::write_file_atomic;

class AtomicFileTest : public ::testing::Test {
 protected:
  void SetUp() override {
    static std::atomic<int> counter{0};
    const auto* test = ::testing::UnitTest::GetInstance()->current_test_info();
    dir_ = fs::temp_directory_path() / ("atomic_file_test_" + std::to_string(::getpid()) + "_" +
                                        std::to_string(counter++) + "_" + test->name());
    fs::create_directories(dir_);
  }
  void TearDown() override {
    std::error_code ec;
    fs::permissions(dir_, fs::perms::owner_all, fs::perm_options::add, ec);
    fs::remove_all(dir_, ec);
  }

  std::string path(const std::string& name) const { return (dir_ / name).string(); }

  static std::string read(const std::string& p) {
    std::ifstream f(p, std::ios::binary);
    return {std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>()};
  }

  std::vector<std::string> dir_entries() const {
    std::vector<std::string> out;
    for (const auto& e : fs::directory_iterator(dir_)) out.push_back(e.path().filename().string());
    std::sort(out.begin(), out.end());
    return out;
  }

  static std::string temp_of(const std::string& p) {
    return p + ".tmp." + std::to_string(::getpid());
  }

  fs::path dir_;
};

using testing_support::expect_one_line_error;

TEST_F(AtomicFileTest, WriteFileAtomicWritesContentAndLeavesNoTemp) {
  const std::string p = path("out.txt");
  const std::string content("hello\0world\n", 12);  // binary-safe
  write_file_atomic(p, content);
  EXPECT_EQ(read(p), content);
  EXPECT_EQ(dir_entries(), std::vector<std::string>{"out.txt"});

  // Replacing an existing file, including with nothing.
  write_file_atomic(p, "second");
  EXPECT_EQ(read(p), "second");
  write_file_atomic(p, "");
  EXPECT_EQ(read(p), "");
  EXPECT_TRUE(fs::exists(p));
  EXPECT_EQ(dir_entries(), std::vector<std::string>{"out.txt"});
}

TEST_F(AtomicFileTest, WriterAppendsAndOnlyCommitPublishes) {
  const std::string p = path("out.bin");
  {
    AtomicFileWriter w(p);
    EXPECT_EQ(w.path(), p);
    w.write("abc", 3);
    w.write("", 0);
    w.write("def", 3);
    // Until commit only the temporary file exists.
    EXPECT_FALSE(fs::exists(p));
    EXPECT_TRUE(fs::exists(temp_of(p)));
    w.commit();
    EXPECT_EQ(read(p), "abcdef");
    EXPECT_FALSE(fs::exists(temp_of(p)));
    // A committed writer is spent.
    expect_one_line_error([&] { w.write("x", 1); }, {p, "already committed"});
    expect_one_line_error([&] { w.commit(); }, {p, "already committed"});
  }
  EXPECT_EQ(read(p), "abcdef");  // the destructor does not touch a committed file
  EXPECT_EQ(dir_entries(), std::vector<std::string>{"out.bin"});
}

TEST_F(AtomicFileTest, ExceptionBeforeCommitLeavesNothing) {
  const std::string p = path("new.txt");
  EXPECT_THROW(
      {
        AtomicFileWriter w(p);
        w.write("partial", 7);
        throw std::runtime_error("interrupted");
      },
      std::runtime_error);
  EXPECT_FALSE(fs::exists(p));
  EXPECT_TRUE(dir_entries().empty());
}

TEST_F(AtomicFileTest, ExceptionBeforeCommitLeavesExistingTargetUntouched) {
  const std::string p = path("kept.txt");
  write_file_atomic(p, "original");
  EXPECT_THROW(
      {
        AtomicFileWriter w(p);
        w.write("replacement", 11);
        throw std::runtime_error("interrupted");
      },
      std::runtime_error);
  EXPECT_EQ(read(p), "original");
  EXPECT_EQ(dir_entries(), std::vector<std::string>{"kept.txt"});
}

TEST_F(AtomicFileTest, UnwritableDirectoryGivesOneLineError) {
  // A directory that does not exist.
  const std::string missing = path("no_such_dir/out.txt");
  expect_one_line_error([&] { write_file_atomic(missing, "x"); }, {missing, "cannot create", "No such file"});
  expect_one_line_error([&] { AtomicFileWriter w(missing); }, {missing, "cannot create"});
  // Control characters in the path still give one line.
  expect_one_line_error([&] { write_file_atomic(path("no\nsuch/out.txt"), "x"); }, {"cannot create"});
  EXPECT_TRUE(dir_entries().empty());

  // A directory without write permission (root ignores permissions, so skip then).
  if (::geteuid() == 0) return;
  const fs::path ro = dir_ / "read_only";
  fs::create_directories(ro);
  fs::permissions(ro, fs::perms::owner_read | fs::perms::owner_exec);
  const std::string p = (ro / "out.txt").string();
  expect_one_line_error([&] { write_file_atomic(p, "x"); }, {p, "cannot create", "Permission denied"});
  fs::permissions(ro, fs::perms::owner_all);
  EXPECT_TRUE(fs::is_empty(ro));
}

}  // namespace

namespace {

// write_new_directory: the directory appears whole or not at all.
TEST(WriteNewDirectory, AppearsWholeOrNotAtAll) {
  const fs::path base = fs::temp_directory_path() / ("write_new_directory_" + std::to_string(::getpid()));
  fs::remove_all(base);
  fs::create_directories(base);
  const std::string out = (base / "out").string();
  auto leftovers = [&] {
    int n = 0;
    for (const auto& e : fs::directory_iterator(base)) n += e.path().filename().string().rfind(".out.tmp.", 0) == 0;
    return n;
  };
  // A failing fill leaves nothing: no output, no temporary.
  EXPECT_THROW(engine::io::write_new_directory(out, "--output",
                                               [](const fs::path& tmp) {
                                                 engine::io::write_file_atomic((tmp / "a").string(), "half");
                                                 throw engine::Error("fill failed");
                                               }),
               engine::Error);
  EXPECT_FALSE(fs::exists(out));
  EXPECT_EQ(leftovers(), 0);
  // A complete fill is renamed into place (over an empty directory too).
  fs::create_directories(out);
  engine::io::write_new_directory(out + "/", "--output", [](const fs::path& tmp) {
    engine::io::write_file_atomic((tmp / "a").string(), "whole");
  });
  std::ifstream in(fs::path(out) / "a");
  EXPECT_EQ(std::string(std::istreambuf_iterator<char>(in), {}), "whole");
  EXPECT_EQ(leftovers(), 0);
  // A non-empty directory is refused with one line naming the flag and the path.
  testing_support::expect_one_line_error(
      [&] { engine::io::write_new_directory(out, "--output", [](const fs::path&) {}); },
      {"--output", out, "not an empty directory"});
  fs::remove_all(base);
}

}  // namespace
