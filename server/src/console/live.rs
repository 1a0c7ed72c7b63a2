//! Live updates: `GET /events`, a Server-Sent Events stream that says
//! `refresh` when the queue changed, at most once per [`REFRESH_EVERY`]
//! however busy the queue is (and every [`QUIET_REFRESH`] even when no
//! task changed, for agents and counts that move without a task event).
//! The page's script then fetches itself again and swaps in its live part.
//!
//! Refreshes are also spaced by [`RENDER_SHARE`] times the latest page's
//! render time, so an open page never keeps the server busier than about
//! a tenth of its time however slow its queries grow (at most
//! [`SLOWEST_REFRESH`] apart).

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use tokio::sync::broadcast::error::RecvError;
use tokio::time::Instant;
use tokio_stream::Stream;

use super::Console;

/// The most often a page is told to refresh.
pub const REFRESH_EVERY: Duration = Duration::from_secs(1);
/// How often a page refreshes with no task event.
pub const QUIET_REFRESH: Duration = Duration::from_secs(5);
/// Refreshes are at least this many render times apart.
pub const RENDER_SHARE: u32 = 10;
/// The longest spacing a slow page's refreshes get.
pub const SLOWEST_REFRESH: Duration = Duration::from_secs(10);

/// How far apart refreshes are after a page took `render` to draw.
fn spacing(render: Duration) -> Duration {
    (render * RENDER_SHARE).clamp(REFRESH_EVERY, SLOWEST_REFRESH)
}

/// `GET /events`.
pub async fn events(
    State(console): State<Arc<Console>>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let mut notices = console.plane.events.subscribe();
    let stop = console.plane.shutdown.clone();
    let (sender, receiver) = tokio::sync::mpsc::channel(1);
    tokio::spawn(async move {
        let mut last = Instant::now();
        loop {
            // Wait for a change (or the quiet interval), then for the rest
            // of the refresh interval, so a busy queue costs one refresh
            // per interval.
            tokio::select! {
                notice = notices.recv() => {
                    if matches!(notice, Err(RecvError::Closed)) {
                        return;
                    }
                }
                () = tokio::time::sleep_until(last + QUIET_REFRESH) => {}
                () = stop.cancelled() => return,
            }
            let render = Duration::from_micros(console.render_micros.load(Ordering::Relaxed));
            tokio::select! {
                () = tokio::time::sleep_until(last + spacing(render)) => {}
                () = stop.cancelled() => return,
            }
            notices = notices.resubscribe();
            last = Instant::now();
            let event = Event::default().event("refresh").data("changed");
            if sender.send(Ok(event)).await.is_err() {
                return;
            }
        }
    });
    Sse::new(tokio_stream::wrappers::ReceiverStream::new(receiver)).keep_alive(KeepAlive::default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slow_pages_refresh_less_often() {
        assert_eq!(spacing(Duration::from_millis(2)), REFRESH_EVERY);
        assert_eq!(spacing(Duration::from_millis(200)), Duration::from_secs(2));
        assert_eq!(spacing(Duration::from_secs(5)), SLOWEST_REFRESH);
    }
}
