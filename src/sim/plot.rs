//! Plots of one run (`anchorage sim --plot FILE.svg`): what the run recorded, drawn over
//! simulated time as an SVG.
//!
//! - Panel 1: each server's share of the RPCs sent in each 100 ms bucket, and the share that
//!   failed.
//! - Panel 2: the connections open to each server.
//! - Both: a dashed vertical marker at every applied fault, labelled with what it did, and the
//!   windows the properties judged (the split window, each failover window, …) shaded and
//!   labelled.
//!
//! The data is the run's [`Timeline`], built from the servers' connection records, the
//! client's RPC log and the fault log, so a plot shows exactly what the checks saw.
//!
//! # Determinism
//! A timeline is a function of the run, hence of (scenario, seed), and drawing uses no clock and
//! no randomness: the same run gives a byte-identical SVG.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::checks::{Observed, split_window_start};
use super::scenario::Action;

/// The width of a bucket of panel 1, ms.
pub const BUCKET_MS: u64 = 100;

/// Width and height of a plot, pixels.
const SIZE: (u32, u32) = (1400, 900);

/// What a run recorded over simulated time: everything a plot draws.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Timeline {
    /// Simulated time at the end of the run, ms.
    pub end_ms: u64,
    /// Per server, in the scenario's order: its connections.
    pub servers: Vec<ServerLine>,
    /// Every RPC of the workload, in index order.
    pub rpcs: Vec<RpcSpan>,
    /// Every fault applied, in time order.
    pub faults: Vec<FaultMark>,
    /// The windows the properties judged.
    pub windows: Vec<Window>,
}

/// One server's connections over all its boots.
#[derive(Debug, Clone, PartialEq)]
pub struct ServerLine {
    /// The server's name.
    pub name: String,
    /// Its connections, as (opened, closed) in simulated ms; `None`: still open at the end.
    pub connections: Vec<(u64, Option<u64>)>,
}

/// One RPC.
#[derive(Debug, Clone, PartialEq)]
pub struct RpcSpan {
    /// When it was sent, simulated ms.
    pub start_ms: u64,
    /// When it ended, simulated ms.
    pub end_ms: u64,
    /// The server that answered; `None`: it failed.
    pub server: Option<String>,
}

/// One applied fault.
#[derive(Debug, Clone, PartialEq)]
pub struct FaultMark {
    /// When it took effect, simulated ms.
    pub at_ms: u64,
    /// What it did (`crash a`, `restart a`, …).
    pub label: String,
}

/// A stretch of simulated time a property judged.
#[derive(Debug, Clone, PartialEq)]
pub struct Window {
    /// The property (`split`, `failover`, `recovery`, `liveness`, …).
    pub property: String,
    /// Start, simulated ms.
    pub from_ms: u64,
    /// End, simulated ms.
    pub until_ms: u64,
    /// What it judged there.
    pub label: String,
}

fn ms(at: Duration) -> u64 {
    u64::try_from(at.as_millis()).unwrap_or(u64::MAX)
}

/// The timeline of an observed run.
pub(crate) fn timeline(o: &Observed<'_>) -> Timeline {
    let servers = o
        .servers
        .iter()
        .map(|s| ServerLine {
            name: s.name.clone(),
            connections: s.connections.iter().map(|c| (ms(c.opened), c.closed.map(ms))).collect(),
        })
        .collect();
    let rpcs = o
        .log
        .rpcs
        .iter()
        .map(|r| RpcSpan {
            start_ms: ms(r.start),
            end_ms: ms(r.end),
            server: r.server().map(str::to_owned),
        })
        .collect();
    let faults = o
        .applied
        .iter()
        .map(|a| FaultMark { at_ms: ms(a.at), label: a.fault.describe() })
        .collect();
    Timeline { end_ms: ms(o.end), servers, rpcs, faults, windows: windows(o) }
}

