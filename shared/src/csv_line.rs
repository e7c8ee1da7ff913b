//! Line numbers of CSV records, for messages that send a user to a row.

/// The 1-based line of the record that starts at byte `start` or after the
/// line breaks there. (The csv crate's own line numbers are one short after
/// a blank line, and for every row of a file with CRLF line endings.)
pub fn line_at(bytes: &[u8], start: u64) -> u64 {
    let mut at = usize::try_from(start)
        .unwrap_or(usize::MAX)
        .min(bytes.len());
    while at < bytes.len() && matches!(bytes[at], b'\r' | b'\n') {
        at += 1;
    }
    1 + bytes[..at].iter().filter(|&&b| b == b'\n').count() as u64
}

#[cfg(test)]
mod tests {
    use super::line_at;

    #[test]
    fn a_records_line_counts_the_breaks_before_it() {
        let text = b"h\r\na\r\n\r\nb\n";
        assert_eq!(line_at(text, 0), 1);
        // The csv crate may say a record starts on the break before it.
        assert_eq!(line_at(text, 2), 2);
        assert_eq!(line_at(text, 3), 2);
        assert_eq!(line_at(text, 6), 4);
        assert_eq!(line_at(text, 10), 5, "past the end");
        assert_eq!(line_at(text, u64::MAX), 5);
    }
}
