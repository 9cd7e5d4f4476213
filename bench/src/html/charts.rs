//! The report's charts, drawn by `plotters` into SVG strings that the page
//! inlines: answers per second by kind, latency percentiles over time, the
//! latency histogram, the acceptance curve and the drain. Times are seconds
//! from the start of the load.

use crate::timeline::{Kind, Timeline};
use hdrhistogram::Histogram;
use plotters::coord::ranged1d::{AsRangedCoord, ValueFormatter};
use plotters::coord::types::RangedCoordf64;
use plotters::coord::Shift;
use plotters::prelude::*;

/// Every chart's size in pixels; the page scales it to its width.
const SIZE: (u32, u32) = (1100, 380);
const FONT: (&str, u32) = ("sans-serif", 15);
const TIME: &str = "seconds since the load started";
/// Points of a line over time at most: the run's buckets merged down to this.
pub const POINTS: usize = 150;
/// Histogram bins grow by this factor: about 30 bins per tenfold.
const BIN_GROWTH: f64 = 1.08;

const GREEN: RGBColor = RGBColor(46, 160, 67);
const ORANGE: RGBColor = RGBColor(230, 126, 34);
const BLUE: RGBColor = RGBColor(31, 111, 235);
const PURPLE: RGBColor = RGBColor(137, 87, 229);
const RED: RGBColor = RGBColor(218, 54, 51);
const GREY: RGBColor = RGBColor(120, 120, 120);

/// A chart that `plotters` could not draw.
#[derive(Debug, thiserror::Error)]
#[error("drawing a chart: {0}")]
pub struct ChartError(String);

impl<E: std::error::Error + Send + Sync> From<DrawingAreaErrorKind<E>> for ChartError {
    fn from(err: DrawingAreaErrorKind<E>) -> Self {
        Self(err.to_string())
    }
}

type Area<'b> = DrawingArea<SVGBackend<'b>, Shift>;
type Chart<'a, 'b, X, Y> = ChartContext<'a, SVGBackend<'b>, Cartesian2d<X, Y>>;

fn color(kind: Kind) -> RGBColor {
    match kind {
        Kind::Accepted => GREEN,
        Kind::SoldOut => ORANGE,
        Kind::AlreadyIssued => BLUE,
        Kind::OtherRejection => PURPLE,
        Kind::Error => RED,
    }
}

/// Answers per second, one line per kind that occurred.
pub fn throughput(timeline: &Timeline, load_s: f64) -> Result<String, ChartError> {
    let width_s = timeline.width().as_secs_f64();
    let lines: Vec<(Kind, Vec<(f64, f64)>)> = Kind::ALL
        .into_iter()
        .filter(|&kind| timeline.buckets().iter().any(|b| b.count(kind) > 0))
        .map(|kind| (kind, per_bucket(timeline, |b| Some(b.count(kind) as f64 / width_s))))
        .collect();
    let y_max = lines
        .iter()
        .flat_map(|(_, l)| l.iter().map(|p| p.1))
        .fold(1.0, f64::max)
        * 1.1;
    svg(|root| {
        let mut chart = axes(root, 0.0..x_end(load_s), 0.0..y_max)?;
        mesh(&mut chart, "answers per second", number)?;
        for (kind, points) in lines {
            line(&mut chart, points, color(kind), kind.label())?;
        }
        legend(&mut chart, SeriesLabelPosition::UpperRight)
    })
}