/// The windows of the properties the scenario checks, as the checks define them.
fn windows(o: &Observed<'_>) -> Vec<Window> {
    let e = &o.scenario.expect;
    let end = ms(o.end);
    let mut out = Vec::new();
    let mut push = |property: &str, from: Duration, until: Duration, label: String| {
        if from < until {
            let (from_ms, until_ms) = (ms(from), ms(until));
            out.push(Window { property: property.to_owned(), from_ms, until_ms, label });
        }
    };
    if o.weights().is_some() {
        push("split", split_window_start(o), o.end, "split window".to_owned());
    }
    for (i, applied) in o.applied.iter().enumerate() {
        let fault = &applied.fault;
        if let Some(within) = e.failover_within_ms
            && matches!(fault.action, Action::Crash | Action::Partition | Action::Hold)
        {
            let cut = o.cut_off(fault);
            if !cut.is_empty() {
                let from = applied.at + Duration::from_millis(within);
                let label = format!("failover: no OK RPC to {}", cut.join("/"));
                push("failover", from, o.healed_at(i), label);
            }
        }
        if let Some(within) = e.recovery_within_ms
            && fault.is_heal()
        {
            let until = o.applied.get(i + 1).map_or(o.end, |next| next.at);
            let from = applied.at + Duration::from_millis(within);
            push("recovery", from, until, "recovery: split within tolerance".to_owned());
        }
        if let (Some(after), Action::Unhealthy, Some(server)) =
            (e.unhealthy_gets_no_rpcs_after_ms, fault.action, &fault.server)
        {
            let until = o.applied[i + 1..]
                .iter()
                .find(|a| {
                    a.fault.action == Action::Healthy && a.fault.server.as_ref() == Some(server)
                })
                .map_or(o.end, |a| a.at);
            let from = applied.at + Duration::from_millis(after);
            push("unhealthy_gets_no_rpcs", from, until, format!("no RPC to unhealthy {server}"));
        }
    }
    if let Some(bound) = e.liveness_within_ms {
        let healed = o.applied.last().map_or(Duration::ZERO, |a| a.at);
        let until = (healed + Duration::from_millis(bound)).min(o.end);
        push("liveness", healed, until, "liveness: first OK due".to_owned());
    }
    out.retain(|w| w.from_ms < end.max(1));
    out
}

/// A plot that could not be made.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PlotError {
    /// The file could not be written.
    #[error("plot {path}: cannot write the file: {source}", path = path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The drawing library refused the drawing.
    #[error("plot {path}: cannot draw: {message}", path = path.display())]
    Draw {
        /// The file.
        path: PathBuf,
        /// What the drawing library said.
        message: String,
    },
}

/// Draws `timeline` (of `title`'s run) and writes it to `path` as SVG.
///
/// # Errors
/// [`PlotError::Write`] naming `path` when it cannot be written (no such directory, no
/// permission); [`PlotError::Draw`] if drawing fails.
pub fn write_svg(timeline: &Timeline, title: &str, path: &Path) -> Result<(), PlotError> {
    let svg = svg(timeline, title)
        .map_err(|message| PlotError::Draw { path: path.to_owned(), message })?;
    std::fs::write(path, svg).map_err(|source| PlotError::Write { path: path.to_owned(), source })
}

/// Draws `timeline` as an SVG document titled `title`.
///
/// # Errors
/// What the drawing library reports, as text.
pub fn svg(timeline: &Timeline, title: &str) -> Result<String, String> {
    let mut out = String::new();
    {
        let root = SVGBackend::with_string(&mut out, SIZE).into_drawing_area();
        root.fill(&WHITE).map_err(|e| e.to_string())?;
        let root = root.titled(title, ("sans-serif", 28)).map_err(|e| e.to_string())?;
        let (panels, legend) = root.split_horizontally(SIZE.0 - LEGEND_WIDTH);
        let (top, bottom) = panels.split_vertically(SIZE.1 * 11 / 20);
        let end = secs(timeline.end_ms.max(BUCKET_MS));
        draw_legend(&legend, timeline).map_err(|e| e.to_string())?;
        draw_shares(&top, timeline, end).map_err(|e| e.to_string())?;
        draw_connections(&bottom, timeline, end).map_err(|e| e.to_string())?;
        root.present().map_err(|e| e.to_string())?;
    }
    Ok(out)
}

