//! Drawing a chart: lines with bands or bars, marks, axes that name their units,
//! to PNG and SVG.

use super::*;
use plotters::coord::types::RangedCoordf64;

/// Extra marks on a chart: vertical lines at x (an SLO, say), horizontal lines at y (a
/// threshold), and whether the y axis holds log10 values (its ticks are then written
/// as powers of ten).
#[derive(Clone, Debug, Default)]
pub(super) struct Marks {
    pub(super) vertical: Vec<(String, f64)>,
    pub(super) horizontal: Vec<(String, f64)>,
    pub(super) log_y: bool,
}

/// One line of a chart: points (x, y) with an optional interval (low, high) each.
#[derive(Clone, Debug, PartialEq)]
pub struct Line {
    /// Legend label.
    pub label: String,
    /// (x, y, low, high), sorted by x.
    pub points: Vec<(f64, f64, f64, f64)>,
}

/// How a chart shows intervals.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Bands {
    None,
    /// Markers only, no line: points that are not a sequence (calibration evaluations).
    Points,
    Shaded,
    Bars,
}

pub(super) const SIZE: (u32, u32) = (960, 600);

/// Tableau 10: distinct, and every colour readable on white.
pub(super) const PALETTE: [RGBColor; 10] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
];

/// An axis label that stays distinct from its neighbours whatever the magnitude:
/// scientific notation for very small or large values, trimmed decimals otherwise.
pub(super) fn tick(v: &f64) -> String {
    let a = v.abs();
    if a == 0.0 {
        "0".into()
    } else if !(1e-2..1e5).contains(&a) {
        format!("{v:.2e}")
    } else {
        let text = format!("{v:.3}");
        text.trim_end_matches('0').trim_end_matches('.').to_string()
    }
}

/// An axis label for a column or metric name: words, with the unit its suffix names
/// (`ttft_p99_s` is "ttft p99 (s)", `energy_kwh` "energy (kWh)").
pub fn axis_label(name: &str) -> String {
    const UNITS: [(&str, &str); 11] = [
        ("_per_s", "per s"),
        ("_kwh", "kWh"),
        ("_usd", "USD"),
        ("_kg", "kg CO2e"),
        ("_kw", "kW"),
        ("_w", "W"),
        ("_j", "J"),
        ("_gb", "GB"),
        ("_ms", "ms"),
        ("_h", "h"),
        ("_s", "s"),
    ];
    for (suffix, unit) in UNITS {
        if let Some(stem) = name.strip_suffix(suffix).filter(|s| !s.is_empty()) {
            return format!("{} ({unit})", stem.replace(['_', '.'], " "));
        }
    }
    name.replace(['_', '.'], " ")
}

/// Lines whose values span more than two orders of magnitude, all above zero, are
/// drawn on a log10 axis (an interval reaching below zero is cut at a tenth of the
/// smallest value): on a linear axis the small values all sit on zero.
pub(super) fn log_if_wide(lines: &mut [Line]) -> bool {
    let means = || lines.iter().flat_map(|l| l.points.iter()).map(|p| p.1);
    let (lo, hi) = means().fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), x| (a.min(x), b.max(x)));
    if !(lo > 0.0 && hi / lo > 100.0) {
        return false;
    }
    let floor = lo / 10.0;
    for line in lines.iter_mut() {
        for p in &mut line.points {
            (p.1, p.2, p.3) = (p.1.log10(), p.2.max(floor).log10(), p.3.max(floor).log10());
        }
    }
    true
}

/// Whether every value of the lines is zero: such a chart says nothing.
pub(super) fn all_zero(lines: &[Line]) -> bool {
    lines.iter().flat_map(|l| l.points.iter()).all(|p| p.1 == 0.0 && p.2 == 0.0 && p.3 == 0.0)
}

