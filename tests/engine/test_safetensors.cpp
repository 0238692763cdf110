// Tests for engine/io/safetensors: write/read round trips (single file and sharded
// index), the reader's validation of hand-made malformed files (each must fail with a
// one-line engine::Error naming the file and the problem), and the writer's atomicity.
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <initializer_list>
#include <map>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "engine/io/safetensors.h"
#include "tests/support/errors.h"

namespace {

namespace fs = std::filesystem;
using engine::DType;
using engine::Shape;
using engine::Tensor;
using engine::io::SafetensorsFile;
using engine::io::SafetensorsIndex;
using engine::io::write_safetensors;

class SafetensorsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    static std::atomic<int> counter{0};
    const auto* test = ::testing::UnitTest::GetInstance()->current_test_info();
    dir_ = fs::temp_directory_path() / ("safetensors_test_" + std::to_string(::getpid()) + "_" +
                                        std::to_string(counter++) + "_" + test->name());
    fs::create_directories(dir_);
  }
  void TearDown() override {
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }

  std::string path(const std::string& name) const { return (dir_ / name).string(); }

  static void write_bytes(const std::string& p, const std::string& bytes) {
    std::ofstream f(p, std::ios::binary | std::ios::trunc);
    f.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
    ASSERT_TRUE(f.good()) << p;
  }

  // A hand-made file: 8-byte little-endian `length` (the header's real size unless
  // given), the header text, then `data_bytes` bytes of data.
  std::string raw_file(const std::string& name, const std::string& header, size_t data_bytes,
                       std::optional<uint64_t> length = std::nullopt) {
    uint64_t n = length.value_or(header.size());
    std::string bytes(8, '\0');
    std::memcpy(bytes.data(), &n, 8);
    bytes += header;
    bytes += std::string(data_bytes, '\x5a');
    std::string p = path(name);
    write_bytes(p, bytes);
    return p;
  }

  std::vector<std::string> dir_entries() const {
    std::vector<std::string> out;
    for (const auto& e : fs::directory_iterator(dir_)) out.push_back(e.path().filename().string());
    std::sort(out.begin(), out.end());
    return out;
  }

  fs::path dir_;
};

using testing_support::expect_one_line_error;

void expect_open_error(const std::string& file, std::initializer_list<std::string> parts) {
  std::vector<std::string> all(parts);
  all.push_back(file);
  try {
    SafetensorsFile f(file);
  } catch (const engine::InputError& e) {  // the file is the user's
    std::string msg = e.what();
    EXPECT_EQ(msg.find('\n'), std::string::npos) << msg;
    for (const std::string& p : all)
      EXPECT_NE(msg.find(p), std::string::npos) << "'" << p << "' not in: " << msg;
    return;
  }
  ADD_FAILURE() << "opening " << file << " did not throw";
}

Tensor u8_tensor(const std::vector<uint8_t>& v, const Shape& shape) {
  Tensor t = Tensor::empty(shape, DType::U8);
  std::memcpy(t.raw_data(), v.data(), v.size());
  return t;
}

bool same_bytes(const Tensor& a, const Tensor& b) {
  return a.dtype() == b.dtype() && a.shape() == b.shape() &&
         std::memcmp(a.raw_data(), b.raw_data(), a.nbytes()) == 0;
}

