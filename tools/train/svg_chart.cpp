#include "tools/train/svg_chart.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>

namespace train {

namespace {

std::string num(double v) {  // a coordinate
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.2f", v);
  return buf;
}

std::string exact(double v) {  // a value read back by tools
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.17g", v);
  return buf;
}

std::string escape_xml(const std::string& s) {
  std::string out;
  for (char c : s) {
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&quot;"; break;
      case '\'': out += "&apos;"; break;
      default: out += c;
    }
  }
  return out;
}

struct Axis {
  double lo = 0, hi = 1;  // domain
  bool log = false;
  std::vector<double> ticks;
  double value(double v) const { return log ? std::log10(v) : v; }
  double fraction(double v) const { return (value(v) - value(lo)) / (value(hi) - value(lo)); }
};

bool plottable(double y, bool log_y) { return std::isfinite(y) && (!log_y || y > 0); }

// A linear axis over [lo, hi] (finite, lo <= hi), widened to its outer ticks.
Axis linear_axis(double lo, double hi) {
  if (lo == hi) {
    const double pad = lo == 0 ? 1 : std::abs(lo) * 0.5;
    lo -= pad;
    hi += pad;
  }
  Axis a;
  a.ticks = nice_ticks(lo, hi, 6);
  a.lo = std::min(lo, a.ticks.front());
  a.hi = std::max(hi, a.ticks.back());
  return a;
}

// A log axis over [lo, hi] (0 < lo <= hi): whole decades, with 2 and 5 when there are few.
Axis log_axis(double lo, double hi) {
  Axis a;
  a.log = true;
  int first = static_cast<int>(std::floor(std::log10(lo)));
  int last = static_cast<int>(std::ceil(std::log10(hi)));
  if (last == first) ++last;
  a.lo = std::pow(10.0, first);
  a.hi = std::pow(10.0, last);
  const bool few = last - first <= 2;
  for (int e = first; e <= last; ++e)
    for (double m : {1.0, 2.0, 5.0}) {
      if (m != 1 && (!few || e == last)) continue;
      a.ticks.push_back(m * std::pow(10.0, e));
    }
  return a;
}

void text(std::string& svg, double x, double y, const std::string& anchor, const std::string& s,
          const std::string& extra = "") {
  svg += "<text x=\"" + num(x) + "\" y=\"" + num(y) + "\" text-anchor=\"" + anchor + "\"" + extra + ">" +
         escape_xml(s) + "</text>\n";
}

}  // namespace

std::vector<double> nice_ticks(double lo, double hi, int target) {
  if (!(hi > lo) || target < 1) return {lo};
  const double raw = (hi - lo) / target;
  const double magnitude = std::pow(10.0, std::floor(std::log10(raw)));
  double step = 10 * magnitude;
  for (double m : {1.0, 2.0, 5.0})
    if (m * magnitude >= raw) {
      step = m * magnitude;
      break;
    }
  const double first = std::floor(lo / step), last = std::ceil(hi / step);
  std::vector<double> ticks;
  for (double i = first; i <= last; ++i) ticks.push_back(i * step == 0 ? 0 : i * step);
  return ticks;
}

std::string format_tick(double v) {
  char buf[32];
  if (v == std::round(v) && std::abs(v) < 1e7) std::snprintf(buf, sizeof buf, "%.0f", v);
  else std::snprintf(buf, sizeof buf, "%.4g", v);
  return buf;
}

std::vector<size_t> downsample_min_max(const std::vector<double>& x, const std::vector<double>& y,
                                       size_t begin, size_t end, double x0, double x1, int columns) {
  std::vector<size_t> keep;
  if (end <= begin) return keep;
  if (columns < 1 || end - begin <= 2 * static_cast<size_t>(columns) || !(x1 > x0)) {
    for (size_t i = begin; i < end; ++i) keep.push_back(i);
    return keep;
  }
  auto column = [&](size_t i) {
    const double c = std::floor((x[i] - x0) / (x1 - x0) * columns);
    return static_cast<int>(std::clamp(c, 0.0, double(columns - 1)));
  };
  for (size_t first = begin; first < end;) {
    const int c = column(first);
    size_t last = first, lowest = first, highest = first;
    while (last + 1 < end && column(last + 1) == c) {
      ++last;
      if (y[last] < y[lowest]) lowest = last;
      if (y[last] > y[highest]) highest = last;
    }
    size_t picks[] = {first, lowest, highest, last};
    std::sort(std::begin(picks), std::end(picks));
    for (size_t p : picks)
      if (keep.empty() || keep.back() != p) keep.push_back(p);
    first = last + 1;
  }
  return keep;
}