/// p50, p90, p99 and the maximum of each time bucket, on a log scale.
pub fn latency_over_time(timeline: &Timeline, load_s: f64) -> Result<String, ChartError> {
    let quantiles = [
        ("p50", 0.5, BLUE),
        ("p90", 0.9, GREEN),
        ("p99", 0.99, ORANGE),
        ("max", 1.0, RED),
    ];
    let lines: Vec<_> = quantiles
        .iter()
        .map(|&(name, q, color)| {
            let points = per_bucket(timeline, |b| b.latency.as_ref().map(|h| ms(h.value_at_quantile(q))));
            (name, points, color)
        })
        .collect();
    let values = || lines.iter().flat_map(|(_, l, _)| l.iter().map(|p| p.1));
    let (low, high) = log_range(values().fold(f64::MAX, f64::min), values().fold(0.0, f64::max));
    svg(|root| {
        let mut chart = axes(root, 0.0..x_end(load_s), (low..high).log_scale())?;
        mesh(&mut chart, "latency (ms, log scale)", log_number)?;
        for (name, points, color) in lines {
            line(&mut chart, points, color, name)?;
        }
        legend(&mut chart, SeriesLabelPosition::UpperRight)
    })
}

/// How many requests took how long (µs histogram), bins on a log scale, with
/// the median and p99 marked.
pub fn latency_histogram(latency: &Histogram<u64>) -> Result<String, ChartError> {
    let mut bins = Vec::new();
    let mut lower = latency.min().max(1);
    for step in latency.iter_log(lower, BIN_GROWTH) {
        let upper = step.value_iterated_to().max(lower + 1);
        bins.push((ms(lower), ms(upper), step.count_since_last_iteration() as f64));
        lower = upper;
    }
    let (low, high) = log_range(bins.first().map_or(0.0, |b| b.0), bins.last().map_or(0.0, |b| b.1));
    let y_max = bins.iter().map(|b| b.2).fold(1.0, f64::max) * 1.1;
    let marks = [
        ("p50", ms(latency.value_at_quantile(0.5)), BLUE),
        ("p99", ms(latency.value_at_quantile(0.99)), RED),
    ];
    svg(|root| {
        let mut chart = axes(root, (low..high).log_scale(), 0.0..y_max)?;
        chart
            .configure_mesh()
            .x_desc("latency (ms, log scale)")
            .y_desc("requests")
            .label_style(FONT)
            .light_line_style(BLACK.mix(0.04))
            .x_label_formatter(&|v| log_number(*v))
            .y_label_formatter(&|v| number(*v))
            .draw()?;
        chart.draw_series(
            bins.iter()
                .map(|&(from, to, n)| Rectangle::new([(from, 0.0), (to, n)], GREEN.mix(0.75).filled())),
        )?;
        for (name, at, color) in marks.into_iter().filter(|_| !latency.is_empty()) {
            let label = format!("{name} {at:.3} ms");
            chart
                .draw_series(LineSeries::new([(at, 0.0), (at, y_max)], color.stroke_width(2)))?
                .label(label)
                .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], color.stroke_width(2)));
        }
        legend(&mut chart, SeriesLabelPosition::UpperRight)
    })
}

/// Accepted requests so far against the total quantity, with the sell-out
/// moment (the first `sold_out` answer of the last coupon to sell out).
pub fn acceptance(timeline: &Timeline, load_s: f64, total: i64, sold_out: Option<f64>) -> Result<String, ChartError> {
    let issued = cumulative(timeline, Kind::Accepted);
    let top = issued.last().map_or(0.0, |p| p.1).max(total as f64).max(1.0) * 1.1;
    let x_max = x_end(load_s);
    svg(|root| {
        let mut chart = axes(root, 0.0..x_max, 0.0..top)?;
        mesh(&mut chart, "accepted requests (issued)", number)?;
        line(&mut chart, issued, GREEN, "accepted so far")?;
        let quantity = [(0.0, total as f64), (x_max, total as f64)];
        line(&mut chart, quantity, GREY, &format!("total quantity {total}"))?;
        if let Some(at) = sold_out {
            line(
                &mut chart,
                [(at, 0.0), (at, top)],
                RED,
                &format!("sold out at {at:.3} s"),
            )?;
        }
        legend(&mut chart, SeriesLabelPosition::LowerRight)
    })
}