TEST_F(SafetensorsTest, RoundTripDtypesAndMetadata) {
  const Tensor f32 = Tensor::from_floats({1.5f, -2.0f, 3.25f, 0.0f, 1e-8f, -7.0f}, {2, 3});
  const Tensor bf16 =
      Tensor::from_floats({1.0f, -0.5f, 256.0f, 3.0f}, {2, 1, 2}).to_dtype(DType::BF16);
  const Tensor i32 = Tensor::from_ints({-1, 0, 2147483647}, {3});
  const Tensor u8 = u8_tensor({0, 1, 127, 128, 255}, {5});
  const Tensor scalar = Tensor::from_floats({42.0f}, {});
  const Tensor empty = Tensor::empty({0, 4}, DType::F32);
  const std::string p = path("model.safetensors");
  write_safetensors(p,
                    {{"w.f32", f32},
                     {"w.bf16", bf16},
                     {"w.i32", i32},
                     {"w.u8", u8},
                     {"scalar", scalar},
                     {"empty", empty}},
                    {{"format", "pt"}});

  EXPECT_EQ(dir_entries(), std::vector<std::string>{"model.safetensors"});  // no temp file left
  std::ifstream in(p, std::ios::binary);
  uint64_t n = 0;
  in.read(reinterpret_cast<char*>(&n), 8);
  EXPECT_EQ(n % 8, 0u) << "header not padded to 8 bytes";
  EXPECT_EQ(in.get(), '{');

  SafetensorsFile f(p);
  EXPECT_EQ(f.header_size(), n);
  EXPECT_EQ(f.names(),
            (std::vector<std::string>{"w.f32", "w.bf16", "w.i32", "w.u8", "scalar", "empty"}));
  EXPECT_EQ(f.metadata(), (std::map<std::string, std::string>{{"format", "pt"}}));
  EXPECT_EQ(f.info("w.bf16").dtype_name, "BF16");
  EXPECT_EQ(f.info("w.bf16").shape, (std::vector<int64_t>{2, 1, 2}));
  EXPECT_EQ(f.info("w.bf16").begin, 24u);
  EXPECT_EQ(f.info("w.bf16").end, 32u);
  EXPECT_EQ(f.info("w.u8").dtype, DType::U8);
  EXPECT_EQ(f.info("scalar").shape.size(), 0u);
  EXPECT_TRUE(f.has("empty"));
  EXPECT_FALSE(f.has("missing"));
  EXPECT_TRUE(same_bytes(f.load("w.f32"), f32));
  EXPECT_TRUE(same_bytes(f.load("w.bf16"), bf16));
  EXPECT_TRUE(same_bytes(f.load("w.i32"), i32));
  EXPECT_TRUE(same_bytes(f.load("w.u8"), u8));
  EXPECT_EQ(f.load("scalar").item(), 42.0f);
  EXPECT_EQ(f.load("empty").shape(), Shape({0, 4}));
  std::vector<uint8_t> raw(5);
  f.read("w.u8", raw);
  EXPECT_EQ(raw, (std::vector<uint8_t>{0, 1, 127, 128, 255}));
  expect_one_line_error([&] { f.read("w.u8", std::span<uint8_t>(raw.data(), 4)); },
                        {p, "'w.u8'"});
  expect_one_line_error([&] { f.info("missing"); }, {p, "no such tensor", "'missing'"});

  // Moving keeps the file open.
  SafetensorsFile moved = std::move(f);
  EXPECT_TRUE(same_bytes(moved.load("w.i32"), i32));

  // The single-file model form of SafetensorsIndex: by file and by directory.
  for (const std::string& where : {p, dir_.string()}) {
    SafetensorsIndex idx(where);
    EXPECT_EQ(idx.num_files(), 1u);
    EXPECT_EQ(idx.names().size(), 6u);
    EXPECT_TRUE(same_bytes(idx.load("w.f32"), f32));
  }
}

TEST_F(SafetensorsTest, OverwriteReplacesFileAtomically) {
  const std::string p = path("a.safetensors");
  write_safetensors(p, {{"x", Tensor::from_floats({1, 2}, {2})}});
  write_safetensors(p, {{"y", Tensor::from_floats({3}, {1})}});
  SafetensorsFile f(p);
  EXPECT_EQ(f.names(), std::vector<std::string>{"y"});
  EXPECT_TRUE(f.metadata().empty());
  EXPECT_EQ(dir_entries(), std::vector<std::string>{"a.safetensors"});
}