pub(super) fn bounds(lines: &[Line]) -> Option<((f64, f64), (f64, f64))> {
    let pts = lines.iter().flat_map(|l| l.points.iter());
    let (mut x0, mut x1, mut y0, mut y1) = (f64::INFINITY, f64::NEG_INFINITY, f64::INFINITY, f64::NEG_INFINITY);
    for &(x, _, lo, hi) in pts {
        x0 = x0.min(x);
        x1 = x1.max(x);
        y0 = y0.min(lo);
        y1 = y1.max(hi);
    }
    if !(x0.is_finite() && y0.is_finite()) {
        return None;
    }
    let pad = |a: f64, b: f64| if b > a { (b - a) * 0.05 } else { a.abs().max(1.0) * 0.05 };
    let (px, py) = (pad(x0, x1), pad(y0, y1));
    Some(((x0 - px, x1 + px), (y0 - py, y1 + py)))
}

#[allow(clippy::too_many_arguments)]
pub(super) fn draw<DB: DrawingBackend>(
    root: DrawingArea<DB, Shift>,
    title: &str,
    x_label: &str,
    y_label: &str,
    lines: &[Line],
    bands: Bands,
    marks: &Marks,
) -> Result<(), String>
where
    DB::ErrorType: 'static,
{
    let ((x0, mut x1), (mut y0, mut y1)) = bounds(lines).ok_or("nothing to draw")?;
    for (_, x) in &marks.vertical {
        // Room for the mark's label to the right of its line.
        x1 = x1.max(*x * 1.15);
    }
    for (_, y) in &marks.horizontal {
        let pad = 0.05 * (y1 - y0).max(y.abs() * 0.1);
        (y0, y1) = (y0.min(y - pad), y1.max(y + pad));
    }
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 26))
        .margin(18)
        .x_label_area_size(64)
        .y_label_area_size(96)
        .build_cartesian_2d(x0..x1, y0..y1)
        .map_err(|e| e.to_string())?;
    let power_of_ten = |v: &f64| tick(&10f64.powf(*v));
    chart
        .configure_mesh()
        .x_desc(x_label)
        .y_desc(y_label)
        .x_label_formatter(&tick)
        .y_label_formatter(if marks.log_y { &power_of_ten } else { &tick })
        .label_style(("sans-serif", 18))
        .axis_desc_style(("sans-serif", 20))
        .draw()
        .map_err(|e| e.to_string())?;
    draw_marks(&mut chart, marks, (x0, x1), (y0, y1))?;
    draw_lines(&mut chart, lines, bands)?;
    if lines.len() > 1 || !lines[0].label.is_empty() {
        chart
            .configure_series_labels()
            .label_font(("sans-serif", 16))
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()
            .map_err(|e| e.to_string())?;
    }
    root.present().map_err(|e| e.to_string())
}

/// Each line in its colour, with its band, bars or markers, and its legend entry.
fn draw_lines<DB: DrawingBackend>(
    chart: &mut ChartContext<'_, DB, Cartesian2d<RangedCoordf64, RangedCoordf64>>,
    lines: &[Line],
    bands: Bands,
) -> Result<(), String>
where
    DB::ErrorType: 'static,
{
    for (i, line) in lines.iter().enumerate() {
        let color = PALETTE[i % PALETTE.len()].to_rgba();
        if bands == Bands::Shaded {
            let mut polygon: Vec<(f64, f64)> = line.points.iter().map(|p| (p.0, p.3)).collect();
            polygon.extend(line.points.iter().rev().map(|p| (p.0, p.2)));
            chart
                .draw_series(std::iter::once(Polygon::new(polygon, color.mix(0.2).filled())))
                .map_err(|e| e.to_string())?;
        }
        if bands == Bands::Bars {
            chart
                .draw_series(line.points.iter().map(|&(x, _, lo, hi)| {
                    ErrorBar::new_vertical(x, lo, (lo + hi) / 2.0, hi, color.stroke_width(2), 8)
                }))
                .map_err(|e| e.to_string())?;
        }
        if bands == Bands::Points {
            chart
                .draw_series(line.points.iter().map(|p| Circle::new((p.0, p.1), 4, color.filled())))
                .map_err(|e| e.to_string())?
                .label(line.label.clone())
                .legend(move |(x, y)| Circle::new((x + 9, y), 4, color.filled()));
            continue;
        }
        chart
            .draw_series(LineSeries::new(line.points.iter().map(|p| (p.0, p.1)), color.stroke_width(2)))
            .map_err(|e| e.to_string())?
            .label(line.label.clone())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(3)));
    }
    Ok(())
}