/// The rows in MySQL against the accepted requests: the gap between the two
/// lines is the consumers' lag.
pub fn drain(
    timeline: &Timeline,
    rows: &[(f64, i64)],
    load_s: f64,
    drained_at: Option<f64>,
) -> Result<String, ChartError> {
    let accepted = cumulative(timeline, Kind::Accepted);
    let in_mysql: Vec<(f64, f64)> = rows.iter().map(|&(at, n)| (at, n as f64)).collect();
    let x_max = x_end(
        in_mysql
            .iter()
            .map(|p| p.0)
            .fold(load_s.max(drained_at.unwrap_or(0.0)), f64::max),
    );
    let top = accepted.iter().chain(&in_mysql).map(|p| p.1).fold(1.0, f64::max) * 1.1;
    svg(|root| {
        let mut chart = axes(root, 0.0..x_max, 0.0..top)?;
        mesh(&mut chart, "rows", number)?;
        line(&mut chart, accepted, GREEN, "accepted (202) so far")?;
        if !in_mysql.is_empty() {
            line(&mut chart, in_mysql, BLUE, "rows in MySQL")?;
        }
        line(
            &mut chart,
            [(load_s, 0.0), (load_s, top)],
            GREY,
            &format!("load ended at {load_s:.3} s"),
        )?;
        if let Some(at) = drained_at {
            let label = format!("all rows in at {at:.3} s");
            line(&mut chart, [(at, 0.0), (at, top)], PURPLE, &label)?;
        }
        legend(&mut chart, SeriesLabelPosition::LowerRight)
    })
}

/// Draws on a white SVG canvas and returns the SVG.
fn svg(draw: impl FnOnce(&Area<'_>) -> Result<(), ChartError>) -> Result<String, ChartError> {
    let mut out = String::new();
    {
        let root = SVGBackend::with_string(&mut out, SIZE).into_drawing_area();
        root.fill(&WHITE)?;
        draw(&root)?;
        root.present()?;
    }
    Ok(out)
}

/// The chart's axes with room for their labels.
fn axes<'a, 'b, X: AsRangedCoord, Y: AsRangedCoord>(
    root: &'a Area<'b>,
    x: X,
    y: Y,
) -> Result<Chart<'a, 'b, X::CoordDescType, Y::CoordDescType>, ChartError> {
    Ok(ChartBuilder::on(root)
        .margin(16)
        .x_label_area_size(48)
        .y_label_area_size(80)
        .build_cartesian_2d(x, y)?)
}

/// The grid and the axis names of a chart over time.
/// `y_label` writes the y axis' labels: [`number`], or [`log_number`] on a log axis.
fn mesh<Y>(
    chart: &mut Chart<'_, '_, RangedCoordf64, Y>,
    y_desc: &str,
    y_label: fn(f64) -> String,
) -> Result<(), ChartError>
where
    Y: Ranged<ValueType = f64> + ValueFormatter<f64>,
{
    chart
        .configure_mesh()
        .x_desc(TIME)
        .y_desc(y_desc)
        .label_style(FONT)
        .light_line_style(BLACK.mix(0.04))
        .x_label_formatter(&|v| number(*v))
        .y_label_formatter(&|v| y_label(*v))
        .draw()?;
    Ok(())
}

/// An axis label: at most three decimals, no trailing zeros.
fn number(v: f64) -> String {
    let text = format!("{v:.3}");
    text.trim_end_matches('0').trim_end_matches('.').to_string()
}

/// A log axis' label: only at 1, 2 and 5 times a power of ten (the grid has
/// a line at every 1..9; labels at each would overlap at the top of a decade).
fn log_number(v: f64) -> String {
    let leading = v / 10f64.powf(v.log10().floor());
    if [1.0, 2.0, 5.0].iter().any(|m| (leading - m).abs() < 0.01) {
        number(v)
    } else {
        String::new()
    }
}

/// A line, named in the legend.
fn line<X, Y>(
    chart: &mut Chart<'_, '_, X, Y>,
    points: impl IntoIterator<Item = (f64, f64)>,
    color: RGBColor,
    label: &str,
) -> Result<(), ChartError>
where
    X: Ranged<ValueType = f64>,
    Y: Ranged<ValueType = f64>,
{
    chart
        .draw_series(LineSeries::new(points, color.stroke_width(2)))?
        .label(label)
        .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], color.stroke_width(2)));
    Ok(())
}

