//! libtorch's error messages made readable for users.

/// libtorch's message without the C++ stack trace it appends ("Exception
/// raised from ... frame #0: ..."), which says nothing to a user.
pub fn without_backtrace(message: &str) -> String {
    let cut = ["Exception raised from", "frame #0"]
        .iter()
        .filter_map(|m| message.find(m))
        .min()
        .unwrap_or(message.len());
    message[..cut].trim_end().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn libtorch_messages_lose_their_cpp_stack_trace() {
        let raw = "open file failed because of errno 2 on fopen\nException raised from RAIIFile at ../caffe2/serialize/file_adapter.cc:30 (most recent call first):\nframe #0: c10::Error::Error";
        assert_eq!(
            without_backtrace(raw),
            "open file failed because of errno 2 on fopen"
        );
        assert_eq!(without_backtrace("plain"), "plain");
    }
}