TEST_F(SafetensorsTest, ShardedIndexRoundTrip) {
  const Tensor a = Tensor::from_floats({1, 2, 3, 4}, {2, 2});
  const Tensor b = Tensor::from_ints({7, 8}, {2});
  const Tensor c = Tensor::from_floats({5, 6}, {1, 2}).to_dtype(DType::BF16);
  write_safetensors(path("model-00001-of-00002.safetensors"), {{"a", a}, {"b", b}},
                    {{"format", "pt"}});
  write_safetensors(path("model-00002-of-00002.safetensors"), {{"c", c}}, {{"format", "pt"}});
  write_bytes(path("model.safetensors.index.json"),
              R"({"metadata": {"total_size": 28}, "weight_map": {
                   "c": "model-00002-of-00002.safetensors",
                   "a": "model-00001-of-00002.safetensors",
                   "b": "model-00001-of-00002.safetensors"}})");

  for (const std::string& where : {dir_.string(), path("model.safetensors.index.json")}) {
    SafetensorsIndex idx(where);
    EXPECT_EQ(idx.path(), path("model.safetensors.index.json"));
    EXPECT_EQ(idx.num_files(), 2u);
    EXPECT_EQ(idx.names(), (std::vector<std::string>{"c", "a", "b"}));  // index order
    EXPECT_TRUE(idx.has("b"));
    EXPECT_FALSE(idx.has("d"));
    EXPECT_EQ(idx.info("c").dtype_name, "BF16");
    EXPECT_EQ(idx.file("c").path(), path("model-00002-of-00002.safetensors"));
    EXPECT_TRUE(same_bytes(idx.load("a"), a));
    EXPECT_TRUE(same_bytes(idx.load("b"), b));
    EXPECT_TRUE(same_bytes(idx.load("c"), c));
    expect_one_line_error([&] { idx.load("d"); }, {idx.path(), "no such tensor", "'d'"});
  }
}

TEST_F(SafetensorsTest, IndexErrors) {
  write_safetensors(path("s1.safetensors"), {{"a", Tensor::from_floats({1}, {1})}});
  const std::string idx = path("model.safetensors.index.json");

  write_bytes(idx, R"({"weight_map": {"a": "s1.safetensors", "b": "missing.safetensors"}})");
  expect_one_line_error([&] { SafetensorsIndex x(dir_.string()); },
               {idx, "'b'", path("missing.safetensors"), "cannot open"});

  write_bytes(idx, R"({"weight_map": {"a": "s1.safetensors", "z": "s1.safetensors"}})");
  expect_one_line_error([&] { SafetensorsIndex x(dir_.string()); },
               {idx, "not in its shard 's1.safetensors'", "'z'"});

  write_bytes(idx, R"({"weight_map": {"a": "s1.safetensors", "a": "s1.safetensors"}})");
  expect_one_line_error([&] { SafetensorsIndex x(idx); }, {idx, "duplicate tensor name", "'a'"});

  write_bytes(idx, R"({"weight_map": {"a": "../s1.safetensors"}})");
  expect_one_line_error([&] { SafetensorsIndex x(idx); }, {idx, "inside the model directory", "'a'"});

  write_bytes(idx, R"({"weight_map": {"a": 3}})");
  expect_one_line_error([&] { SafetensorsIndex x(idx); }, {idx, "not a file name", "'a'"});

  write_bytes(idx, R"({"weights": {}})");
  expect_one_line_error([&] { SafetensorsIndex x(idx); }, {idx, "weight_map"});

  write_bytes(idx, "{\"weight_map\": {\n\"a\": }");
  expect_one_line_error([&] { SafetensorsIndex x(idx); }, {idx, "invalid JSON at byte"});

  fs::remove(idx);
  fs::remove(path("s1.safetensors"));
  expect_one_line_error([&] { SafetensorsIndex x(dir_.string()); }, {dir_.string(), "model.safetensors"});
}

TEST_F(SafetensorsTest, MissingFile) {
  const std::string p = path("nope.safetensors");
  expect_open_error(p, {"cannot open", "No such file"});
  expect_open_error(dir_.string(), {"cannot open", "not a regular file"});
}

// A valid two-tensor header used as the base of several malformed variants.
const char* const kTwo = R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                         R"("b":{"dtype":"U8","shape":[4],"data_offsets":[8,12]}})";

TEST_F(SafetensorsTest, HandMadeValidFileOpens) {
  // Checks the test helper itself: the base header with exact data is accepted.
  SafetensorsFile f(raw_file("ok.safetensors", std::string(kTwo) + "   ", 12));
  EXPECT_EQ(f.names(), (std::vector<std::string>{"a", "b"}));
  EXPECT_EQ(f.load("b").to_floats(), (std::vector<float>{90, 90, 90, 90}));
}

