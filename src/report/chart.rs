//! The report's charts as inline SVG, drawn with `plotters` into a string
//! (`SVGBackend::with_string`): no font files (the SVG names a generic
//! sans-serif family and the browser draws the text), no scripts. Each
//! chart has a `viewBox`, so the page scales it to the screen's width.

use plotters::prelude::*;

/// The bars' colour (the page's accent).
const BAR: RGBColor = RGBColor(0x1f, 0x6f, 0xb2);
/// Axis text size, in plotters' units (the SVG gets size / 1.24).
const FONT: u32 = 18;

/// Vertical bars, one per label, the axis labelled every `label_every` bars.
pub fn columns(labels: &[String], values: &[u64], label_every: usize, size: (u32, u32)) -> String {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, size).into_drawing_area();
        let _ = draw_columns(&root, labels, values, label_every.max(1));
        let _ = root.present();
    }
    svg
}

fn draw_columns(
    root: &DrawingArea<SVGBackend<'_>, plotters::coord::Shift>,
    labels: &[String],
    values: &[u64],
    label_every: usize,
) -> Result<(), DrawingAreaErrorKind<std::io::Error>> {
    root.fill(&WHITE)?;
    // A segmented 0..k has k + 1 segments (its end included): n bars are 0..n - 1.
    let n = values.len().max(2) as u32;
    let top = top_of(values);
    let mut chart = ChartBuilder::on(root)
        .margin(8)
        .x_label_area_size(30)
        .y_label_area_size(40)
        .build_cartesian_2d((0..n - 1).into_segmented(), 0..top)?;
    let label = |v: &SegmentValue<u32>| match v {
        SegmentValue::CenterOf(i) if (*i as usize).is_multiple_of(label_every) => {
            labels.get(*i as usize).cloned().unwrap_or_default()
        }
        _ => String::new(),
    };
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(values.len() + 1)
        .x_label_formatter(&label)
        .y_labels(y_ticks(top))
        .y_label_formatter(&|v| v.to_string())
        .label_style(("sans-serif", FONT))
        .light_line_style(WHITE)
        .draw()?;
    // Empty bars are left out (plotters would draw a zero-height rect).
    chart.draw_series(
        Histogram::vertical(&chart)
            .style(BAR.filled())
            .margin(2)
            .data(values.iter().enumerate().filter(|(_, v)| **v > 0).map(|(i, v)| (i as u32, *v))),
    )?;
    Ok(())
}

/// Horizontal bars, one per label, top to bottom (the funnel).
pub fn rows(labels: &[String], values: &[u64], width: u32) -> String {
    let height = 30 + 34 * values.len().max(1) as u32;
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (width, height)).into_drawing_area();
        let _ = draw_rows(&root, labels, values);
        let _ = root.present();
    }
    svg
}

fn draw_rows(
    root: &DrawingArea<SVGBackend<'_>, plotters::coord::Shift>,
    labels: &[String],
    values: &[u64],
) -> Result<(), DrawingAreaErrorKind<std::io::Error>> {
    root.fill(&WHITE)?;
    // A segmented 0..k has k + 1 segments (its end included): n bars are 0..n - 1.
    let n = values.len().max(2) as u32;
    let top = top_of(values);
    let longest = labels.iter().map(|l| l.len()).max().unwrap_or(4) as u32;
    let mut chart = ChartBuilder::on(root)
        .margin(8)
        .x_label_area_size(24)
        .y_label_area_size((longest * 9).clamp(40, 170))
        .build_cartesian_2d(0..top, (0..n - 1).into_segmented())?;
    // Row 0 at the top: the first stage first.
    let label = |v: &SegmentValue<u32>| match v {
        SegmentValue::CenterOf(i) if *i < n => labels.get((n - 1 - i) as usize).cloned().unwrap_or_default(),
        _ => String::new(),
    };
    chart
        .configure_mesh()
        .disable_y_mesh()
        .y_labels(values.len() + 1)
        .y_label_formatter(&label)
        .x_labels(y_ticks(top))
        .x_label_formatter(&|v| v.to_string())
        .label_style(("sans-serif", FONT))
        .light_line_style(WHITE)
        .draw()?;
    chart.draw_series(
        Histogram::horizontal(&chart)
            .style(BAR.filled())
            .margin(4)
            .data(values.iter().enumerate().filter(|(_, v)| **v > 0).map(|(i, v)| (n - 1 - i as u32, *v))),
    )?;
    Ok(())
}

/// The value axis' top: a little above the largest bar, at least 1.
fn top_of(values: &[u64]) -> u64 {
    let max = values.iter().copied().max().unwrap_or(0);
    (max + max.div_ceil(10)).max(1)
}

/// Whole-number ticks: no more than the axis' range, and at most 6.
fn y_ticks(top: u64) -> usize {
    (top as usize + 1).min(6)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn charts_are_svg_with_a_bar_per_value_and_the_labels() {
        let labels: Vec<String> = (0..24).map(|h| format!("{h:02}")).collect();
        let mut values = vec![0u64; 24];
        values[9] = 5;
        values[14] = 2;
        let svg = columns(&labels, &values, 3, (480, 240));
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"), "{svg}");
        assert!(svg.contains("viewBox=\"0 0 480 240\""));
        // plotters writes a text's content on a line of its own.
        let has = |svg: &str, t: &str| svg.contains(&format!(">\n{t}\n</text>"));
        assert!(has(&svg, "09") && has(&svg, "12") && !has(&svg, "13"), "{svg}");
        let bars = svg.matches("fill=\"#1F6FB2\"").count();
        assert_eq!(bars, 2, "one rect per non-empty hour: {svg}");

        let stages = ["rang", "answered", "completed"].map(String::from);
        let svg = rows(&stages, &[7, 5, 2], 480);
        assert!(has(&svg, "rang") && has(&svg, "completed"), "{svg}");
        assert_eq!(svg.matches("fill=\"#1F6FB2\"").count(), 3, "{svg}");
    }
}
