//! Log set-up shared by the `crossfold` and `crossfold-worker` binaries:
//! `tracing` to standard error, filtered by `RUST_LOG` (default: the
//! binary's own level), as JSON lines when asked or when standard error is
//! not a terminal (log collectors), as text otherwise.

use std::io::IsTerminal;

/// `--log-format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// JSON when standard error is not a terminal, text when it is.
    #[default]
    Auto,
    Json,
    Text,
}

impl std::str::FromStr for LogFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "auto" => Ok(LogFormat::Auto),
            "json" => Ok(LogFormat::Json),
            "text" => Ok(LogFormat::Text),
            _ => Err(format!("{s:?}: expected auto, json or text")),
        }
    }
}

impl LogFormat {
    /// Whether this format writes JSON, given whether stderr is a terminal.
    pub fn is_json(self, stderr_is_terminal: bool) -> bool {
        match self {
            LogFormat::Auto => !stderr_is_terminal,
            LogFormat::Json => true,
            LogFormat::Text => false,
        }
    }
}

/// Install the global subscriber. `default_level` applies when `RUST_LOG`
/// is unset or invalid.
pub fn init(format: LogFormat, default_level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level));
    let terminal = std::io::stderr().is_terminal();
    // Colours only on a terminal: log files and collectors get plain text.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(terminal);
    let result = if format.is_json(terminal) {
        builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .try_init()
    } else {
        builder.try_init()
    };
    // Already installed (tests calling twice): keep the first.
    let _ = result;
}

/// Restore SIGPIPE's default action (the Rust runtime ignores it), so that
/// a command printing into a closed pipe (`... | head -1`) ends quietly as
/// other Unix tools do instead of panicking on the failed write. Only for
/// commands that use no network: for the others a peer closing its socket
/// would end the process silently (see [`quiet_on_closed_stdout_panic`]).
pub fn exit_quietly_on_closed_stdout() {
    // SAFETY: signal(2) with SIG_DFL, before any other thread exists.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

/// What a panic said (its payload, when it is text): `panic!("...")` and
/// `expect` give a `&str` or a `String`.
pub fn panic_text(payload: &(dyn std::any::Any + Send)) -> Option<&str> {
    payload
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| payload.downcast_ref::<&str>().copied())
}

/// For commands that also use the network (SIGPIPE stays ignored there, so
/// a closed socket is an error, not a silent death): printing into a closed
/// pipe makes `println!` panic; end quietly with SIGPIPE's usual exit
/// status (141) instead of printing a panic message. Other panics keep the
/// default report.
pub fn quiet_on_closed_stdout_panic() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let text = panic_text(info.payload()).unwrap_or("");
        if text.starts_with("failed printing to stdout") && text.contains("Broken pipe") {
            std::process::exit(141);
        }
        default(info);
    }));
}

/// An error and its causes on one line, `outer: cause: root`, leaving out a
/// cause whose text the message before it already includes (many errors
/// print their source in their own message as well).
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut last = text.clone();
    let mut cause = e.source();
    while let Some(c) = cause {
        let t = c.to_string();
        if !last.contains(&t) {
            text.push_str(": ");
            text.push_str(&t);
        }
        last = t;
        cause = c.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("{0}")]
    struct Plain(String, #[source] Option<Box<Plain>>);

    fn chain(parts: &[&str]) -> Plain {
        parts
            .iter()
            .rev()
            .fold(None, |inner, p| {
                Some(Plain(p.to_string(), inner.map(Box::new)))
            })
            .unwrap()
    }

    #[test]
    fn error_chain_joins_causes_and_skips_repeats() {
        assert_eq!(error_chain(&chain(&["a", "b", "c"])), "a: b: c");
        // The outer message already quotes its cause.
        let io = "No such file or directory (os error 2)";
        let outer = format!("cannot read m.csv: {io}");
        assert_eq!(error_chain(&chain(&[&outer, io])), outer);
        assert_eq!(error_chain(&chain(&[io, io])), io);
        assert_eq!(error_chain(&chain(&["only"])), "only");
    }

    #[test]
    fn formats_parse_and_auto_follows_the_terminal() {
        assert_eq!("json".parse::<LogFormat>(), Ok(LogFormat::Json));
        assert!("xml"
            .parse::<LogFormat>()
            .unwrap_err()
            .contains("auto, json or text"));
        assert!(LogFormat::Auto.is_json(false));
        assert!(!LogFormat::Auto.is_json(true));
        assert!(LogFormat::Json.is_json(true));
        assert!(!LogFormat::Text.is_json(false));
    }
}