TEST_F(SafetensorsTest, RejectsTruncatedFiles) {
  std::string p = path("tiny.safetensors");
  write_bytes(p, "abc");
  expect_open_error(p, {"truncated", "3 bytes"});
  expect_open_error(raw_file("cut.safetensors", kTwo, 11), {"truncated", "'b'"});
}

// A file cut short by another process after it was opened: an error naming the file and
// the tensor, not SIGBUS (which a copy out of a mapping of the old size would raise).
TEST_F(SafetensorsTest, FileTruncatedWhileOpenIsAnError) {
  const std::string p = path("shrinks.safetensors");
  std::vector<float> big(1 << 16, 1.5f);  // 256 KiB: the lost pages lie beyond the new end
  write_safetensors(p, {{"a", Tensor::from_floats({1, 2}, {2})},
                        {"b", Tensor::from_floats(big, {static_cast<int64_t>(big.size())})}});
  SafetensorsFile f(p);
  EXPECT_EQ(f.load("a").to_floats(), (std::vector<float>{1, 2}));
  fs::resize_file(p, 8 + f.header_size() + 8 + 1000);
  EXPECT_EQ(f.load("a").to_floats(), (std::vector<float>{1, 2}));  // still inside the file
  expect_one_line_error([&] { f.load("b"); }, {p, "truncated while open", "'b'", "bytes now"});
}

// A FIFO where a model file belongs: refused at once (opening it would wait for a writer).
TEST_F(SafetensorsTest, RefusesFifoWithoutBlocking) {
  const std::string p = path("model.safetensors");
  ASSERT_EQ(::mkfifo(p.c_str(), 0600), 0);
  expect_open_error(p, {"not a regular file"});
  expect_one_line_error([&] { SafetensorsIndex x(dir_.string()); }, {p, "not a regular file"});
  fs::remove(p);
  const std::string idx = path("model.safetensors.index.json");
  ASSERT_EQ(::mkfifo(idx.c_str(), 0600), 0);
  expect_one_line_error([&] { SafetensorsIndex x(dir_.string()); }, {idx, "not a regular file"});
}

// Numbers the JSON parser cannot hold (1e400 overflows a double) are one line naming the
// file and the key, like every other header error.
TEST_F(SafetensorsTest, RejectsOutOfRangeNumbers) {
  expect_open_error(raw_file("big.safetensors",
                             R"({"a":{"dtype":"U8","shape":[1e400],"data_offsets":[0,1]}})", 1),
                    {"invalid JSON in 'a.shape'", "1e400"});
  expect_open_error(raw_file("bigoff.safetensors",
                             R"({"a":{"dtype":"U8","shape":[1],"data_offsets":[0,-1e999]}})", 1),
                    {"invalid JSON in 'a.data_offsets'"});
  write_safetensors(path("s1.safetensors"), {{"a", Tensor::from_floats({1}, {1})}});
  const std::string idx = path("model.safetensors.index.json");
  write_bytes(idx, R"({"metadata": {"total_size": 1e400}, "weight_map": {"a": "s1.safetensors"}})");
  expect_one_line_error([&] { SafetensorsIndex x(idx); },
                        {idx, "invalid JSON in 'metadata.total_size'"});
}

