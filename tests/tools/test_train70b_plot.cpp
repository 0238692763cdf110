// train70b's SVG charts (tools/train/svg_chart.h, plot.h), read back with an XML parser:
// every point of a series lands where the axis domain the chart states puts it, NaN makes
// a gap, one point still gets a chart, 100k points are cut to min/max per pixel column
// without losing a spike, and `train70b plot` reads a metrics file that is being written.
#include <gtest/gtest.h>
#include <tinyxml2.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "tests/support/process.h"
#include "tools/train/svg_chart.h"

namespace fs = std::filesystem;

namespace {

struct Point {
  double x, y;
};

// A chart read back: the plot area, the axis domain, and per series its polylines' points
// and its single-point circles.
struct ParsedChart {
  double left = 0, top = 0, width = 0, height = 0;
  double x0 = 0, x1 = 0, y0 = 0, y1 = 0;
  bool log_y = false;
  std::map<std::string, std::vector<std::vector<Point>>> lines;
  std::map<std::string, std::vector<Point>> dots;

  // Pixel -> data, inverting svg_chart.h's mapping.
  double data_x(double px) const { return x0 + (px - left) / width * (x1 - x0); }
  double data_y(double py) const {
    const double f = (top + height - py) / height;
    return log_y ? std::pow(10.0, std::log10(y0) + f * (std::log10(y1) - std::log10(y0))) : y0 + f * (y1 - y0);
  }
};

void collect(const tinyxml2::XMLElement* e, ParsedChart& c) {
  for (; e; e = e->NextSiblingElement()) {
    const std::string name = e->Name();
    const char* series = e->Attribute("data-series");
    const char* cls = e->Attribute("class");
    if (name == "rect" && cls && std::string(cls) == "plot-area") {
      c.left = e->DoubleAttribute("x"), c.top = e->DoubleAttribute("y");
      c.width = e->DoubleAttribute("width"), c.height = e->DoubleAttribute("height");
    } else if (name == "polyline" && series) {
      std::vector<Point> points;
      std::istringstream in(e->Attribute("points"));
      for (std::string pair; in >> pair;) {
        const size_t comma = pair.find(',');
        points.push_back({std::stod(pair.substr(0, comma)), std::stod(pair.substr(comma + 1))});
      }
      c.lines[series].push_back(points);
    } else if (name == "circle" && series && !cls) {
      c.dots[series].push_back({e->DoubleAttribute("cx"), e->DoubleAttribute("cy")});
    }
    collect(e->FirstChildElement(), c);
  }
}

ParsedChart parse_chart(const std::string& svg) {
  tinyxml2::XMLDocument doc;
  EXPECT_EQ(doc.Parse(svg.c_str(), svg.size()), tinyxml2::XML_SUCCESS) << doc.ErrorStr();
  ParsedChart c;
  const tinyxml2::XMLElement* root = doc.RootElement();
  if (!root) return c;
  EXPECT_STREQ(root->Name(), "svg");
  EXPECT_STREQ(root->Attribute("xmlns"), "http://www.w3.org/2000/svg");
  c.x0 = root->DoubleAttribute("data-x0"), c.x1 = root->DoubleAttribute("data-x1");
  c.y0 = root->DoubleAttribute("data-y0"), c.y1 = root->DoubleAttribute("data-y1");
  c.log_y = root->BoolAttribute("data-log-y");
  collect(root->FirstChildElement(), c);
  EXPECT_GT(c.width, 0);
  EXPECT_GT(c.height, 0);
  // Self-contained: nothing to run, fetch or link.
  for (const char* banned : {"<script", "href", "url(", "@import", "<image", "<foreignObject", "onload="})
    EXPECT_EQ(svg.find(banned), std::string::npos) << banned;
  return c;
}

std::string slurp(const fs::path& p) {
  std::ifstream in(p);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

// Coordinates are written with 2 decimals: half a hundredth of a pixel, in data units.
double pixel_rounding(double range, double pixels) { return 0.005 * range / pixels * 1.0001; }

}  // namespace

TEST(SvgChart, EveryPointMapsThroughTheStatedDomain) {
  train::ChartSeries s{"loss", {}, {}, "#123456"};
  for (int i = 1; i <= 50; ++i) s.x.push_back(i * 3), s.y.push_back(5 - std::log(double(i)));
  const ParsedChart c = parse_chart(train::render_line_chart({"Loss", "step", "loss"}, {s}));
  // The domain holds the data and starts and ends at ticks around it.
  EXPECT_LE(c.x0, 3);
  EXPECT_GE(c.x1, 150);
  EXPECT_LE(c.y0, *std::min_element(s.y.begin(), s.y.end()));
  EXPECT_GE(c.y1, 5);
  ASSERT_EQ(c.lines.at("loss").size(), 1u);
  const std::vector<Point>& p = c.lines.at("loss")[0];
  ASSERT_EQ(p.size(), 50u);
  for (size_t i = 0; i < p.size(); ++i) {
    EXPECT_NEAR(c.data_x(p[i].x), s.x[i], pixel_rounding(c.x1 - c.x0, c.width)) << i;
    EXPECT_NEAR(c.data_y(p[i].y), s.y[i], pixel_rounding(c.y1 - c.y0, c.height)) << i;
  }
}

// y_from_zero: memory around 158 MiB is drawn from 0, not stretched over 157.8..159.2.
TEST(SvgChart, YFromZeroReachesZeroAndPointsStillMap) {
  train::ChartSeries s{"host", {}, {}, "#123456"};
  for (int i = 1; i <= 20; ++i) s.x.push_back(i), s.y.push_back(158 + 0.05 * (i % 3));
  const ParsedChart stretched = parse_chart(train::render_line_chart({"Memory", "step", "MiB"}, {s}));
  EXPECT_GT(stretched.y0, 100);
  const ParsedChart c = parse_chart(
      train::render_line_chart({.title = "Memory", .x_label = "step", .y_label = "MiB", .y_from_zero = true}, {s}));
  EXPECT_EQ(c.y0, 0);
  EXPECT_GE(c.y1, 158.1);
  const std::vector<Point>& p = c.lines.at("host").at(0);
  ASSERT_EQ(p.size(), s.y.size());
  for (size_t i = 0; i < p.size(); ++i) EXPECT_NEAR(c.data_y(p[i].y), s.y[i], pixel_rounding(c.y1 - c.y0, c.height));
}

TEST(SvgChart, NonFiniteValuesAreGapsAndOnePointIsADot) {
  const double nan = std::nan("");
  train::ChartSeries s{"grad norm", {1, 2, 3, 4, 5, 6, 7}, {1, 2, nan, 4, INFINITY, 6, 7}, "red"};
  const ParsedChart c = parse_chart(train::render_line_chart({"g", "step", "norm"}, {s}));
  // Runs {1, 2}, {4} and {6, 7}: two lines and a dot.
  ASSERT_EQ(c.lines.at("grad norm").size(), 2u);
  EXPECT_EQ(c.lines.at("grad norm")[0].size(), 2u);
  EXPECT_EQ(c.lines.at("grad norm")[1].size(), 2u);
  ASSERT_EQ(c.dots.at("grad norm").size(), 1u);
  EXPECT_NEAR(c.data_y(c.dots.at("grad norm")[0].y), 4, pixel_rounding(c.y1 - c.y0, c.height));

  // One point: a dot inside a domain widened around it.
  const ParsedChart one = parse_chart(train::render_line_chart({"one", "step", "lr"}, {{"lr", {1}, {2e-4}, "blue"}}));
  ASSERT_EQ(one.dots.at("lr").size(), 1u);
  EXPECT_LT(one.x0, 1);
  EXPECT_GT(one.x1, 1);
  EXPECT_LT(one.y0, 2e-4);
  EXPECT_GT(one.y1, 2e-4);
  EXPECT_NEAR(one.data_y(one.dots.at("lr")[0].y), 2e-4, pixel_rounding(one.y1 - one.y0, one.height));

  // No data at all (a run that just started): axes and a note, no series.
  const std::string empty = train::render_line_chart({"none", "step", "loss"}, {{"loss", {}, {}, "blue"}});
  const ParsedChart none = parse_chart(empty);
  EXPECT_TRUE(none.lines.empty() && none.dots.empty());
  EXPECT_NE(empty.find("no data yet"), std::string::npos);
}

TEST(SvgChart, HundredThousandPointsKeepMinAndMaxPerColumn) {
  train::ChartSeries s{"tokens/s", {}, {}, "green"};
  const int n = 100000;
  for (int i = 1; i <= n; ++i) s.x.push_back(i), s.y.push_back(1000 + 10 * std::sin(i * 0.001));
  s.y[61234] = 5000;  // one slow... or fast step: a spike must survive
  s.y[71234] = 10;
  const train::ChartSpec spec{"t", "step", "tokens / s"};
  const ParsedChart c = parse_chart(train::render_line_chart(spec, {s}));
  ASSERT_EQ(c.lines.at("tokens/s").size(), 1u);
  const std::vector<Point>& p = c.lines.at("tokens/s")[0];
  EXPECT_LE(p.size(), 4 * static_cast<size_t>(c.width));
  EXPECT_GE(p.size(), 2 * static_cast<size_t>(c.width) - 2);
  double lo = INFINITY, hi = -INFINITY;
  for (size_t i = 0; i < p.size(); ++i) {
    lo = std::min(lo, c.data_y(p[i].y)), hi = std::max(hi, c.data_y(p[i].y));
    if (i > 0) {
      EXPECT_GE(p[i].x, p[i - 1].x) << i;  // x order kept
    }
  }
  EXPECT_NEAR(hi, 5000, pixel_rounding(c.y1 - c.y0, c.height));
  EXPECT_NEAR(lo, 10, pixel_rounding(c.y1 - c.y0, c.height));
  EXPECT_NEAR(c.data_x(p.front().x), 1, pixel_rounding(c.x1 - c.x0, c.width));
  EXPECT_NEAR(c.data_x(p.back().x), n, pixel_rounding(c.x1 - c.x0, c.width));

  // The reduction itself: first, lowest, highest, last of each column.
  const std::vector<double> x = {0, 0.1, 0.2, 0.3, 0.4, 0.5, 1.0, 1.1, 1.2, 1.3, 1.4};
  const std::vector<double> y = {5, 9, 1, 7, 3, 6, 2, 2, 8, 0, 4};
  EXPECT_EQ(train::downsample_min_max(x, y, 0, x.size(), 0, 2, 2),
            (std::vector<size_t>{0, 1, 2, 5, 6, 8, 9, 10}));
}

TEST(SvgChart, LogAxisTicksArePowersOfTen) {
  train::ChartSeries s{"loss", {1, 2, 3, 4}, {0.02, 0.5, 30, -1}, "black"};  // -1: not on a log axis
  const std::string svg = train::render_line_chart({"l", "step", "loss", true}, {s});
  const ParsedChart c = parse_chart(svg);
  EXPECT_TRUE(c.log_y);
  EXPECT_DOUBLE_EQ(c.y0, 0.01);
  EXPECT_DOUBLE_EQ(c.y1, 100);
  ASSERT_EQ(c.lines.at("loss").size(), 1u);
  const std::vector<Point>& p = c.lines.at("loss")[0];
  ASSERT_EQ(p.size(), 3u);
  for (size_t i = 0; i < 3; ++i) EXPECT_NEAR(c.data_y(p[i].y) / s.y[i], 1, 1e-3) << i;
  for (const char* tick : {">0.01<", ">0.1<", ">1<", ">10<", ">100<"})
    EXPECT_NE(svg.find(tick), std::string::npos) << tick;
  EXPECT_NE(svg.find("loss (log scale)"), std::string::npos);
}

TEST(SvgChart, NiceTicks) {
  EXPECT_EQ(train::nice_ticks(0, 1, 5), (std::vector<double>{0, 0.2, 0.4, 0.6000000000000001, 0.8, 1}));
  EXPECT_EQ(train::nice_ticks(3, 150, 6), (std::vector<double>{0, 50, 100, 150}));
  EXPECT_EQ(train::format_tick(20000), "20000");
  EXPECT_EQ(train::format_tick(2.5e-4), "0.00025");
}

class Train70bPlot : public testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("train70b_plot_" + std::to_string(::getpid()) + "_" +
                                        testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_ / "run");
  }
  void TearDown() override { fs::remove_all(dir_); }
  testing_support::RunResult plot(const std::string& args) {
    return testing_support::run_command(std::string(TRAIN70B_PATH) + " plot " + args);
  }
  fs::path dir_;
};

