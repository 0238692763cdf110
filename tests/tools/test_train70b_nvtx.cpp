// The NVTX ranges users see in Nsight Systems, checked without a GPU or Nsight: one CPU
// train70b step runs with the recorder of tests/nvtx_injection attached through
// NVTX_INJECTION64_PATH, and the recorded ranges must form the tree docs/profiling.md
// describes: step > data, forward > layer N > op, backward > ... recompute > layer N > op
// (gradient checkpointing), optimizer; one domain, "qlora"; the training thread named.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <vector>

namespace fs = std::filesystem;

namespace {

struct Range {
  std::string name;
  std::vector<Range> children;

  const Range* child(const std::string& n) const {
    for (const Range& c : children)
      if (c.name == n) return &c;
    return nullptr;
  }
  bool has_child(const std::string& n) const { return child(n) != nullptr; }
  // The first range named `n` at any depth below this one, depth first.
  const Range* find(const std::string& n) const {
    for (const Range& c : children) {
      if (c.name == n) return &c;
      if (const Range* r = c.find(n)) return r;
    }
    return nullptr;
  }
};

// What the recorder wrote, rebuilt: each thread's ranges as a forest.
struct Recording {
  std::vector<std::string> domains;             // names, in creation order
  std::set<std::string> push_domains;           // domain ids that ranges went to
  std::map<std::string, std::string> thread_names;  // tid -> name
  std::map<std::string, std::vector<Range>> roots;  // tid -> top-level ranges
  std::vector<std::string> problems;            // unbalanced pops, ranges left open
};

Recording parse(std::istream& in) {
  Recording rec;
  std::map<std::string, std::vector<Range*>> open;  // tid -> stack of open ranges
  for (std::string line; std::getline(in, line);) {
    std::istringstream s(line);
    std::string kind, a, b;
    s >> kind >> a;
    if (kind == "domain") {
      std::getline(s >> std::ws, b);
      rec.domains.push_back(b);
    } else if (kind == "thread") {
      std::getline(s >> std::ws, b);
      rec.thread_names[a] = b;
    } else if (kind == "push") {
      std::string name;
      s >> b;
      std::getline(s >> std::ws, name);
      rec.push_domains.insert(b);
      std::vector<Range*>& stack = open[a];
      std::vector<Range>& siblings = stack.empty() ? rec.roots[a] : stack.back()->children;
      siblings.push_back({name, {}});
      // Stable: a push moves only `siblings`, which are all closed (not on the stack).
      stack.push_back(&siblings.back());
    } else if (kind == "pop") {
      if (open[a].empty()) rec.problems.push_back("pop without a push on thread " + a);
      else open[a].pop_back();
    }
  }
  for (const auto& [tid, stack] : open)
    for (const Range* r : stack) rec.problems.push_back("range '" + r->name + "' never closed");
  return rec;
}

// The tree to `depth` levels, runs of same-named siblings as "name xN", for messages.
void render(const Range& r, int depth, int indent, std::ostream& out) {
  out << std::string(indent * 2, ' ') << r.name << "\n";
  if (depth == 0) return;
  for (size_t i = 0; i < r.children.size();) {
    size_t j = i;
    while (j < r.children.size() && r.children[j].name == r.children[i].name) ++j;
    if (j - i > 1 && r.children[i].children.empty()) {
      out << std::string((indent + 1) * 2, ' ') << r.children[i].name << " x" << (j - i) << "\n";
      i = j;
    } else {
      render(r.children[i++], depth - 1, indent + 1, out);
    }
  }
}

std::string text(const Range& r, int depth) {
  std::ostringstream out;
  render(r, depth, 0, out);
  return out.str();
}

// A decoder layer's forward ranges: one per op of the layer.
void expect_layer_ops(const Range& layer, const std::string& where) {
  for (const char* op : {"rms_norm", "lora_linear", "rope", "attention", "swiglu", "add"})
    EXPECT_TRUE(layer.has_child(op)) << where << " > " << layer.name << " lacks op " << op << "\n"
                                     << text(layer, 1);
}

}  // namespace