TEST_F(SafetensorsTest, RejectsBadHeaderLength) {
  expect_open_error(raw_file("long.safetensors", kTwo, 12, 100'000),
                    {"header length 100000", "past the end"});
  expect_open_error(raw_file("huge.safetensors", kTwo, 12, 100'000'001),
                    {"header length 100000001", "100 MB"});
  expect_open_error(raw_file("max.safetensors", kTwo, 12, ~uint64_t{0}), {"100 MB"});
}

TEST_F(SafetensorsTest, RejectsInvalidJson) {
  expect_open_error(raw_file("bad.safetensors", "{\"a\":{\"dtype\":\"F32\",", 0),
                    {"header", "invalid JSON at byte"});
  expect_open_error(raw_file("junk.safetensors", "{\"a\": nope}", 0),
                    {"header", "invalid JSON at byte 7"});
  expect_open_error(raw_file("utf8.safetensors", "{\"\xff\xfe\": 1}", 0), {"invalid JSON"});
  expect_open_error(raw_file("trail.safetensors", "{} {}", 0), {"invalid JSON"});
  expect_open_error(raw_file("nul.safetensors", std::string("{}\0\0", 4), 0),
                    {"invalid JSON at byte 2", "NUL"});
  expect_open_error(raw_file("nul2.safetensors", std::string("{}\0junk", 7), 0),
                    {"invalid JSON at byte 2"});
}

TEST_F(SafetensorsTest, RejectsNonObjectHeader) {
  expect_open_error(raw_file("arr.safetensors", "[1, 2]", 0), {"not a JSON object"});
  expect_open_error(raw_file("str.safetensors", "\"x\"", 0), {"not a JSON object"});
  expect_open_error(raw_file("entry.safetensors", R"({"a": [1]})", 0), {"not an object", "'a'"});
}

TEST_F(SafetensorsTest, RejectsDuplicateNames) {
  expect_open_error(raw_file("dup.safetensors",
                             R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},)"
                             R"("a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})",
                             8),
                    {"duplicate tensor name", "'a'"});
  expect_open_error(
      raw_file("dupkey.safetensors",
               R"({"a":{"dtype":"F32","dtype":"U8","shape":[1],"data_offsets":[0,4]}})", 4),
      {"duplicate key 'dtype'", "'a'"});
}

TEST_F(SafetensorsTest, ErrorsStayOneLineWithOddNames) {
  // "\n" inside a JSON key is a real newline in the tensor name.
  expect_open_error(raw_file("newline.safetensors",
                             R"({"a\nb":{"dtype":"F32","shape":[1],"data_offsets":[0,8]}})", 8),
                    {"needs 4", "'a?b'"});
}

TEST_F(SafetensorsTest, RejectsBadOffsets) {
  expect_open_error(raw_file("overlap.safetensors",
                             R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                             R"("b":{"dtype":"U8","shape":[4],"data_offsets":[4,8]}})",
                             8),
                    {"overlap", "'b'"});
  expect_open_error(raw_file("gap.safetensors",
                             R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                             R"("b":{"dtype":"U8","shape":[4],"data_offsets":[10,14]}})",
                             14),
                    {"gap of 2 bytes", "'b'"});
  expect_open_error(raw_file("start.safetensors",
                             R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})", 12),
                    {"starts at offset 4, not 0", "'a'"});
  expect_open_error(raw_file("backwards.safetensors",
                             R"({"a":{"dtype":"U8","shape":[0],"data_offsets":[4,0]}})", 4),
                    {"before begin", "'a'"});
  expect_open_error(
      raw_file("neg.safetensors", R"({"a":{"dtype":"U8","shape":[1],"data_offsets":[-1,0]}})", 1),
      {"data_offsets", "'a'"});
  expect_open_error(raw_file("three.safetensors",
                             R"({"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1,2]}})", 1),
                    {"data_offsets", "'a'"});
}

TEST_F(SafetensorsTest, RejectsWrongByteSize) {
  expect_open_error(raw_file("size.safetensors",
                             R"({"a":{"dtype":"BF16","shape":[2,3],"data_offsets":[0,8]}})", 8),
                    {"span 8 bytes", "needs 12", "'a'"});
}

TEST_F(SafetensorsTest, RejectsUnknownDtypeAndMissingFields) {
  expect_open_error(
      raw_file("dtype.safetensors", R"({"a":{"dtype":"F12","shape":[1],"data_offsets":[0,4]}})", 4),
      {"unknown dtype 'F12'", "'a'"});
  expect_open_error(
      raw_file("nodtype.safetensors", R"({"a":{"shape":[1],"data_offsets":[0,4]}})", 4),
      {"dtype", "'a'"});
  expect_open_error(
      raw_file("noshape.safetensors", R"({"a":{"dtype":"F32","data_offsets":[0,4]}})", 4),
      {"shape", "'a'"});
  expect_open_error(raw_file("extra.safetensors",
                             R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4],"x":1}})", 4),
                    {"unexpected key 'x'", "'a'"});
}

TEST_F(SafetensorsTest, RejectsTrailingBytes) {
  expect_open_error(raw_file("trailing.safetensors", kTwo, 15), {"3 trailing bytes"});
}

