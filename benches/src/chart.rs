//! A grouped bar chart of ratios, as SVG: one group per benchmark, one bar
//! per system, a logarithmic axis (ratios from 1.05x to 30x side by side),
//! the native line at 1x and each group's target as a mark.

use std::fmt::Write as _;

pub struct Group {
    pub label: String,
    /// One ratio per series; NaN where there is none.
    pub values: Vec<f64>,
    /// The goal for the first series.
    pub target: Option<f64>,
}

const COLORS: [&str; 4] = ["#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd"];
const WIDTH: f64 = 960.0;
const HEIGHT: f64 = 520.0;
const LEFT: f64 = 80.0;
const RIGHT: f64 = 30.0;
const TOP: f64 = 70.0;
const BOTTOM: f64 = 60.0;

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// The chart as an SVG document.
pub fn ratio_bars(title: &str, series: &[&str], groups: &[Group]) -> String {
    let finite = groups
        .iter()
        .flat_map(|g| g.values.iter().copied().chain(g.target))
        .filter(|v| v.is_finite() && *v > 0.0);
    let (lo, hi) = finite.fold((1.0f64, 1.0f64), |(lo, hi), v| (lo.min(v), hi.max(v)));
    // Whole decades, with room above the tallest bar for its label.
    let lo = 10f64.powf((lo * 0.9).log10().floor());
    let hi = 10f64.powf((hi * 1.3).log10().ceil());
    let plot_h = HEIGHT - TOP - BOTTOM;
    let plot_w = WIDTH - LEFT - RIGHT;
    let y = |v: f64| TOP + plot_h * (1.0 - (v.log10() - lo.log10()) / (hi.log10() - lo.log10()));

    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif" font-size="13">"#
    );
    let _ = writeln!(s, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="{}" y="28" font-size="17" text-anchor="middle">{}</text>"#,
        WIDTH / 2.0,
        escape(title)
    );
    // The axis: gridlines at 1, 2, 5 times each power of ten.
    let mut decade = lo;
    while decade < hi * 1.001 {
        for m in [1.0, 2.0, 5.0] {
            let v = decade * m;
            if v > hi * 1.001 {
                break;
            }
            let yy = y(v);
            let _ = writeln!(
                s,
                r##"<line x1="{LEFT}" x2="{}" y1="{yy:.1}" y2="{yy:.1}" stroke="#ddd"/><text x="{}" y="{:.1}" text-anchor="end">{}x</text>"##,
                WIDTH - RIGHT,
                LEFT - 8.0,
                yy + 4.0,
                v
            );
        }
        decade *= 10.0;
    }
    let _ = writeln!(
        s,
        r#"<text transform="translate(22 {}) rotate(-90)" text-anchor="middle">time / native time (log scale)</text>"#,
        TOP + plot_h / 2.0
    );
    // Bars.
    let group_w = plot_w / groups.len().max(1) as f64;
    let bar_w = group_w * 0.7 / series.len().max(1) as f64;
    for (gi, g) in groups.iter().enumerate() {
        let x0 = LEFT + gi as f64 * group_w + group_w * 0.15;
        for (si, v) in g.values.iter().enumerate() {
            if !v.is_finite() || *v <= 0.0 {
                continue;
            }
            let x = x0 + si as f64 * bar_w;
            let top = y(*v);
            let _ = writeln!(
                s,
                r#"<rect x="{x:.1}" y="{top:.1}" width="{:.1}" height="{:.1}" fill="{}"><title>{} {}: {v:.2}x</title></rect>"#,
                bar_w - 2.0,
                y(lo) - top,
                COLORS[si % COLORS.len()],
                escape(series[si]),
                escape(&g.label)
            );
            let _ = writeln!(
                s,
                r#"<text x="{:.1}" y="{:.1}" text-anchor="middle" font-size="12">{v:.2}x</text>"#,
                x + bar_w / 2.0 - 1.0,
                top - 5.0
            );
        }
        if let Some(t) = g.target.filter(|t| t.is_finite() && *t > 0.0) {
            let yy = y(t);
            let _ = writeln!(
                s,
                r#"<line x1="{:.1}" x2="{:.1}" y1="{yy:.1}" y2="{yy:.1}" stroke="black" stroke-width="3" stroke-dasharray="6 3"><title>target {t}x</title></line>"#,
                x0 - 4.0,
                x0 + bar_w + 2.0
            );
        }
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{}" text-anchor="middle" font-size="14">{}</text>"#,
            LEFT + gi as f64 * group_w + group_w / 2.0,
            HEIGHT - BOTTOM + 22.0,
            escape(&g.label)
        );
    }
    // Native speed, and the axes.
    let one = y(1.0);
    let _ = writeln!(
        s,
        r#"<line x1="{LEFT}" x2="{}" y1="{one:.1}" y2="{one:.1}" stroke="black" stroke-width="1.5"/>"#,
        WIDTH - RIGHT
    );
    let _ = writeln!(
        s,
        r#"<line x1="{LEFT}" x2="{LEFT}" y1="{TOP}" y2="{}" stroke="black"/>"#,
        y(lo)
    );
    // Legend.
    let mut lx = LEFT + 10.0;
    let ly = TOP - 22.0;
    for (si, name) in series.iter().enumerate() {
        let _ = writeln!(
            s,
            r#"<rect x="{lx}" y="{}" width="14" height="14" fill="{}"/><text x="{}" y="{}">{}</text>"#,
            ly - 11.0,
            COLORS[si % COLORS.len()],
            lx + 20.0,
            ly,
            escape(name)
        );
        lx += 30.0 + 8.0 * name.len() as f64;
    }
    let _ = writeln!(
        s,
        r#"<line x1="{lx}" x2="{}" y1="{}" y2="{}" stroke="black" stroke-width="3" stroke-dasharray="6 3"/><text x="{}" y="{ly}">{} target</text>"#,
        lx + 24.0,
        ly - 4.0,
        ly - 4.0,
        lx + 30.0,
        escape(series.first().copied().unwrap_or(""))
    );
    lx += 130.0;
    let _ = writeln!(
        s,
        r#"<line x1="{lx}" x2="{}" y1="{}" y2="{}" stroke="black" stroke-width="1.5"/><text x="{}" y="{ly}">native = 1x</text>"#,
        lx + 24.0,
        ly - 4.0,
        ly - 4.0,
        lx + 30.0
    );
    s.push_str("</svg>\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bars_grow_with_the_ratio_and_every_value_is_labelled() {
        let groups = vec![
            Group {
                label: "fib".into(),
                values: vec![2.5, 7.0],
                target: Some(2.0),
            },
            Group {
                label: "memsweep".into(),
                values: vec![1.2, f64::NAN],
                target: Some(1.1),
            },
        ];
        let svg = ratio_bars("t", &["bt86", "qemu-tcg"], &groups);
        for label in [
            "2.50x", "7.00x", "1.20x", "fib", "memsweep", "bt86", "qemu-tcg",
        ] {
            assert!(svg.contains(label), "{label} missing");
        }
        // A missing value draws no bar: three bars (plus 2 legend swatches
        // and the background).
        assert_eq!(svg.matches("<rect").count(), 3 + 2 + 1);
        let height = |title: &str| {
            let at = svg.find(title).unwrap();
            let rect = &svg[svg[..at].rfind("<rect").unwrap()..at];
            let h = rect.split("height=\"").nth(1).unwrap();
            h[..h.find('"').unwrap()].parse::<f64>().unwrap()
        };
        assert!(height("qemu-tcg fib") > height("bt86 fib"));
        assert!(height("bt86 fib") > height("bt86 memsweep"));
    }
}
