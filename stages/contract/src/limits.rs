//! Size limits of the contract: how long a path may be, how much of a text an error
//! message quotes, and how a record that Kafka refuses as too large is cut down.
//!
//! Invariants: [`excerpt`] never splits a UTF-8 character and always says how long the
//! whole text was; a cut record says it was cut (DLQ: `original_value_truncated` with the
//! full size and SHA-256; result: `truncated: true`), so nothing is shortened silently.

use std::borrow::Cow;

/// Longest path (in bytes) a task may name, local or remote: Linux's PATH_MAX. A longer
/// one fails the task with `PATH_NOT_ALLOWED` before any I/O.
pub const MAX_PATH_BYTES: usize = 4096;

/// Longest `error_message` of a result, in bytes (longer ones are cut with [`excerpt`]).
pub const MAX_ERROR_MESSAGE_BYTES: usize = 2048;

/// How much of a path a record keeps when it must be cut to fit Kafka's message limit.
pub const SHRUNK_PATH_BYTES: usize = 1024;

/// How much of an original value a DLQ record keeps when it must be cut to fit.
pub const SHRUNK_VALUE_BYTES: usize = 64 * 1024;

/// `text` if it is at most `max` bytes, else its longest prefix of at most `max` bytes
/// that ends on a character boundary, followed by `... (N bytes)`.
pub fn excerpt(text: &str, max: usize) -> Cow<'_, str> {
    if text.len() <= max {
        return Cow::Borrowed(text);
    }
    Cow::Owned(format!("{}... ({} bytes)", prefix(text, max), text.len()))
}

/// The longest prefix of `text` of at most `max` bytes that ends on a char boundary.
pub fn prefix(text: &str, max: usize) -> &str {
    let mut end = max.min(text.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn excerpt_keeps_short_text_and_cuts_long_text_on_a_char_boundary() {
        assert_eq!(excerpt("abc", 3), "abc");
        assert_eq!(excerpt("abcd", 3), "abc... (4 bytes)");
        // '가' is 3 bytes: a cut inside it backs off to the boundary.
        assert_eq!(excerpt("가가", 4), "가... (6 bytes)");
        assert_eq!(excerpt("가", 2), "... (3 bytes)");
        assert_eq!(prefix("", 10), "");
    }
}