TEST_F(SafetensorsTest, RejectsBadShapes) {
  expect_open_error(raw_file("negdim.safetensors",
                             R"({"a":{"dtype":"F32","shape":[2,-1],"data_offsets":[0,4]}})", 4),
                    {"negative dimension -1", "'a'"});
  expect_open_error(raw_file("floatdim.safetensors",
                             R"({"a":{"dtype":"F32","shape":[1.5],"data_offsets":[0,4]}})", 4),
                    {"not a dimension", "'a'"});
  // numel fits in 64 bits but numel * 4 bytes does not.
  expect_open_error(
      raw_file("bytes_overflow.safetensors",
               R"({"a":{"dtype":"F32","shape":[4611686018427387904],"data_offsets":[0,0]}})", 0),
      {"overflow", "'a'"});
  // numel itself overflows.
  expect_open_error(
      raw_file("numel_overflow.safetensors",
               R"({"a":{"dtype":"U8","shape":[4294967296,4294967296],"data_offsets":[0,0]}})", 0),
      {"overflow", "'a'"});
}

TEST_F(SafetensorsTest, MetadataMustBeStringMap) {
  expect_open_error(raw_file("meta.safetensors", R"({"__metadata__":{"format":1}})", 0),
                    {"__metadata__", "'format'"});
  expect_open_error(raw_file("meta2.safetensors", R"({"__metadata__":[1]})", 0), {"__metadata__"});
  SafetensorsFile f(raw_file("meta3.safetensors", R"({"__metadata__":{"k":"v"}})", 0));
  EXPECT_EQ(f.metadata().at("k"), "v");
  EXPECT_TRUE(f.names().empty());
}

TEST_F(SafetensorsTest, LoadRejectsUnsupportedDtypeAndRank) {
  SafetensorsFile f(raw_file("i64.safetensors",
                             R"({"a":{"dtype":"I64","shape":[1],"data_offsets":[0,8]},)"
                             R"("b":{"dtype":"U8","shape":[1,1,1,1,2],"data_offsets":[8,10]}})",
                             10));
  EXPECT_EQ(f.info("a").dtype_name, "I64");
  EXPECT_FALSE(f.info("a").dtype.has_value());
  EXPECT_EQ(f.info("a").element_size, 8u);
  std::vector<uint8_t> raw(8);
  f.read("a", raw);  // the bytes of a dtype the engine lacks are still readable
  EXPECT_EQ(raw, std::vector<uint8_t>(8, 0x5a));
  expect_one_line_error([&] { f.load("a"); }, {f.path(), "I64 is not supported", "'a'"});
  expect_one_line_error([&] { f.load("b"); }, {f.path(), "rank 5", "'b'"});
}

TEST_F(SafetensorsTest, WriterRejectsDuplicatesWithoutWriting) {
  const std::string p = path("dup.safetensors");
  const Tensor t = Tensor::from_floats({1}, {1});
  expect_one_line_error(
      [&] {
        write_safetensors(p, {{"x", t}, {"y", t}, {"x", t}});
      },
      {p, "duplicate tensor name", "'x'"});
  EXPECT_TRUE(dir_entries().empty());

  // A failed write leaves an existing file untouched.
  write_safetensors(p, {{"old", t}});
  expect_one_line_error([&] { write_safetensors(p, {{"x", t}, {"x", t}}); }, {p, "duplicate"});
  expect_one_line_error([&] { write_safetensors(p, {{"__metadata__", t}}); }, {p, "reserved"});
  expect_one_line_error([&] { write_safetensors(p, {{"u", Tensor()}}); }, {p, "undefined", "'u'"});
  EXPECT_EQ(SafetensorsFile(p).names(), std::vector<std::string>{"old"});
  EXPECT_EQ(dir_entries(), std::vector<std::string>{"dup.safetensors"});
}

TEST_F(SafetensorsTest, WriterReportsUnwritableDirectory) {
  const std::string p = path("no_such_dir/out.safetensors");
  expect_one_line_error(
      [&] {
        write_safetensors(p, {{"x", Tensor::from_floats({1}, {1})}});
      },
      {p, "cannot create", "No such file"});
  EXPECT_TRUE(dir_entries().empty());
}

}  // namespace
