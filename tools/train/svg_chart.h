// Self-contained SVG line charts (no scripts, no external fonts, images or links) for
// train70b's plots.
//
// Data (x, y) maps linearly to the plot area: px = left + (x - x0) / (x1 - x0) * width,
// py = bottom - (v(y) - v(y0)) / (v(y1) - v(y0)) * height, with v = identity or log10 on a
// log axis. [x0, x1] x [y0, y1] is the axis domain: the finite data's range widened to
// "nice" tick values (1, 2, 5 x 10^k; powers of ten on a log axis), and widened around a
// single value so that one point still has a chart. A NaN or infinite y (or y <= 0 on a log
// axis) ends the line: each run of plottable points is its own <polyline>, and a run of
// one point is a <circle>. A run with more than two points per pixel column is reduced to
// the first, lowest, highest and last point of each column (min/max per column, in x
// order), so 100k steps draw at most 4 points per column and no spike is lost.
//
// The SVG carries the domain for tools that read it back: the plot area is
// <rect class="plot-area" x= y= width= height=>, and the root has data-x0, data-x1,
// data-y0, data-y1 and data-log-y; each series' elements carry data-series="NAME".
#pragma once
#include <string>
#include <vector>

namespace train {

struct ChartSeries {
  std::string name;            // legend text
  std::vector<double> x, y;    // same length; x ascending
  std::string color;           // any SVG colour, e.g. "#1f77b4"
  bool markers = false;        // a circle at every point (few points, e.g. evaluations)
};

struct ChartSpec {
  std::string title, x_label, y_label;
  bool log_y = false;
  int width = 760, height = 380;  // pixels of the whole image
  // A linear y axis that reaches down to 0 (quantities whose size matters, e.g. memory,
  // throughput): small wiggles are not blown up to the whole height.
  bool y_from_zero = false;
};

std::string render_line_chart(const ChartSpec& spec, const std::vector<ChartSeries>& series);

// Tick values covering [lo, hi] at 1, 2 or 5 x 10^k spacing, about `target` of them.
std::vector<double> nice_ticks(double lo, double hi, int target);
// A tick label: integers up to 10^7 as integers, others with 4 significant digits.
std::string format_tick(double value);

// Indices of the points to draw of x[begin, end) (ascending x) when `columns` pixel columns
// span [x0, x1]: every index when there are at most 2 points per column, else per column the
// first, the lowest y, the highest y and the last, in index order, without repeats.
std::vector<size_t> downsample_min_max(const std::vector<double>& x, const std::vector<double>& y,
                                       size_t begin, size_t end, double x0, double x1,
                                       int columns);

}  // namespace train