/// The column right of both panels that holds the legend, so it never covers data or labels.
const LEGEND_WIDTH: u32 = 190;

/// How a legend entry is marked: a line of a colour and width, or a shaded box.
enum Mark {
    Line(RGBColor, u32),
    Shade(RGBColor),
}

/// The legend, one entry per line down the right-hand column: each server's line, the failed
/// share (when any RPC failed), the fault markers and each kind of window shaded.
fn draw_legend(area: &Area<'_>, timeline: &Timeline) -> Drawn {
    let mut entries: Vec<(String, Mark)> = Vec::new();
    for (index, server) in timeline.servers.iter().enumerate() {
        entries.push((format!("server {}", server.name), Mark::Line(server_color(index), 3)));
    }
    if timeline.rpcs.iter().any(|r| r.server.is_none()) {
        entries.push(("failed".to_owned(), Mark::Line(FAILED_COLOR, 1)));
    }
    if !timeline.faults.is_empty() {
        entries.push(("fault".to_owned(), Mark::Line(FAULT_COLOR, 1)));
    }
    let mut kinds: Vec<&str> = Vec::new();
    for window in &timeline.windows {
        if !kinds.contains(&window.property.as_str()) {
            kinds.push(&window.property);
            let mark = Mark::Shade(window_color(&window.property));
            entries.push((format!("{} window", window.property), mark));
        }
    }
    let font = ("sans-serif", 16).into_font().color(&BLACK).pos(Pos::new(HPos::Left, VPos::Center));
    for (row, (label, mark)) in entries.iter().enumerate() {
        let y = 70 + 24 * i32::try_from(row).unwrap_or(0);
        match *mark {
            Mark::Line(color, width) => {
                area.draw(&PathElement::new(vec![(8, y), (32, y)], color.stroke_width(width)))?;
            }
            Mark::Shade(color) => {
                area.draw(&Rectangle::new([(8, y - 7), (32, y + 7)], color.mix(0.4).filled()))?;
            }
        }
        area.draw(&Text::new(label.as_str(), (40, y), font.clone()))?;
    }
    Ok(())
}

type Area<'a> = DrawingArea<SVGBackend<'a>, plotters::coord::Shift>;
type Drawn = Result<(), DrawingAreaErrorKind<<SVGBackend<'static> as DrawingBackend>::ErrorType>>;

fn secs(ms: u64) -> f64 {
    ms as f64 / 1000.0
}

fn server_color(index: usize) -> RGBColor {
    const COLORS: [RGBColor; 8] = [
        RGBColor(31, 119, 180),
        RGBColor(255, 127, 14),
        RGBColor(44, 160, 44),
        RGBColor(148, 103, 189),
        RGBColor(140, 86, 75),
        RGBColor(227, 119, 194),
        RGBColor(23, 190, 207),
        RGBColor(188, 189, 34),
    ];
    COLORS[index % COLORS.len()]
}

fn window_color(property: &str) -> RGBColor {
    match property {
        "split" => RGBColor(120, 180, 120),
        "failover" => RGBColor(230, 120, 120),
        "recovery" => RGBColor(120, 150, 230),
        "liveness" => RGBColor(230, 190, 90),
        _ => RGBColor(170, 170, 170),
    }
}

const FAULT_COLOR: RGBColor = RGBColor(200, 30, 30);
const FAILED_COLOR: RGBColor = RGBColor(90, 90, 90);