TEST(Train70bNvtx, OneCpuStepShowsTheDocumentedRangeTree) {
#ifndef NVTX_INJECTION_PATH
  GTEST_SKIP() << "this build has no NVTX ranges (no CUDA toolkit headers found, or "
                  "-DENGINE_NVTX=OFF), so there is nothing to record";
#else
  const fs::path dir = fs::temp_directory_path() / ("train70b_nvtx_" + std::to_string(::getpid()));
  fs::remove_all(dir);
  fs::create_directories(dir);
  {
    std::ofstream data(dir / "data.jsonl");
    for (int i = 0; i < 10; ++i) data << "{\"text\": \"sample " << i << ": the quick brown fox\"}\n";
  }
  const fs::path record = dir / "nvtx.txt";
  // The tiny preset has 2 layers; one step of one micro-batch; checkpointing is the default.
  const std::string cmd = "NVTX_INJECTION64_PATH=" + std::string(NVTX_INJECTION_PATH) +
                          " NVTX_RECORD_PATH=" + record.string() + " " + TRAIN70B_PATH +
                          " --model tiny --device cpu --max-steps 1 --batch-size 2 --lora-r 4"
                          " --dataset " + (dir / "data.jsonl").string() +
                          " --output " + (dir / "out").string() + " >" + (dir / "log").string() +
                          " 2>&1";
  const int status = std::system(cmd.c_str());
  std::ifstream log_file(dir / "log");
  const std::string log((std::istreambuf_iterator<char>(log_file)), std::istreambuf_iterator<char>());
  ASSERT_EQ(status, 0) << log;
  std::ifstream in(record);
  ASSERT_TRUE(in.good()) << "the recorder wrote no " << record << ": NVTX did not load it\n" << log;
  const Recording rec = parse(in);
  fs::remove_all(dir);

  EXPECT_TRUE(rec.problems.empty()) << (rec.problems.empty() ? "" : rec.problems.front());
  // One domain, and every range in it (none in NVTX's unnamed default domain, id 0).
  ASSERT_EQ(rec.domains, std::vector<std::string>{"qlora"});
  EXPECT_EQ(rec.push_domains, std::set<std::string>{"1"});

  // All ranges come from the one training thread, and it has a name.
  ASSERT_EQ(rec.roots.size(), 1u);
  const auto& [tid, roots] = *rec.roots.begin();
  ASSERT_TRUE(rec.thread_names.count(tid)) << "the training thread " << tid << " is not named";
  EXPECT_EQ(rec.thread_names.at(tid), "train70b");

  // Top level: evaluation before, the one step, evaluation after.
  std::vector<std::string> top;
  for (const Range& r : roots) top.push_back(r.name);
  ASSERT_EQ(top, (std::vector<std::string>{"evaluate", "step", "evaluate"}));
  const Range& step = roots[1];
  const std::string tree = text(step, 3);

  // The step's phases, in order.
  std::vector<std::string> phases;
  for (const Range& r : step.children) phases.push_back(r.name);
  EXPECT_EQ(phases, (std::vector<std::string>{"data", "forward", "backward", "optimizer"})) << tree;

  // step > forward > layer N > op, for every layer, then the fused loss.
  const Range* forward = step.child("forward");
  ASSERT_NE(forward, nullptr) << tree;
  for (const char* layer : {"layer 0", "layer 1"}) {
    const Range* l = forward->child(layer);
    ASSERT_NE(l, nullptr) << "step > forward lacks " << layer << "\n" << tree;
    expect_layer_ops(*l, "step > forward");
  }
  EXPECT_TRUE(forward->has_child("embedding")) << tree;
  EXPECT_TRUE(forward->has_child("lm_head_cross_entropy")) << tree;

  // step > backward > checkpoint > recompute > layer N > op: each checkpointed layer
  // re-runs its forward, then back-propagates through it (nested backward).
  const Range* backward = step.child("backward");
  ASSERT_NE(backward, nullptr) << tree;
  EXPECT_TRUE(backward->has_child("lm_head_cross_entropy_backward")) << text(*backward, 1);
  int recomputed = 0;
  for (const Range& node : backward->children) {
    if (node.name != "checkpoint") continue;
    const Range* recompute = node.child("recompute");
    ASSERT_NE(recompute, nullptr) << text(node, 2);
    ASSERT_EQ(recompute->children.size(), 1u) << text(*recompute, 1);
    const Range& layer = recompute->children[0];
    EXPECT_EQ(layer.name, "layer " + std::to_string(1 - recomputed)) << "layers recompute last first";
    expect_layer_ops(layer, "step > backward > checkpoint > recompute");
    const Range* inner = node.child("backward");
    ASSERT_NE(inner, nullptr) << text(node, 2);
    EXPECT_TRUE(inner->has_child("attention_backward")) << text(*inner, 1);
    EXPECT_TRUE(inner->has_child("lora_linear_backward")) << text(*inner, 1);
    ++recomputed;
  }
  EXPECT_EQ(recomputed, 2) << text(*backward, 2);
  EXPECT_NE(step.child("optimizer"), nullptr) << tree;

  // The shape of one step, for whoever reads the log (docs/profiling.md shows it too).
  std::cout << "recorded NVTX tree of one step (to depth 3):\n" << tree;
#endif
}
