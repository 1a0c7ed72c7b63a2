//! The overview's charts: a type's last hour, minute by minute, drawn as
//! inline SVG on the server (no script, no chart library; every number
//! also in a tooltip for screen readers and keyboards).

use std::fmt::Write as _;

use maud::{Markup, html};
use taskplane_proto::v1::ActivityMinute;

/// Minutes across a chart.
const MINUTES: i64 = 60;
/// Pixels per minute.
const STEP: i64 = 3;
/// The chart's height in pixels.
const HEIGHT: f64 = 36.0;

/// Which series a chart draws.
#[derive(Clone, Copy)]
pub enum Series {
    /// Tasks completed per minute, as bars (dead ones stacked in red).
    Throughput,
    /// The mean wait from due to assignment, as a line.
    DispatchLatency,
}

/// The hour ending at minute `now_minute` (minutes since the epoch) of
/// `minutes`, drawn as `series`.
pub fn chart(minutes: &[ActivityMinute], now_minute: i64, series: Series) -> Markup {
    let first = now_minute - MINUTES + 1;
    let at = |minute: &ActivityMinute| {
        let index = minute
            .start
            .as_ref()
            .map_or(0, |start| start.seconds.div_euclid(60));
        (index - first).clamp(0, MINUTES - 1)
    };
    let width = MINUTES * STEP;
    let label = |minute: &ActivityMinute| {
        let start = minute.start.as_ref().map_or(0, |start| start.seconds);
        chrono::DateTime::from_timestamp(start, 0)
            .map(|t| t.format("%H:%M").to_string())
            .unwrap_or_default()
    };
    match series {
        Series::Throughput => {
            let most = minutes
                .iter()
                .map(|m| m.completed + m.dead)
                .max()
                .unwrap_or(0)
                .max(1) as f64;
            let total: u64 = minutes.iter().map(|m| m.completed).sum();
            html! {
                svg.chart viewBox={ "0 0 " (width) " " (HEIGHT) } width=(width) height=(HEIGHT)
                    role="img" aria-label={ (total) " completed in the last hour" } {
                    (axis(width))
                    @for minute in minutes {
                        @let x = at(minute) * STEP;
                        @let done = minute.completed as f64 / most * HEIGHT;
                        @let dead = minute.dead as f64 / most * HEIGHT;
                        g {
                            title { (label(minute)) ": " (minute.completed) " completed, " (minute.dead) " dead, " (minute.failed) " retried" }
                            rect.done x=(x) y=(format!("{:.1}", HEIGHT - done)) width=(STEP - 1) height=(format!("{done:.1}")) {}
                            @if minute.dead > 0 {
                                rect.dead x=(x) y=(format!("{:.1}", HEIGHT - done - dead)) width=(STEP - 1) height=(format!("{dead:.1}")) {}
                            }
                        }
                    }
                }
            }
        }
        Series::DispatchLatency => {
            let dispatched: Vec<&ActivityMinute> =
                minutes.iter().filter(|m| m.dispatched > 0).collect();
            let most = dispatched
                .iter()
                .map(|m| m.dispatch_latency_mean_ms)
                .fold(0.0, f64::max)
                .max(1.0);
            let mut points = String::new();
            for minute in &dispatched {
                let x = at(minute) * STEP + STEP / 2;
                let y = HEIGHT - minute.dispatch_latency_mean_ms / most * (HEIGHT - 2.0) - 1.0;
                let _ = write!(points, "{x},{y:.1} ");
            }
            html! {
                svg.chart viewBox={ "0 0 " (width) " " (HEIGHT) } width=(width) height=(HEIGHT)
                    role="img" aria-label={ "dispatch latency, at most " (format!("{most:.1}")) " ms mean per minute" } {
                    (axis(width))
                    polyline.latency points=(points.trim_end()) {}
                    @for minute in &dispatched {
                        circle.latency cx=(at(minute) * STEP + STEP / 2)
                            cy=(format!("{:.1}", HEIGHT - minute.dispatch_latency_mean_ms / most * (HEIGHT - 2.0) - 1.0)) r="1.5" {
                            title { (label(minute)) ": " (format!("{:.1}", minute.dispatch_latency_mean_ms)) " ms mean, "
                                (format!("{:.1}", minute.dispatch_latency_max_ms)) " ms max, " (minute.dispatched) " dispatched" }
                        }
                    }
                }
            }
        }
    }
}

/// The chart's baseline, so an empty hour still reads as a chart.
fn axis(width: i64) -> Markup {
    html! { line.axis x1="0" y1=(HEIGHT - 0.5) x2=(width) y2=(HEIGHT - 0.5) {} }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn minute(index: i64, completed: u64, mean: f64) -> ActivityMinute {
        ActivityMinute {
            start: Some(prost_types::Timestamp {
                seconds: index * 60,
                nanos: 0,
            }),
            dispatched: completed,
            completed,
            dispatch_latency_mean_ms: mean,
            ..ActivityMinute::default()
        }
    }

    #[test]
    fn each_minute_is_drawn_at_its_place_scaled_to_the_busiest() {
        let now = 1_000;
        let minutes = [minute(now - 59, 10, 2.0), minute(now, 20, 4.0)];
        let bars = chart(&minutes, now, Series::Throughput).into_string();
        assert!(
            bars.contains(r#"x="0" y="18.0" width="2" height="18.0""#),
            "{bars}"
        );
        assert!(
            bars.contains(r#"x="177" y="0.0" width="2" height="36.0""#),
            "{bars}"
        );
        assert!(bars.contains("30 completed in the last hour"));
        let line = chart(&minutes, now, Series::DispatchLatency).into_string();
        assert!(line.contains(r#"points="1,18.0 178,1.0""#), "{line}");
    }
}
