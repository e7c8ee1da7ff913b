//! Lists of problems in error messages: the first few, one per indented
//! line, and `...` when some were left out, so a message stays readable
//! however many there are.

use std::fmt::Display;

/// How many items an error message lists.
pub const SHOWN: usize = 20;

/// The first [`SHOWN`] of `items`, each on its own line indented by two
/// spaces, then `  ...` on a line of its own when there were more.
pub fn indented<T: Display>(items: &[T]) -> String {
    let mut lines: Vec<String> = items.iter().take(SHOWN).map(|i| format!("  {i}")).collect();
    if items.len() > SHOWN {
        lines.push("  ...".into());
    }
    lines.join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_at_most_the_first_twenty_and_says_when_there_were_more() {
        assert_eq!(indented::<String>(&[]), "");
        assert_eq!(indented(&["a", "b"]), "  a\n  b");
        let many: Vec<usize> = (1..=21).collect();
        let text = indented(&many);
        assert_eq!(text.lines().count(), 21);
        assert!(text.starts_with("  1\n  2\n"), "{text}");
        assert!(text.ends_with("  20\n  ..."), "{text}");
        let exactly: Vec<usize> = (1..=20).collect();
        assert!(!indented(&exactly).contains("..."));
    }
}
