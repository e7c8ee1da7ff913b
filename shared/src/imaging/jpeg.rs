//! Whether a JPEG file is whole.
//!
//! The `image` crate's JPEG decoder is lenient: when the data runs out it
//! fills the rest of the picture with mid-gray and succeeds. A radiograph cut
//! short by an interrupted copy would then train and be scored with its lower
//! part gray. So before decoding, the file's marker structure is walked
//! (ITU-T T.81 B.1): segments by their lengths, entropy-coded data up to the
//! next marker (`FF 00` is a stuffed byte, `FF D0`-`FF D7` restart markers),
//! until the end-of-image marker `FF D9`. Bytes after it are ignored, as
//! decoders do. Only running out of bytes is judged here; any other oddity
//! is left to the decoder, so files it reads are not refused on a guess.

/// Why `bytes` (starting with the JPEG start-of-image marker) is cut short,
/// or `None` when its end-of-image marker is reached or its structure is
/// something this walk does not judge.
pub fn truncation(bytes: &[u8]) -> Option<&'static str> {
    const CUT_IN_SEGMENT: &str = "the file ends inside a segment (truncated JPEG)";
    const CUT_IN_SCAN: &str = "the file ends inside the image data, before the end-of-image \
         marker (truncated JPEG, or written without the marker: re-save it if the image is whole)";
    if bytes.get(..2) != Some(&[0xFF, 0xD8]) {
        return None;
    }
    let n = bytes.len();
    let mut i = 2;
    loop {
        // A marker: 0xFF, any fill bytes 0xFF, then the code.
        if i >= n {
            return Some(CUT_IN_SEGMENT);
        }
        if bytes[i] != 0xFF {
            return None;
        }
        while i < n && bytes[i] == 0xFF {
            i += 1;
        }
        let Some(&code) = bytes.get(i) else {
            return Some(CUT_IN_SEGMENT);
        };
        i += 1;
        match code {
            0xD9 => return None,
            // Standalone markers: no length.
            0x01 | 0xD0..=0xD8 => continue,
            // JPEG-LS stuffs its scans differently: the decoder refuses it.
            0xF7 => return None,
            _ => {}
        }
        let Some(len) = bytes.get(i..i + 2) else {
            return Some(CUT_IN_SEGMENT);
        };
        let len = usize::from(u16::from_be_bytes([len[0], len[1]]));
        if len < 2 {
            return None;
        }
        i += len;
        if i > n {
            return Some(CUT_IN_SEGMENT);
        }
        if code == 0xDA {
            // Start of scan: entropy-coded data up to the next marker.
            loop {
                if i + 1 >= n {
                    return Some(CUT_IN_SCAN);
                }
                if bytes[i] == 0xFF && !matches!(bytes[i + 1], 0x00 | 0xD0..=0xD7 | 0xFF) {
                    break;
                }
                i += if bytes[i] == 0xFF && bytes[i + 1] != 0xFF {
                    2
                } else {
                    1
                };
            }
        }
    }
}

/// The (width, height) a JPEG's frame header states, found by walking its
/// segments from the start-of-image marker to the first start-of-frame
/// (any of SOF0-SOF15 but DHT, JPG and DAC); `None` when there is none
/// before the first scan, or the bytes are not a JPEG.
pub fn frame_size(bytes: &[u8]) -> Option<(u32, u32)> {
    if bytes.get(..2) != Some(&[0xFF, 0xD8]) {
        return None;
    }
    let mut i = 2;
    loop {
        if *bytes.get(i)? != 0xFF {
            return None;
        }
        while *bytes.get(i)? == 0xFF {
            i += 1;
        }
        let code = *bytes.get(i)?;
        i += 1;
        match code {
            0x01 | 0xD0..=0xD8 => continue,
            0xD9 | 0xDA => return None,
            _ => {}
        }
        let len = bytes.get(i..i + 2)?;
        let len = usize::from(u16::from_be_bytes([len[0], len[1]]));
        if matches!(code, 0xC0..=0xCF) && !matches!(code, 0xC4 | 0xC8 | 0xCC) {
            // Length (2), precision (1), height (2), width (2).
            let f = bytes.get(i + 3..i + 7)?;
            let height = u32::from(u16::from_be_bytes([f[0], f[1]]));
            let width = u32::from(u16::from_be_bytes([f[2], f[3]]));
            // Height 0: given later by a DNL marker, not known here.
            return (height > 0 && width > 0).then_some((width, height));
        }
        if len < 2 {
            return None;
        }
        i += len;
    }
}

