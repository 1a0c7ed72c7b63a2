//! Bounds both sides of the wire keep, so that no single field can make a
//! message too large to deliver.

/// The longest error text a failure report keeps; the rest is cut off.
pub const MAX_ERROR_BYTES: usize = 4096;

/// The longest message a progress report keeps; the rest is cut off.
pub const MAX_PROGRESS_MESSAGE_BYTES: usize = 1024;

/// The most slots one agent session may have: at registration
/// (`max_concurrency`) and in a `credit` message.
pub const MAX_CONCURRENCY: u32 = 10_000;

/// How long assignments an agent queued beyond its slots (its prefetch)
/// wait behind handlers that all keep running before the agent gives them
/// back (`TaskResult.given_back`). The server sizes prefetch windows so
/// that a queue is never expected to wait this long.
pub const QUEUE_PATIENCE: std::time::Duration = std::time::Duration::from_millis(20);

/// `text` cut to at most `limit` bytes, on a character boundary, saying so
/// when it was cut.
pub fn bounded_text(mut text: String, limit: usize) -> String {
    if text.len() > limit {
        let mut end = limit;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
        text.push_str(" [cut: too long]");
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_cut_on_a_character_boundary_and_says_so() {
        assert_eq!(bounded_text("short".into(), 10), "short");
        // 'é' is two bytes; a cut inside it moves back before it.
        assert_eq!(bounded_text("abé".into(), 3), "ab [cut: too long]");
    }
}
