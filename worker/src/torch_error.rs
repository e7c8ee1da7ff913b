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

/// A weights file's reading error, with what the safetensors library's
/// terse names mean (a truncated copy, a file of another kind).
pub fn weights_message(message: &str) -> String {
    let text = without_backtrace(message);
    let meaning = if text.contains("MetadataIncompleteBuffer") {
        " (the file's size is not what its header says: cut off, e.g. by an interrupted copy, or with bytes added)"
    } else if ["HeaderTooSmall", "InvalidHeaderLength"]
        .iter()
        .any(|n| text.contains(n))
    {
        " (the file is too short to hold a safetensors header: empty or cut off)"
    } else if ["HeaderTooLarge", "InvalidHeader"]
        .iter()
        .any(|n| text.contains(n))
    {
        " (not a safetensors file: its first bytes are not a safetensors header)"
    } else {
        ""
    };
    format!("{text}{meaning}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn safetensors_error_names_are_explained() {
        assert!(
            weights_message("safetensors error: MetadataIncompleteBuffer")
                .contains("cut off, e.g. by an interrupted copy, or with bytes added")
        );
        for short in ["HeaderTooSmall", "InvalidHeaderLength"] {
            assert!(weights_message(short).contains("too short"), "{short}");
        }
        assert!(
            weights_message("safetensors error: HeaderTooLarge").contains("not a safetensors file")
        );
        assert_eq!(weights_message("shape mismatch"), "shape mismatch");
    }

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