/// The legend, where the lines are not: upper right for lines over time,
/// lower right for curves that climb and stay.
fn legend<'a, 'b: 'a, X: Ranged, Y: Ranged>(
    chart: &mut Chart<'a, 'b, X, Y>,
    position: SeriesLabelPosition,
) -> Result<(), ChartError> {
    chart
        .configure_series_labels()
        .position(position)
        .label_font(FONT)
        .background_style(WHITE.mix(0.85))
        .border_style(GREY)
        .draw()?;
    Ok(())
}

/// One point per bucket (at its middle) where `value` has one.
fn per_bucket(timeline: &Timeline, value: impl Fn(&crate::timeline::Bucket) -> Option<f64>) -> Vec<(f64, f64)> {
    let width_s = timeline.width().as_secs_f64();
    let buckets = timeline.buckets().iter().enumerate();
    buckets
        .filter_map(|(i, b)| value(b).map(|v| ((i as f64 + 0.5) * width_s, v)))
        .collect()
}

/// The running total of `kind` at the end of each bucket, from (0, 0).
fn cumulative(timeline: &Timeline, kind: Kind) -> Vec<(f64, f64)> {
    let width_s = timeline.width().as_secs_f64();
    let mut total = 0;
    let mut points = vec![(0.0, 0.0)];
    for (i, bucket) in timeline.buckets().iter().enumerate() {
        total += bucket.count(kind);
        points.push(((i + 1) as f64 * width_s, total as f64));
    }
    points
}

/// A time axis' end: a little past `last`, never empty.
fn x_end(last: f64) -> f64 {
    (last * 1.02).max(0.01)
}

/// A log axis' range around `low..=high` (ms), never empty nor down to 0,
/// from a power of ten (where the axis' labels start).
fn log_range(low: f64, high: f64) -> (f64, f64) {
    let data = low.is_finite() && high.is_finite() && low > 0.0 && low <= high;
    let (low, high) = if data { (low, high) } else { (0.001, 0.01) };
    let low = 10f64.powf(low.log10().floor());
    (low, (high * 1.5).max(low * 10.0))
}

fn ms(micros: u64) -> f64 {
    crate::report::ms(micros)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_run_without_answers_still_draws_every_chart() {
        let timeline = Timeline::new(1).unwrap();
        let latency = Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3).unwrap();
        let charts = [
            throughput(&timeline, 0.0).unwrap(),
            latency_over_time(&timeline, 0.0).unwrap(),
            latency_histogram(&latency).unwrap(),
            acceptance(&timeline, 0.0, 10, None).unwrap(),
            drain(&timeline, &[], 0.0, None).unwrap(),
        ];
        for svg in charts {
            assert!(svg.starts_with("<svg") && svg.contains("</svg>"), "{svg}");
        }
    }

    #[test]
    fn the_acceptance_curve_climbs_to_the_quantity_and_marks_the_sell_out() {
        let mut timeline = Timeline::new(1).unwrap();
        for ms in 0..100u64 {
            timeline.record(0, Duration::from_millis(ms), Kind::Accepted, Duration::from_millis(2));
        }
        let svg = acceptance(&timeline, 0.2, 100, Some(0.1)).unwrap();
        assert!(
            svg.contains("total quantity 100") && svg.contains("sold out at 0.100 s"),
            "{svg}"
        );
        let points = cumulative(&timeline, Kind::Accepted);
        let (end, issued) = *points.last().unwrap();
        assert!((end - 0.1).abs() < 1e-9 && issued == 100.0, "{points:?}");
        assert_eq!(log_number(20.0), "20");
        assert_eq!(log_number(30.0), "");
        assert_eq!(log_range(3.0, 40.0), (1.0, 60.0));
    }
}
