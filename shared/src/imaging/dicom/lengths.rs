//! A walk over a DICOM file's element headers that checks every stated
//! length fits in the file, before `dicom-object` reads it. Its parser
//! allocates and zero-fills an element's stated length before reading the
//! value: one damaged length field in a 200-byte file (4 GB stated) cost
//! 4 GB of memory and about 10 s, per image and decoding thread.
//!
//! The walk reads headers as `dicom-parser` does (PS3.5 section 7):
//! explicit VR (a 2- or a 4-byte length by VR; a VR it does not know is
//! UN) or implicit VR (the VR from the data dictionary), little or big
//! endian; items and delimiters (group FFFE) always have a 4-byte length.
//! It descends into sequences, undefined-length elements and items (their
//! contents are headers too) and skips the fragments of encapsulated pixel
//! data. It does not judge anything else: what it lets through,
//! `dicom-object` still reads and may refuse. A deflated data set is not
//! walked (its headers are compressed).

use dicom_core::dictionary::{DataDictionary, DataDictionaryEntry};
use dicom_core::VR;
use dicom_dictionary_std::StandardDataDictionary;

/// How a data set is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Encoding {
    pub explicit_vr: bool,
    pub big_endian: bool,
}

impl Encoding {
    /// The file meta group's encoding (always explicit VR little endian).
    pub(crate) const META: Encoding = Encoding {
        explicit_vr: true,
        big_endian: false,
    };

    fn u16_at(self, b: &[u8], at: usize) -> Option<u16> {
        let two: [u8; 2] = b.get(at..at + 2)?.try_into().ok()?;
        Some(if self.big_endian {
            u16::from_be_bytes(two)
        } else {
            u16::from_le_bytes(two)
        })
    }

    fn u32_at(self, b: &[u8], at: usize) -> Option<u32> {
        let four: [u8; 4] = b.get(at..at + 4)?.try_into().ok()?;
        Some(if self.big_endian {
            u32::from_be_bytes(four)
        } else {
            u32::from_le_bytes(four)
        })
    }
}

/// A length that runs past the end of the file, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Overrun {
    pub at: usize,
    pub tag: (u16, u16),
    pub length: u32,
    pub left: usize,
}

impl std::fmt::Display for Overrun {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let Overrun {
            at,
            tag: (g, e),
            length,
            left,
        } = self;
        write!(
            f,
            "the DICOM element ({g:04X},{e:04X}) at byte {at} says its value is {length} bytes \
             long, but the file has {left} bytes left (a cut-short copy, or a damaged length)"
        )
    }
}

/// Undefined length.
const UNDEFINED: u32 = 0xFFFF_FFFF;

/// Explicit VRs with a 4-byte length (after two reserved bytes).
fn long_length(vr: VR) -> bool {
    use VR::*;
    matches!(
        vr,
        OB | OD | OF | OL | OV | OW | SQ | SV | UC | UN | UR | UT | UV
    )
}

/// The VR an implicit-VR reader gives `tag`: OW for pixel and overlay
/// data, else the dictionary's (UN for a tag it does not know).
fn implicit_vr(tag: (u16, u16)) -> VR {
    if tag == (0x7FE0, 0x0010) || (tag.0 >> 8 == 0x60 && tag.1 == 0x3000) {
        return VR::OW;
    }
    StandardDataDictionary
        .by_tag(dicom_core::Tag(tag.0, tag.1))
        .map_or(VR::UN, |e| e.vr().relaxed())
}