/// The marks' lines, each with its label: vertical ones labelled at the top,
/// horizontal ones at the left.
fn draw_marks<DB: DrawingBackend>(
    chart: &mut ChartContext<'_, DB, Cartesian2d<RangedCoordf64, RangedCoordf64>>,
    marks: &Marks,
    (x0, x1): (f64, f64),
    (y0, y1): (f64, f64),
) -> Result<(), String>
where
    DB::ErrorType: 'static,
{
    let vertical = marks.vertical.iter().map(|(label, x)| (label, [(*x, y0), (*x, y1)], (*x, y1)));
    let horizontal = marks.horizontal.iter().map(|(label, y)| (label, [(x0, *y), (x1, *y)], (x0, *y)));
    let grey = RGBColor(90, 90, 90);
    for (label, ends, at) in vertical.chain(horizontal) {
        chart
            .draw_series(std::iter::once(PathElement::new(ends.to_vec(), grey.stroke_width(2))))
            .map_err(|e| e.to_string())?;
        chart
            .draw_series(std::iter::once(Text::new(label.clone(), at, ("sans-serif", 16).into_font())))
            .map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// Plain lines (no intervals) as `<stem>.png` and `<stem>.svg` in `dir`: for charts
/// drawn outside a batch's plots (calibration's objective and distributions).
pub fn line_chart(
    dir: &Path,
    stem: &str,
    title: &str,
    x_label: &str,
    y_label: &str,
    lines: &[Line],
) -> Result<Vec<PathBuf>, PlotError> {
    chart(dir, stem, title, x_label, y_label, lines, Bands::None, &Marks::default())
}

/// Markers only (no lines) as `<stem>.png` and `<stem>.svg` in `dir`: for points that
/// are not a sequence, such as a calibration's evaluations against one parameter;
/// `horizontal` draws labelled lines across (a threshold, say).
pub fn scatter_chart(
    dir: &Path,
    stem: &str,
    title: &str,
    (x_label, y_label): (&str, &str),
    points: &[Line],
    horizontal: &[(String, f64)],
) -> Result<Vec<PathBuf>, PlotError> {
    let marks = Marks { horizontal: horizontal.to_vec(), ..Marks::default() };
    chart(dir, stem, title, x_label, y_label, points, Bands::Points, &marks)
}

/// Draws one chart as `<stem>.png` and `<stem>.svg` in `dir`, each written under a
/// temporary name and renamed into place.
#[allow(clippy::too_many_arguments)]
pub(super) fn chart(
    dir: &Path,
    stem: &str,
    title: &str,
    x_label: &str,
    y_label: &str,
    lines: &[Line],
    bands: Bands,
    marks: &Marks,
) -> Result<Vec<PathBuf>, PlotError> {
    let mut written = Vec::new();
    for ext in ["png", "svg"] {
        let path = dir.join(format!("{stem}.{ext}"));
        let tmp = dir.join(format!(".{stem}.tmp.{ext}"));
        let result = if ext == "png" {
            draw(BitMapBackend::new(&tmp, SIZE).into_drawing_area(), title, x_label, y_label, lines, bands, marks)
        } else {
            draw(SVGBackend::new(&tmp, SIZE).into_drawing_area(), title, x_label, y_label, lines, bands, marks)
        };
        result.map_err(|message| {
            let _ = fs::remove_file(&tmp);
            PlotError::Draw { path: path.clone(), message }
        })?;
        fs::rename(&tmp, &path).map_err(|error| PlotError::Io { path: path.clone(), error })?;
        written.push(path);
    }
    Ok(written)
}