/// Per 100 ms bucket (by send time): each server's share of the RPCs sent, and the failed
/// share.
/// Each server's share of the RPCs sent per bucket, keyed by its name; `None` is the share
/// that failed (kept apart so a server may be called "failed").
fn shares(timeline: &Timeline) -> BTreeMap<Option<&str>, Vec<(f64, f64)>> {
    let buckets = usize::try_from(timeline.end_ms / BUCKET_MS + 1).unwrap_or(usize::MAX);
    let mut counts: BTreeMap<Option<&str>, BTreeMap<usize, u64>> = BTreeMap::new();
    let mut totals: BTreeMap<usize, u64> = BTreeMap::new();
    for rpc in &timeline.rpcs {
        let bucket = usize::try_from(rpc.start_ms / BUCKET_MS).unwrap_or(usize::MAX).min(buckets);
        *counts.entry(rpc.server.as_deref()).or_default().entry(bucket).or_default() += 1;
        *totals.entry(bucket).or_default() += 1;
    }
    let mut out = BTreeMap::new();
    let names = timeline.servers.iter().map(|s| Some(s.name.as_str())).chain([None]);
    for name in names {
        let per = counts.get(&name);
        let points = totals
            .iter()
            .map(|(&bucket, &total)| {
                let n = per.and_then(|p| p.get(&bucket)).copied().unwrap_or(0);
                let mid = bucket as f64 * secs(BUCKET_MS) + secs(BUCKET_MS) / 2.0;
                (mid, n as f64 / total as f64)
            })
            .collect();
        out.insert(name, points);
    }
    out
}

fn draw_shares(area: &Area<'_>, timeline: &Timeline, end: f64) -> Drawn {
    let mut chart = ChartBuilder::on(area)
        .caption(
            format!("RPC share per server, {BUCKET_MS} ms buckets by send time"),
            ("sans-serif", 20),
        )
        .margin(12)
        .x_label_area_size(44)
        .y_label_area_size(64)
        .build_cartesian_2d(0f64..end, 0f64..1.3)?;
    chart
        .configure_mesh()
        .x_desc("simulated time (s)")
        .label_style(("sans-serif", 15))
        .y_desc("share of RPCs sent")
        .y_labels(7)
        .draw()?;
    draw_windows(&mut chart, timeline, 1.3, false)?;
    let series = shares(timeline);
    for (index, server) in timeline.servers.iter().enumerate() {
        let color = server_color(index);
        let points = series.get(&Some(server.name.as_str())).cloned().unwrap_or_default();
        chart.draw_series(LineSeries::new(points, color.stroke_width(2)))?;
    }
    let failed = series.get(&None).cloned().unwrap_or_default();
    if failed.iter().any(|&(_, share)| share > 0.0) {
        chart.draw_series(LineSeries::new(failed, FAILED_COLOR.stroke_width(1)))?;
    }
    draw_faults(&mut chart, timeline, 1.3, true)?;
    Ok(())
}

/// Per server: the connections open, as a step line.
fn open_steps(server: &ServerLine, end_ms: u64) -> Vec<(f64, f64)> {
    let mut edges: Vec<(u64, i64)> = Vec::new();
    for &(opened, closed) in &server.connections {
        edges.push((opened, 1));
        if let Some(closed) = closed {
            edges.push((closed, -1));
        }
    }
    // Closes before opens at the same instant.
    edges.sort();
    let mut points = vec![(0.0, 0.0)];
    let mut open = 0i64;
    for (at, delta) in edges {
        points.push((secs(at), open as f64));
        open += delta;
        points.push((secs(at), open as f64));
    }
    points.push((secs(end_ms), open as f64));
    points
}

