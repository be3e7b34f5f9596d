//! The benchmark chart (`docs/benchmarks.svg`): each scenario's ratio to its baseline as a
//! bar on a logarithmic axis, with the 1.0x line (as fast as the baseline) and each goal
//! marked; then the scale-out rates. Pure: rows in, SVG text out.
//!
//! Why a log axis: the ratios run from about 1.1x to 77x (pooled sessions against a
//! login per task); on a linear axis the 77x bar left the others a few pixels wide. On a
//! log axis 2x and 0.5x are equally far from 1.0x, which is how ratios should read.
//! [`from_report`] reads the rows back from a written `docs/BENCHMARKS.md`, so the chart
//! can be drawn again without running the bench (`ftp-pooler-bench --replot`).

/// One bar: a scenario's ratio to its baseline, and its goal if it has one.
#[derive(Debug, Clone, PartialEq)]
pub struct Bar {
    pub scenario: String,
    pub ratio: f64,
    pub goal: Option<f64>,
}

const WIDTH: f64 = 1100.0;
const BAR_H: f64 = 26.0;
const LEFT: f64 = 400.0;
/// Tick values of the ratio axis (those inside the axis' range are drawn).
const TICKS: [f64; 11] = [0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0];

/// The axis' range: from a bit below the smallest of 1.0, the ratios and the goals, to a
/// bit above the largest (log scale).
fn range(bars: &[Bar]) -> (f64, f64) {
    let values = bars
        .iter()
        .flat_map(|b| std::iter::once(b.ratio).chain(b.goal))
        .filter(|v| *v > 0.0);
    let (lo, hi) = values.fold((1.0_f64, 1.0_f64), |(lo, hi), v| (lo.min(v), hi.max(v)));
    (lo / 1.5, hi * 1.5)
}

/// The x coordinate of ratio `v`.
fn x_of(v: f64, (lo, hi): (f64, f64)) -> f64 {
    let v = v.clamp(lo, hi);
    LEFT + (WIDTH - LEFT - 60.0) * (v.ln() - lo.ln()) / (hi.ln() - lo.ln())
}

pub fn svg(bars: &[Bar], scale: &[(usize, f64)]) -> String {
    let r = range(bars);
    let top = 60.0;
    let bars_h = bars.len() as f64 * (BAR_H + 10.0);
    let h = top + bars_h + 40.0 + 60.0 + scale.len() as f64 * (BAR_H + 10.0) + 20.0;
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{WIDTH}\" height=\"{h}\" font-family=\"sans-serif\" font-size=\"13\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n<text x=\"10\" y=\"24\" font-size=\"16\" font-weight=\"bold\">ftp-pooler / baseline: ratio, log scale (right of 1.0x is faster; | = goal)</text>\n"
    );
    // Ticks and grid lines; 1.0x stands out.
    let axis_y = top + bars_h;
    for t in TICKS.iter().filter(|t| **t >= r.0 && **t <= r.1) {
        let x = x_of(*t, r);
        let (stroke, width, dash) = if *t == 1.0 {
            ("#333", 1.5, "")
        } else {
            ("#ccc", 1.0, " stroke-dasharray=\"3,3\"")
        };
        s.push_str(&format!(
            "<line x1=\"{x:.1}\" x2=\"{x:.1}\" y1=\"{}\" y2=\"{axis_y}\" stroke=\"{stroke}\" stroke-width=\"{width}\"{dash}/>\n<text x=\"{x:.1}\" y=\"{}\" text-anchor=\"middle\">{}x</text>\n",
            top - 20.0,
            axis_y + 16.0,
            fmt_tick(*t)
        ));
    }
    let mut y = top - 14.0;
    for b in bars {
        let met = b.goal.is_none_or(|g| b.ratio >= g);
        let color = if met { "#3a7d44" } else { "#c0392b" };
        let (x0, x1) = (x_of(1.0, r), x_of(b.ratio, r));
        s.push_str(&format!(
            "<text x=\"10\" y=\"{}\">{}</text>\n<rect x=\"{:.1}\" y=\"{y}\" width=\"{:.1}\" height=\"{BAR_H}\" fill=\"{color}\"/>\n<text x=\"{:.1}\" y=\"{}\">{:.2}x</text>\n",
            y + 17.0,
            xml(&b.scenario),
            x0.min(x1),
            (x1 - x0).abs().max(1.0),
            x0.max(x1) + 4.0,
            y + 17.0,
            b.ratio
        ));
        if let Some(g) = b.goal {
            s.push_str(&format!(
                "<line x1=\"{0:.1}\" x2=\"{0:.1}\" y1=\"{1}\" y2=\"{2}\" stroke=\"black\" stroke-width=\"2\"/>\n",
                x_of(g, r),
                y - 3.0,
                y + BAR_H + 3.0
            ));
        }
        y += BAR_H + 10.0;
    }
    y = axis_y + 50.0;
    s.push_str(&format!("<text x=\"10\" y=\"{y}\" font-size=\"16\" font-weight=\"bold\">Scale-out: files/s with 1-3 instances (6 partitions)</text>\n"));
    y += 14.0;
    let scale_max = scale.iter().map(|s| s.1).fold(1.0, f64::max) * 1.1;
    for (k, f) in scale {
        let w = (WIDTH - LEFT - 60.0) * f / scale_max;
        s.push_str(&format!(
            "<text x=\"10\" y=\"{}\">{k} instance(s)</text>\n<rect x=\"{LEFT}\" y=\"{y}\" width=\"{w:.1}\" height=\"{BAR_H}\" fill=\"#2e6da4\"/>\n<text x=\"{:.1}\" y=\"{}\">{f:.0} files/s</text>\n",
            y + 17.0,
            LEFT + w + 4.0,
            y + 17.0
        ));
        y += BAR_H + 10.0;
    }
    s.push_str("</svg>\n");
    s
}