std::string render_line_chart(const ChartSpec& spec, const std::vector<ChartSeries>& series) {
  const double left = 78, right = 24, top = 58, bottom = 54;
  const double plot_w = spec.width - left - right, plot_h = spec.height - top - bottom;
  const double inf = std::numeric_limits<double>::infinity();
  double x_lo = inf, x_hi = -inf, y_lo = inf, y_hi = -inf;
  for (const ChartSeries& s : series)
    for (size_t i = 0; i < s.x.size() && i < s.y.size(); ++i)
      if (std::isfinite(s.x[i]) && plottable(s.y[i], spec.log_y)) {
        x_lo = std::min(x_lo, s.x[i]), x_hi = std::max(x_hi, s.x[i]);
        y_lo = std::min(y_lo, s.y[i]), y_hi = std::max(y_hi, s.y[i]);
      }
  const bool empty = !(x_lo <= x_hi);
  if (spec.y_from_zero && !spec.log_y) y_lo = std::min(y_lo, 0.0), y_hi = std::max(y_hi, 0.0);
  const Axis ax = empty ? linear_axis(0, 1) : linear_axis(x_lo, x_hi);
  const Axis ay = empty ? linear_axis(0, 1) : spec.log_y ? log_axis(y_lo, y_hi) : linear_axis(y_lo, y_hi);
  auto px = [&](double x) { return left + ax.fraction(x) * plot_w; };
  auto py = [&](double y) { return top + plot_h - ay.fraction(y) * plot_h; };

  std::string svg = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n";
  svg += "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" + std::to_string(spec.width) + "\" height=\"" +
         std::to_string(spec.height) + "\" viewBox=\"0 0 " + std::to_string(spec.width) + " " +
         std::to_string(spec.height) + "\" font-family=\"sans-serif\" font-size=\"12\" data-x0=\"" +
         exact(ax.lo) + "\" data-x1=\"" + exact(ax.hi) + "\" data-y0=\"" + exact(ay.lo) + "\" data-y1=\"" +
         exact(ay.hi) + "\" data-log-y=\"" + (ay.log ? "true" : "false") + "\">\n";
  svg += "<title>" + escape_xml(spec.title) + "</title>\n";
  svg += "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n";
  text(svg, left, 22, "start", spec.title, " font-size=\"15\" font-weight=\"bold\"");
  svg += "<rect class=\"plot-area\" x=\"" + num(left) + "\" y=\"" + num(top) + "\" width=\"" + num(plot_w) +
         "\" height=\"" + num(plot_h) + "\" fill=\"none\" stroke=\"#444\"/>\n";
  // Grid lines and tick labels.
  svg += "<g stroke=\"#e3e3e3\">\n";
  for (double t : ax.ticks)
    if (t >= ax.lo && t <= ax.hi)
      svg += "<line x1=\"" + num(px(t)) + "\" y1=\"" + num(top) + "\" x2=\"" + num(px(t)) + "\" y2=\"" +
             num(top + plot_h) + "\"/>\n";
  for (double t : ay.ticks)
    if (t >= ay.lo && t <= ay.hi)
      svg += "<line x1=\"" + num(left) + "\" y1=\"" + num(py(t)) + "\" x2=\"" + num(left + plot_w) + "\" y2=\"" +
             num(py(t)) + "\"/>\n";
  svg += "</g>\n<g class=\"ticks\" fill=\"#333\">\n";
  for (double t : ax.ticks)
    if (t >= ax.lo && t <= ax.hi) text(svg, px(t), top + plot_h + 17, "middle", format_tick(t));
  for (double t : ay.ticks)
    if (t >= ay.lo && t <= ay.hi) text(svg, left - 6, py(t) + 4, "end", format_tick(t));
  svg += "</g>\n";
  text(svg, left + plot_w / 2, spec.height - 10, "middle", spec.x_label);
  text(svg, 16, top + plot_h / 2, "middle", spec.y_label + (ay.log ? " (log scale)" : ""),
       " transform=\"rotate(-90 16 " + num(top + plot_h / 2) + ")\"");
  if (empty) text(svg, left + plot_w / 2, top + plot_h / 2, "middle", "no data yet", " fill=\"#888\"");

  // Series: one polyline per run of plottable points, min/max per pixel column.
  for (const ChartSeries& s : series) {
    const std::string attrs = " data-series=\"" + escape_xml(s.name) + "\"";
    const size_t n = std::min(s.x.size(), s.y.size());
    for (size_t begin = 0; begin < n;) {
      if (!std::isfinite(s.x[begin]) || !plottable(s.y[begin], spec.log_y)) {
        ++begin;
        continue;
      }
      size_t end = begin;
      while (end < n && std::isfinite(s.x[end]) && plottable(s.y[end], spec.log_y)) ++end;
      const std::vector<size_t> keep =
          downsample_min_max(s.x, s.y, begin, end, ax.lo, ax.hi, static_cast<int>(plot_w));
      if (keep.size() == 1) {
        svg += "<circle" + attrs + " cx=\"" + num(px(s.x[keep[0]])) + "\" cy=\"" + num(py(s.y[keep[0]])) +
               "\" r=\"3\" fill=\"" + s.color + "\"/>\n";
      } else {
        svg += "<polyline" + attrs + " fill=\"none\" stroke=\"" + s.color +
               "\" stroke-width=\"1.5\" stroke-linejoin=\"round\" points=\"";
        for (size_t k = 0; k < keep.size(); ++k) {
          if (k > 0) svg += ' ';
          svg += num(px(s.x[keep[k]])) + "," + num(py(s.y[keep[k]]));
        }
        svg += "\"/>\n";
        if (s.markers)
          for (size_t i : keep)
            svg += "<circle" + attrs + " class=\"marker\" cx=\"" + num(px(s.x[i])) + "\" cy=\"" +
                   num(py(s.y[i])) + "\" r=\"3\" fill=\"" + s.color + "\"/>\n";
      }
      begin = end;
    }
  }
  // Legend, in the top margin from the right edge of the plot leftwards.
  double x = left + plot_w;
  for (auto it = series.rbegin(); it != series.rend(); ++it) {
    x -= 7.0 * it->name.size() + 34;
    svg += "<g class=\"legend\"><line x1=\"" + num(x) + "\" y1=\"" + num(top - 14) + "\" x2=\"" + num(x + 20) +
           "\" y2=\"" + num(top - 14) + "\" stroke=\"" + it->color + "\" stroke-width=\"3\"/>";
    text(svg, x + 25, top - 10, "start", it->name);
    svg += "</g>\n";
  }
  svg += "</svg>\n";
  return svg;
}

}  // namespace train