/// Walk the headers from `start` in `encoding`, while `keep_on` says yes to
/// the next element's position and group. Returns where the walk stopped:
/// the end of the file, the first element `keep_on` refused, or a header
/// cut short.
pub(crate) fn walk(
    bytes: &[u8],
    start: usize,
    encoding: Encoding,
    keep_on: impl Fn(usize, u16) -> bool,
) -> Result<usize, Overrun> {
    let mut at = start;
    // Inside encapsulated pixel data: items are fragments, skipped whole.
    let mut fragments = false;
    loop {
        let (Some(group), Some(element)) =
            (encoding.u16_at(bytes, at), encoding.u16_at(bytes, at + 2))
        else {
            return Ok(at);
        };
        let tag = (group, element);
        let fits = |header: usize, length: u32| {
            let left = bytes.len().saturating_sub(at + header);
            if length != UNDEFINED && length as usize > left {
                Err(Overrun {
                    at,
                    tag,
                    length,
                    left,
                })
            } else {
                Ok(())
            }
        };
        if group == 0xFFFE {
            let Some(length) = encoding.u32_at(bytes, at + 4) else {
                return Ok(at);
            };
            fits(8, length)?;
            at += 8;
            match element {
                // An item: a fragment is skipped, a data set's item (or
                // one of undefined length) entered.
                0xE000 if fragments && length != UNDEFINED => at += length as usize,
                0xE000 | 0xE00D => {}
                // The end of a sequence (or of the pixel data's fragments).
                0xE0DD => fragments = false,
                // Where an element belongs, the reader takes any other tag
                // of the group as an element and reads its value.
                _ if length != UNDEFINED => at += length as usize,
                _ => {}
            }
            continue;
        }
        if !keep_on(at, group) {
            return Ok(at);
        }
        let (header, length, vr) = if encoding.explicit_vr {
            let Some(vr_bytes) = bytes.get(at + 4..at + 6) else {
                return Ok(at);
            };
            // As the reader: a VR it does not know is UN.
            let vr = VR::from_binary([vr_bytes[0], vr_bytes[1]]).unwrap_or(VR::UN);
            let length = if long_length(vr) {
                encoding.u32_at(bytes, at + 8)
            } else {
                encoding.u16_at(bytes, at + 6).map(u32::from)
            };
            let Some(length) = length else {
                return Ok(at);
            };
            (if long_length(vr) { 12 } else { 8 }, length, vr)
        } else {
            let Some(length) = encoding.u32_at(bytes, at + 4) else {
                return Ok(at);
            };
            (8, length, implicit_vr(tag))
        };
        if length == UNDEFINED {
            // A sequence (any undefined-length element but encapsulated
            // pixel data is read as one), or pixel data's fragments.
            fragments = tag == (0x7FE0, 0x0010) && vr != VR::SQ;
            at += header;
        } else {
            let sequence = vr == VR::SQ;
            fits(header, length)?;
            at += header + if sequence { 0 } else { length as usize };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LE: Encoding = Encoding {
        explicit_vr: true,
        big_endian: false,
    };
    const IMPLICIT: Encoding = Encoding {
        explicit_vr: false,
        big_endian: false,
    };

    /// An explicit VR little-endian element.
    fn el(group: u16, element: u16, vr: &[u8; 2], value: &[u8]) -> Vec<u8> {
        let mut b = [group.to_le_bytes(), element.to_le_bytes()].concat();
        b.extend_from_slice(vr);
        if long_length(VR::from_binary(*vr).unwrap()) {
            b.extend_from_slice(&[0, 0]);
            b.extend_from_slice(&(value.len() as u32).to_le_bytes());
        } else {
            b.extend_from_slice(&(value.len() as u16).to_le_bytes());
        }
        b.extend_from_slice(value);
        b
    }

    fn item(length: u32) -> Vec<u8> {
        [
            &0xFFFEu16.to_le_bytes()[..],
            &0xE000u16.to_le_bytes(),
            &length.to_le_bytes(),
        ]
        .concat()
    }

    fn set_u32(b: &mut [u8], at: usize, v: u32) {
        b[at..at + 4].copy_from_slice(&v.to_le_bytes());
    }

    #[test]
    fn a_whole_data_set_is_walked_to_its_end() {
        let mut b = el(0x0008, 0x0016, b"UI", b"1.2.3\0");
        b.extend(el(0x0028, 0x0010, b"US", &[2, 0]));
        b.extend(el(0x7FE0, 0x0010, b"OW", &[0; 8]));
        assert_eq!(walk(&b, 0, LE, |_, _| true), Ok(b.len()));
    }

    #[test]
    fn a_length_past_the_end_is_found_with_its_place() {
        let mut b = el(0x0008, 0x0016, b"UI", b"1.2.3\0");
        let second = b.len();
        b.extend(el(0x7FE0, 0x0010, b"OW", &[0; 8]));
        set_u32(&mut b, second + 8, 0xF000_0000);
        let err = walk(&b, 0, LE, |_, _| true).unwrap_err();
        assert_eq!(
            err,
            Overrun {
                at: second,
                tag: (0x7FE0, 0x0010),
                length: 0xF000_0000,
                left: 8
            }
        );
        assert!(err.to_string().contains("(7FE0,0010) at byte 14"), "{err}");
        // A 2-byte length too.
        let mut b = el(0x0008, 0x0016, b"UI", b"1.2.3\0");
        b[6] = 200;
        assert!(walk(&b, 0, LE, |_, _| true).is_err());
        // A VR that is none is read as UN, as the reader does: a 4-byte
        // length after two reserved bytes, here the value's "3" and NUL and
        // the next element's first bytes.
        let mut b = el(0x0008, 0x0016, b"UI", b"1.2.3\0");
        b.extend(el(0x0028, 0x0010, b"US", &[2, 0]));
        b[4] = b'x';
        let err = walk(&b, 0, LE, |_, _| true).unwrap_err();
        assert_eq!((err.at, err.tag), (0, (8, 0x16)));
        // Zero padding at the end of a file reads as zero-length elements.
        let mut b = el(0x0008, 0x0016, b"UI", b"1.2.3\0");
        b.extend([0; 12]);
        assert_eq!(walk(&b, 0, LE, |_, _| true), Ok(b.len()));
    }

    #[test]
    fn delimiters_and_stray_items_have_their_lengths_checked() {
        let mut b = el(0x0008, 0x0016, b"UI", b"1.2.3\0");
        b.extend([0xFE, 0xFF, 0xDD, 0xE0]);
        b.extend(0x4000_0000u32.to_le_bytes());
        assert!(walk(&b, 0, LE, |_, _| true).is_err());
        // Another tag of group FFFE where an element belongs: its value is
        // read, so skipped.
        let mut b = [0xFE, 0xFF, 0x10, 0x00].to_vec();
        b.extend(4u32.to_le_bytes());
        b.extend(*b"abcd");
        b.extend(el(0x0028, 0x0010, b"US", &[2, 0]));
        assert_eq!(walk(&b, 0, LE, |_, _| true), Ok(b.len()));
    }

    #[test]
    fn sequences_and_items_are_entered_and_their_contents_checked() {
        // A defined-length sequence holding one item holding one element
        // whose length is damaged.
        let inner = el(0x0008, 0x0100, b"SH", b"CODE");
        let mut seq_value = item(inner.len() as u32);
        seq_value.extend(&inner);
        let mut b = el(0x0008, 0x1140, b"SQ", &seq_value);
        assert_eq!(walk(&b, 0, LE, |_, _| true), Ok(b.len()));
        let inner_at = b.len() - inner.len();
        b[inner_at + 6] = 0xFF;
        assert_eq!(walk(&b, 0, LE, |_, _| true).unwrap_err().tag, (8, 0x100));
        // An undefined-length UN is entered, as the reader enters it.
        let mut b = [0x0009u16.to_le_bytes(), 0x1010u16.to_le_bytes()].concat();
        b.extend(b"UN\0\0");
        b.extend(UNDEFINED.to_le_bytes());
        b.extend(item(UNDEFINED));
        let inner = b.len() + 8;
        b.extend(el(0x0009, 0x0001, b"OB", &[0; 4]));
        b.extend([0xFE, 0xFF, 0x0D, 0xE0, 0, 0, 0, 0]);
        b.extend([0xFE, 0xFF, 0xDD, 0xE0, 0, 0, 0, 0]);
        assert_eq!(walk(&b, 0, LE, |_, _| true), Ok(b.len()));
        set_u32(&mut b, inner, 1 << 31);
        assert_eq!(walk(&b, 0, LE, |_, _| true).unwrap_err().tag, (9, 1));
        // Implicit VR: a sequence by the dictionary (Referenced Image
        // Sequence).
        let mut b = [0x0008u16.to_le_bytes(), 0x1140u16.to_le_bytes()].concat();
        let mut value = item(12);
        value.extend([0x08, 0, 0x00, 0x01, 4, 0, 0, 0]);
        value.extend(b"CODE");
        b.extend((value.len() as u32).to_le_bytes());
        b.extend(&value);
        assert_eq!(walk(&b, 0, IMPLICIT, |_, _| true), Ok(b.len()));
        let n = b.len();
        set_u32(&mut b, n - 8, 1 << 30);
        assert!(walk(&b, 0, IMPLICIT, |_, _| true).is_err());
        // Pixel data whose first samples happen to spell an item tag is
        // still pixel data, skipped whole.
        let mut b = [0x7FE0u16.to_le_bytes(), 0x0010u16.to_le_bytes()].concat();
        b.extend(12u32.to_le_bytes());
        b.extend([0xFE, 0xFF, 0x00, 0xE0, 0xFF, 0xFF, 0xFF, 0x0F, 1, 2, 3, 4]);
        assert_eq!(walk(&b, 0, IMPLICIT, |_, _| true), Ok(b.len()));
    }

    #[test]
    fn fragments_of_encapsulated_pixel_data_are_skipped_not_read_as_headers() {
        let mut b = [0x7FE0u16.to_le_bytes(), 0x0010u16.to_le_bytes()].concat();
        b.extend(b"OB\0\0");
        b.extend(UNDEFINED.to_le_bytes());
        // The offset table, then a fragment whose bytes would read as a
        // huge element.
        b.extend(item(0));
        let fragment = [0x08, 0, 0x16, 0, b'O', b'B', 0, 0, 0xFF, 0xFF, 0xFF, 0x7F];
        b.extend(item(fragment.len() as u32));
        b.extend(fragment);
        b.extend([0xFE, 0xFF, 0xDD, 0xE0, 0, 0, 0, 0]);
        assert_eq!(walk(&b, 0, LE, |_, _| true), Ok(b.len()));
        // A fragment longer than the file.
        let at = b.len() - 8 - fragment.len() - 4;
        set_u32(&mut b, at, 1000);
        assert_eq!(
            walk(&b, 0, LE, |_, _| true).unwrap_err().tag,
            (0xFFFE, 0xE000)
        );
    }

    #[test]
    fn the_walk_stops_where_told_and_at_a_cut_header() {
        let mut b = el(0x0002, 0x0010, b"UI", b"1.2.840.10008.1.2\0");
        let meta_end = b.len();
        b.extend(el(0x0008, 0x0016, b"UI", b"1.2.3\0"));
        assert_eq!(walk(&b, 0, LE, |_, g| g == 2), Ok(meta_end));
        assert_eq!(walk(&b[..meta_end + 5], 0, LE, |_, _| true), Ok(meta_end));
    }

    #[test]
    fn big_endian_lengths_are_read_big_endian() {
        let be = Encoding {
            explicit_vr: true,
            big_endian: true,
        };
        let mut b = [0x0008u16.to_be_bytes(), 0x0016u16.to_be_bytes()].concat();
        b.extend(b"UI");
        b.extend(6u16.to_be_bytes());
        b.extend(b"1.2.3\0");
        assert_eq!(walk(&b, 0, be, |_, _| true), Ok(b.len()));
        assert!(
            walk(&b, 0, LE, |_, _| true).is_err(),
            "read little endian: 1536 bytes"
        );
    }

    proptest::proptest! {
        #[test]
        fn any_bytes_are_walked_without_panicking(
            bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..400),
            explicit_vr in proptest::prelude::any::<bool>(),
            big_endian in proptest::prelude::any::<bool>(),
        ) {
            let encoding = Encoding { explicit_vr, big_endian };
            if let Ok(end) = walk(&bytes, 0, encoding, |_, _| true) {
                proptest::prop_assert!(end <= bytes.len());
            }
        }
    }
}