TEST_F(Train70bPlot, ReadsAPartialMetricsFileAsItIs) {
  std::ofstream m(dir_ / "run" / "metrics.jsonl.partial");
  m << R"({"event":"eval","when":"before training","step":0,"loss":3.5,"accuracy":0.1,"tokens":90})" "\n";
  for (int step = 1; step <= 30; ++step)
    m << R"({"event":"train","step":)" << step << R"(,"loss":)" << (step == 12 ? "null" : std::to_string(3.0 - step * 0.05))
      << R"(,"lr":0.0001,"grad_norm":0.5,"tokens_per_second":800,"host_memory_bytes":)" << (100 << 20) << "}\n";
  m << R"({"event":"eval","when":"step 30","step":30,"loss":1.9,"accuracy":0.4,"tokens":90})" "\n";
  m << R"({"event":"train","step":31,"lo)";  // the run is writing this line
  m.close();
  const testing_support::RunResult r = plot((dir_ / "run").string());
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_FALSE(fs::exists(dir_ / "run" / "plots" / "reward_accuracy.svg"));  // DPO runs only
  for (const char* f : {"loss.svg", "learning_rate.svg", "grad_norm.svg", "tokens_per_second.svg", "memory.svg"}) {
    EXPECT_TRUE(fs::exists(dir_ / "run" / "plots" / f)) << f;
    EXPECT_NE(r.out.find(f), std::string::npos) << r.out;
  }
  const ParsedChart loss = parse_chart(slurp(dir_ / "run" / "plots" / "loss.svg"));
  // Steps 1-11 and 13-30 (the null at step 12 is a gap; the partial step 31 is left out).
  ASSERT_EQ(loss.lines.at("train loss").size(), 2u);
  EXPECT_EQ(loss.lines.at("train loss")[0].size(), 11u);
  EXPECT_EQ(loss.lines.at("train loss")[1].size(), 18u);
  EXPECT_NEAR(loss.data_x(loss.lines.at("train loss")[1].back().x), 30, 0.01);
  ASSERT_EQ(loss.lines.at("held-out loss").size(), 1u);
  EXPECT_EQ(loss.lines.at("held-out loss")[0].size(), 2u);
  EXPECT_NEAR(loss.data_y(loss.lines.at("held-out loss")[0][1].y), 1.9, 0.01);
  // 100 MiB: the axis is in MiB (GiB from 1 GiB on).
  const std::string memory_svg = slurp(dir_ / "run" / "plots" / "memory.svg");
  const ParsedChart memory = parse_chart(memory_svg);
  EXPECT_NEAR(memory.data_y(memory.lines.at("host (RSS)")[0][0].y), 100,
              pixel_rounding(memory.y1 - memory.y0, memory.height));
  EXPECT_NE(memory_svg.find(">MiB<"), std::string::npos);

  // --output elsewhere; a complete metrics.jsonl wins over the partial file.
  const std::string partial = slurp(dir_ / "run" / "metrics.jsonl.partial");
  std::ofstream(dir_ / "run" / "metrics.jsonl") << partial.substr(0, partial.rfind('\n') + 1);
  const testing_support::RunResult r2 = plot((dir_ / "run").string() + " --log-loss --output " + (dir_ / "charts").string());
  ASSERT_EQ(r2.exit_code, 0) << r2.err;
  EXPECT_TRUE(parse_chart(slurp(dir_ / "charts" / "loss.svg")).log_y);
}

TEST_F(Train70bPlot, BadRunDirectoryOrLineIsOneLine) {
  for (const std::string& bad : {(dir_ / "nope").string(), (dir_ / "run").string()}) {
    const testing_support::RunResult r = plot(bad);
    EXPECT_EQ(r.exit_code, 1);
    EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
    EXPECT_EQ(r.err.rfind("train70b plot: " + bad + ": not a run directory", 0), 0u) << r.err;
  }
  std::ofstream(dir_ / "run" / "metrics.jsonl") << R"({"event":"train","step":1,"loss":1})" "\n" "garbage\n{}\n";
  const testing_support::RunResult r = plot((dir_ / "run").string());
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_EQ(r.err, "train70b plot: " + (dir_ / "run" / "metrics.jsonl").string() + ":2: not a JSON object\n");
  EXPECT_FALSE(fs::exists(dir_ / "run" / "plots"));
}
