//! The overview's charts: inline SVG bars with an axis and values.

use super::*;

/// A bar chart of `(label, value)` as inline SVG at its own size (text of 12 px, never scaled
/// down: a narrow screen scrolls the chart's frame sideways, not the page): a value axis
/// (zero, half, the top, with its unit), a date under every seventh bar, each day's value
/// above its bar when it has one, and on hover.
pub(super) fn bars(points: &[(String, f64)], unit: &str) -> String {
    let top = points.iter().map(|p| p.1).fold(0.0, f64::max);
    let max = nice_ceiling(top);
    let (w, h, gap, left, above) = (26.0, 150.0, 6.0, 64.0, 18.0);
    let width = left + points.len() as f64 * (w + gap);
    let height = h + above + 24.0;
    let mut svg = format!(
        "<div class=\"chart-frame\" tabindex=\"0\"><svg class=\"chart\" role=\"img\" width=\"{width}\" \
         height=\"{height}\" viewBox=\"0 0 {width} {height}\" aria-label=\"{} per day, \
         last {} days, top of scale {} {}\">",
        escape(unit),
        points.len(),
        fmt_value(max),
        escape(unit)
    );
    for frac in [0.0, 0.5, 1.0] {
        let y = above + h - frac * h;
        let _ = write!(
            svg,
            "<line class=\"axis\" x1=\"{left}\" x2=\"{width}\" y1=\"{y}\" y2=\"{y}\"></line>\
             <text class=\"tick\" x=\"{}\" y=\"{}\" text-anchor=\"end\">{}{}</text>",
            left - 6.0,
            y + 4.0,
            fmt_value(max * frac),
            if frac == 1.0 {
                format!(" {}", escape(unit))
            } else {
                String::new()
            }
        );
    }
    for (i, (label, v)) in points.iter().enumerate() {
        let bh = (v / max * h).max(if *v > 0.0 { 1.0 } else { 0.0 });
        let x = left + i as f64 * (w + gap);
        let _ = write!(
            svg,
            "<rect x=\"{x}\" y=\"{}\" width=\"{w}\" height=\"{bh}\"><title>{} {v:.2} {}</title></rect>",
            above + h - bh,
            escape(label),
            escape(unit)
        );
        if *v > 0.0 {
            let _ = write!(
                svg,
                "<text class=\"value\" x=\"{}\" y=\"{}\" text-anchor=\"middle\">{}</text>",
                x + w / 2.0,
                above + h - bh - 4.0,
                fmt_value(*v)
            );
        }
        let last = i + 1 == points.len();
        if (i % 7 == 0 && i + 3 < points.len()) || last {
            // The last date ends at its bar's right edge, inside the chart.
            let (at, anchor) = if last { (x + w, "end") } else { (x, "start") };
            let _ = write!(
                svg,
                "<text x=\"{at}\" y=\"{}\" text-anchor=\"{anchor}\">{}</text>",
                above + h + 18.0,
                escape(label.get(5..).unwrap_or(label))
            );
        }
    }
    svg.push_str("</svg></div>");
    svg
}

/// The chart's top: 1, 2 or 5 times a power of ten, at least `v` (and at least 1).
pub(super) fn nice_ceiling(v: f64) -> f64 {
    let mut step = 1.0;
    loop {
        for m in [1.0, 2.0, 5.0] {
            if m * step >= v {
                return m * step;
            }
        }
        step *= 10.0;
    }
}

/// A chart value: whole numbers plainly, others with one decimal.
pub(super) fn fmt_value(v: f64) -> String {
    if (v - v.round()).abs() < 0.05 {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}