fn draw_connections(area: &Area<'_>, timeline: &Timeline, end: f64) -> Drawn {
    let steps: Vec<Vec<(f64, f64)>> =
        timeline.servers.iter().map(|s| open_steps(s, timeline.end_ms)).collect();
    let most = steps.iter().flatten().map(|&(_, n)| n).fold(1.0, f64::max);
    // Whole numbers up to at least one above the most, leaving room for the labels.
    let top = (most * 1.4).ceil() + 1.0;
    let mut chart = ChartBuilder::on(area)
        .caption("Connections open per server", ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(44)
        .y_label_area_size(64)
        .build_cartesian_2d(0f64..end, 0f64..top)?;
    chart
        .configure_mesh()
        .x_desc("simulated time (s)")
        .label_style(("sans-serif", 15))
        .y_desc("open connections")
        .y_labels(top as usize + 1)
        .y_label_formatter(&|v| format!("{v:.0}"))
        .draw()?;
    draw_windows(&mut chart, timeline, top, true)?;
    for (index, points) in steps.into_iter().enumerate() {
        let color = server_color(index);
        chart.draw_series(LineSeries::new(points, color.stroke_width(2)))?;
    }
    draw_faults(&mut chart, timeline, top, false)?;
    Ok(())
}

type Chart<'a, 'b> = ChartContext<
    'a,
    SVGBackend<'b>,
    Cartesian2d<plotters::coord::types::RangedCoordf64, plotters::coord::types::RangedCoordf64>,
>;

/// Shades each judged window; with `labelled`, names it and adds its property to the legend.
fn draw_windows(chart: &mut Chart<'_, '_>, timeline: &Timeline, top: f64, labelled: bool) -> Drawn {
    for (i, window) in timeline.windows.iter().enumerate() {
        let color = window_color(&window.property);
        let (from, until) = (secs(window.from_ms), secs(window.until_ms));
        let shade = Rectangle::new([(from, 0.0), (until, top)], color.mix(0.18).filled());
        chart.draw_series(std::iter::once(shade))?;
        if labelled {
            // Stagger the labels of neighbouring windows so they do not overprint.
            let y = top * (0.97 - 0.06 * (i % 3) as f64);
            let style = ("sans-serif", 15).into_font().color(&BLACK);
            chart.draw_series(std::iter::once(Text::new(
                window.label.clone(),
                (from, y),
                style.pos(Pos::new(HPos::Left, VPos::Top)),
            )))?;
        }
    }
    Ok(())
}

/// A dashed vertical line at each fault; with `labelled`, what it did, written up the line.
fn draw_faults(chart: &mut Chart<'_, '_>, timeline: &Timeline, top: f64, labelled: bool) -> Drawn {
    for fault in &timeline.faults {
        let x = secs(fault.at_ms);
        let dashes = (0..40).map(|k| {
            let (a, b) = (top * k as f64 / 40.0, top * (k as f64 + 0.5) / 40.0);
            PathElement::new(vec![(x, a), (x, b)], FAULT_COLOR.stroke_width(1))
        });
        chart.draw_series(dashes)?;
        if labelled {
            let style = ("sans-serif", 15)
                .into_font()
                .transform(FontTransform::Rotate270)
                .color(&FAULT_COLOR)
                .pos(Pos::new(HPos::Left, VPos::Top));
            let label = format!(
                "{} @{}",
                fault.label,
                super::trace::secs(Duration::from_millis(fault.at_ms))
            );
            chart.draw_series(std::iter::once(Text::new(label, (x, top * 0.02), style)))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Regression: the failed share was stored under the name "failed", over the share of a
    /// server with that name.
    #[test]
    fn a_server_named_failed_keeps_its_own_share() {
        let server = |name: &str| ServerLine { name: name.to_owned(), connections: Vec::new() };
        let rpc = |server: Option<&str>| RpcSpan {
            start_ms: 10,
            end_ms: 20,
            server: server.map(str::to_owned),
        };
        let timeline = Timeline {
            end_ms: 100,
            servers: vec![server("failed"), server("b")],
            rpcs: vec![rpc(Some("failed")), rpc(Some("failed")), rpc(Some("b")), rpc(None)],
            faults: Vec::new(),
            windows: Vec::new(),
        };
        let series = shares(&timeline);
        assert_eq!(series[&Some("failed")], vec![(0.05, 0.5)], "the server's own share");
        assert_eq!(series[&None], vec![(0.05, 0.25)], "the share that failed, apart");
    }
}