#[cfg(test)]
mod tests {
    use super::{frame_size, truncation};

    #[test]
    fn the_frame_size_is_read_from_the_first_start_of_frame() {
        // SOI, an APP0 of 4 bytes, SOF0 (8-bit, 300 high, 400 wide), SOS.
        let mut jpeg = vec![0xFF, 0xD8, 0xFF, 0xE0, 0x00, 0x04, 0xAA, 0xBB];
        jpeg.extend([
            0xFF, 0xC0, 0x00, 0x0B, 0x08, 0x01, 0x2C, 0x01, 0x90, 0x01, 0x01, 0x11, 0x00,
        ]);
        jpeg.extend([0xFF, 0xDA, 0x00, 0x02]);
        assert_eq!(frame_size(&jpeg), Some((400, 300)));
        // A Huffman table (FF C4) is not a frame; nothing before the scan.
        let no_frame = [0xFF, 0xD8, 0xFF, 0xC4, 0x00, 0x02, 0xFF, 0xDA, 0x00, 0x02];
        assert_eq!(frame_size(&no_frame), None);
        assert_eq!(frame_size(b"not a jpeg"), None);
        assert_eq!(frame_size(&jpeg[..12]), None, "cut inside the frame header");
    }

    /// A baseline JPEG made by the `image` crate.
    fn jpeg(width: u32, height: u32) -> Vec<u8> {
        let img = image::GrayImage::from_fn(width, height, |x, y| {
            image::Luma([((x * 7 + y * 13) % 251) as u8])
        });
        let mut out = Vec::new();
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 90)
            .encode_image(&img)
            .unwrap();
        out
    }

    #[test]
    fn a_whole_jpeg_passes_with_or_without_bytes_after_its_end() {
        let whole = jpeg(64, 48);
        assert_eq!(truncation(&whole), None);
        let mut padded = whole.clone();
        padded.extend_from_slice(&[0, 0, 0xFF, 0xDA, 1, 2]);
        assert_eq!(truncation(&padded), None);
    }

    #[test]
    fn every_cut_of_a_jpeg_is_found() {
        let whole = jpeg(40, 40);
        for cut in 2..whole.len() {
            assert!(
                truncation(&whole[..cut]).is_some(),
                "a JPEG cut to {cut} of {} bytes passed",
                whole.len()
            );
        }
        // Cut inside the scan, and inside a header segment.
        assert!(truncation(&whole[..whole.len() - 10])
            .is_some_and(|w| w.contains("inside the image data")));
        assert!(truncation(&whole[..10]).is_some_and(|w| w.contains("inside a segment")));
    }

    #[test]
    fn stuffed_bytes_restart_markers_and_fill_bytes_are_scan_data() {
        // SOI, a minimal SOS header, scan data with FF 00, RST0 and fill
        // bytes before the EOI marker.
        let mut bytes = vec![0xFF, 0xD8, 0xFF, 0xDA, 0x00, 0x03, 0x00];
        bytes.extend_from_slice(&[0x12, 0xFF, 0x00, 0x34, 0xFF, 0xD0, 0x56, 0xFF, 0xFF, 0xD9]);
        assert_eq!(truncation(&bytes), None);
        // The same without its EOI: cut inside the scan.
        assert!(truncation(&bytes[..bytes.len() - 3]).is_some());
    }

    proptest::proptest! {
        #[test]
        fn any_bytes_after_the_start_marker_are_judged_without_panicking(
            body in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300),
            markers in proptest::collection::vec(0usize..300, 0..20),
        ) {
            // Marker bytes sprinkled in, so the walk gets past the first segment.
            let mut bytes = vec![0xFF, 0xD8];
            bytes.extend_from_slice(&body);
            for (k, at) in markers.iter().enumerate() {
                if *at + 2 < bytes.len() {
                    bytes[at + 2] = if k % 2 == 0 { 0xFF } else { 0xDA };
                }
            }
            let _ = truncation(&bytes);
        }
    }

    #[test]
    fn structure_it_does_not_know_is_left_to_the_decoder() {
        // JPEG-LS (SOF55): its scans are stuffed differently.
        assert_eq!(
            truncation(&[0xFF, 0xD8, 0xFF, 0xF7, 0x00, 0x02, 0xFF, 0x7F]),
            None
        );
        assert_eq!(truncation(b"not a jpeg"), None);
        // A byte where a marker should be.
        assert_eq!(truncation(&[0xFF, 0xD8, 0x00, 0x01]), None);
    }
}