fn fmt_tick(t: f64) -> String {
    if t < 1.0 {
        format!("{t}")
    } else {
        format!("{t:.0}")
    }
}

fn xml(t: &str) -> String {
    t.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// The bars and scale-out rates of a written report: its table rows
/// (`| scenario | ours | baseline | 1.18x | >= 1.0x: met |`) and its scale-out line
/// (`... : 1 instance(s): 3706 files/s, 2 instance(s): ...`).
pub fn from_report(md: &str) -> (Vec<Bar>, Vec<(usize, f64)>) {
    let mut bars = Vec::new();
    for line in md.lines().filter(|l| l.starts_with("| ")) {
        let cells: Vec<&str> = line.trim_matches('|').split('|').map(str::trim).collect();
        if cells.len() < 5 {
            continue;
        }
        let Some(ratio) = cells[3].strip_suffix('x').and_then(|r| r.parse().ok()) else {
            continue;
        };
        let goal = cells[4]
            .strip_prefix(">= ")
            .and_then(|g| g.split('x').next())
            .and_then(|g| g.parse().ok());
        bars.push(Bar {
            scenario: cells[0].to_string(),
            ratio,
            goal,
        });
    }
    let mut scale = Vec::new();
    if let Some(line) = md
        .lines()
        .find(|l| l.contains("Scale-out, one consumer group"))
    {
        for part in line
            .split(" instance(s): ")
            .skip(1)
            .zip(line.split(" instance(s): "))
        {
            let (after, before) = part;
            let k = before
                .rsplit([' ', '('])
                .next()
                .and_then(|k| k.parse().ok());
            let f = after.split_whitespace().next().and_then(|f| f.parse().ok());
            if let (Some(k), Some(f)) = (k, f) {
                scale.push((k, f));
            }
        }
    }
    (bars, scale)
}

#[cfg(test)]
mod tests {
    use super::*;

    const REPORT: &str = "\
| scenario | ftp-pooler | baseline | ratio | goal |
|---|---|---|---|---|
| 2000 x 4 KiB downloads, 10 sessions (files/s) | 3714 | lftp: 3344 | 1.18x | >= 1.0x: met |
| 1024 MiB upload (MB/s) | 1187 | curl -T: 380 | 2.48x | >= 0.9x: met |
| downloads, same guarantee (files/s) | 3714 | lftp: 2938 | 1.27x |  |
| pooled vs a login per task (files/s) | 3714 | connect-per-task: 48 | 77.53x | >= 5.0x: met |
- Scale-out, one consumer group on a 6-partition topic, all instances on this 2-core machine (2000 x 4 KiB downloads, 10 sessions each): 1 instance(s): 3706 files/s, 2 instance(s): 3851 files/s, 3 instance(s): 4551 files/s.
";

    #[test]
    fn a_report_reads_back_into_bars_and_rates() {
        let (bars, scale) = from_report(REPORT);
        assert_eq!(bars.len(), 4);
        assert_eq!(bars[0].ratio, 1.18);
        assert_eq!(bars[0].goal, Some(1.0));
        assert_eq!(bars[2].goal, None);
        assert_eq!(bars[3].ratio, 77.53);
        assert_eq!(scale, vec![(1, 3706.0), (2, 3851.0), (3, 4551.0)]);
    }

    #[test]
    fn the_log_axis_leaves_small_ratios_readable() {
        let (bars, _) = from_report(REPORT);
        let r = range(&bars);
        let one = x_of(1.0, r);
        // 1.18x is at least 18 px right of 1.0x though 77x is on the same axis; 1.4x and 1/1.4x
        // are as far from 1.0x.
        assert!(x_of(1.18, r) - one > 18.0, "{}", x_of(1.18, r) - one);
        assert!(((x_of(1.4, r) - one) - (one - x_of(1.0 / 1.4, r))).abs() < 0.01);
        let svg = svg(&bars, &[(1, 3706.0)]);
        assert!(svg.contains(">1x</text>") && svg.contains(">77.53x</text>"));
    }
}
