//! A walk over a DICOM file's element headers that checks every stated
//! length fits in the file, before `dicom-object` reads it. Its parser
//! allocates and zero-fills an element's stated length before reading the
//! value: one damaged length field in a 200-byte file (4 GB stated) cost
//! 4 GB of memory and about 10 s, per image and decoding thread.
//!
//! The walk reads headers only (PS3.5 section 7): explicit VR (a 2- or a
//! 4-byte length by VR) or implicit VR, little or big endian; items and
//! delimiters (group FFFE) always have a 4-byte length. It descends into
//! sequences and items (their contents are headers too) and skips the
//! fragments of encapsulated pixel data. It does not judge anything else:
//! what it lets through, `dicom-object` still reads and may refuse.

use dicom_core::VR;

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

/// What the walk found wrong, at which byte of the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Damage {
    /// A length that runs past the end of the file.
    Overrun {
        at: usize,
        tag: (u16, u16),
        length: u32,
        left: usize,
    },
    /// Two bytes where an explicit VR belongs that name none.
    NoVr { at: usize, tag: (u16, u16) },
}

impl std::fmt::Display for Damage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Damage::Overrun {
                at,
                tag: (g, e),
                length,
                left,
            } => write!(
                f,
                "the DICOM element ({g:04X},{e:04X}) at byte {at} says its value is {length} \
                 bytes long, but the file has {left} bytes left (a cut-short copy, or a \
                 damaged length)"
            ),
            Damage::NoVr { at, tag: (g, e) } => write!(
                f,
                "the DICOM element ({g:04X},{e:04X}) at byte {at} has no valid value \
                 representation (a damaged file, or one in another transfer syntax than it says)"
            ),
        }
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

/// Walk the headers from `start` in `encoding`, while `keep_on` says yes to
/// the next element's group (the meta group: `|g| g == 2`). Returns where
/// the walk stopped: the end of the file, the first element `keep_on`
/// refused, a header cut short, or an element it cannot look into (an
/// undefined-length UN, whose contents are implicit VR).
pub(crate) fn walk(
    bytes: &[u8],
    start: usize,
    encoding: Encoding,
    keep_on: impl Fn(u16) -> bool,
) -> Result<usize, Damage> {
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
            if length as usize > left {
                Err(Damage::Overrun {
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
            match element {
                // An item: a fragment is skipped, a data set's item entered.
                0xE000 if length != UNDEFINED => {
                    fits(8, length)?;
                    at += 8 + if fragments { length as usize } else { 0 };
                }
                // The end of a sequence (or of the pixel data's fragments).
                0xE0DD => {
                    fragments = false;
                    at += 8;
                }
                _ => at += 8,
            }
            continue;
        }
        if !keep_on(group) {
            return Ok(at);
        }
        let (header, length, sequence) = if encoding.explicit_vr {
            let Some(vr_bytes) = bytes.get(at + 4..at + 6) else {
                return Ok(at);
            };
            let Some(vr) = VR::from_binary([vr_bytes[0], vr_bytes[1]]) else {
                return Err(Damage::NoVr { at, tag });
            };
            let length = if long_length(vr) {
                encoding.u32_at(bytes, at + 8)
            } else {
                encoding.u16_at(bytes, at + 6).map(u32::from)
            };
            let Some(length) = length else {
                return Ok(at);
            };
            if vr == VR::UN && length == UNDEFINED {
                return Ok(at);
            }
            (if long_length(vr) { 12 } else { 8 }, length, vr == VR::SQ)
        } else {
            let Some(length) = encoding.u32_at(bytes, at + 4) else {
                return Ok(at);
            };
            // Without VRs a sequence shows by its first item's tag.
            let item_first = length >= 8
                && encoding.u16_at(bytes, at + 8) == Some(0xFFFE)
                && encoding.u16_at(bytes, at + 10) == Some(0xE000);
            (8, length, item_first)
        };
        if length == UNDEFINED {
            // A sequence, or encapsulated pixel data (fragments).
            fragments = tag == (0x7FE0, 0x0010);
            at += header;
        } else {
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
        assert_eq!(walk(&b, 0, LE, |_| true), Ok(b.len()));
    }

    #[test]
    fn a_length_past_the_end_is_found_with_its_place() {
        let mut b = el(0x0008, 0x0016, b"UI", b"1.2.3\0");
        let second = b.len();
        b.extend(el(0x7FE0, 0x0010, b"OW", &[0; 8]));
        set_u32(&mut b, second + 8, 0xF000_0000);
        let err = walk(&b, 0, LE, |_| true).unwrap_err();
        assert_eq!(
            err,
            Damage::Overrun {
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
        assert!(matches!(
            walk(&b, 0, LE, |_| true),
            Err(Damage::Overrun { .. })
        ));
        // And a VR that is none.
        let mut b = el(0x0008, 0x0016, b"UI", b"1.2.3\0");
        b[4] = b'x';
        assert_eq!(
            walk(&b, 0, LE, |_| true),
            Err(Damage::NoVr {
                at: 0,
                tag: (8, 0x16)
            })
        );
    }

    #[test]
    fn sequences_and_items_are_entered_and_their_contents_checked() {
        // A defined-length sequence holding one item holding one element
        // whose length is damaged.
        let inner = el(0x0008, 0x0100, b"SH", b"CODE");
        let mut seq_value = item(inner.len() as u32);
        seq_value.extend(&inner);
        let mut b = el(0x0008, 0x1140, b"SQ", &seq_value);
        assert_eq!(walk(&b, 0, LE, |_| true), Ok(b.len()));
        let inner_at = b.len() - inner.len();
        b[inner_at + 6] = 0xFF;
        assert!(matches!(
            walk(&b, 0, LE, |_| true),
            Err(Damage::Overrun {
                tag: (8, 0x100),
                ..
            })
        ));
        // Implicit VR: the sequence shows by its first item.
        let mut b = [0x0008u16.to_le_bytes(), 0x1140u16.to_le_bytes()].concat();
        let mut value = item(12);
        value.extend([0x08, 0, 0x00, 0x01, 4, 0, 0, 0]);
        value.extend(b"CODE");
        b.extend((value.len() as u32).to_le_bytes());
        b.extend(&value);
        assert_eq!(walk(&b, 0, IMPLICIT, |_| true), Ok(b.len()));
        let n = b.len();
        set_u32(&mut b, n - 8, 1 << 30);
        assert!(walk(&b, 0, IMPLICIT, |_| true).is_err());
    }

    #[test]
    fn fragments_of_encapsulated_pixel_data_are_skipped_not_read_as_headers() {
        let mut b = [0x7FE0u16.to_le_bytes(), 0x0010u16.to_le_bytes()].concat();
        b.extend(b"OB\0\0");
        b.extend(UNDEFINED.to_le_bytes());
        b.extend(item(0)); // the offset table
                           // A fragment whose bytes would read as a huge element.
        let fragment = [0x08, 0, 0x16, 0, b'O', b'B', 0, 0, 0xFF, 0xFF, 0xFF, 0x7F];
        b.extend(item(fragment.len() as u32));
        b.extend(fragment);
        b.extend([0xFE, 0xFF, 0xDD, 0xE0, 0, 0, 0, 0]);
        assert_eq!(walk(&b, 0, LE, |_| true), Ok(b.len()));
        // A fragment longer than the file.
        let at = b.len() - 8 - fragment.len() - 4;
        set_u32(&mut b, at, 1000);
        assert!(matches!(
            walk(&b, 0, LE, |_| true),
            Err(Damage::Overrun {
                tag: (0xFFFE, 0xE000),
                ..
            })
        ));
    }

    #[test]
    fn the_walk_stops_where_told_and_at_a_cut_header() {
        let mut b = el(0x0002, 0x0010, b"UI", b"1.2.840.10008.1.2\0");
        let meta_end = b.len();
        b.extend(el(0x0008, 0x0016, b"UI", b"1.2.3\0"));
        assert_eq!(walk(&b, 0, LE, |g| g == 2), Ok(meta_end));
        assert_eq!(walk(&b[..meta_end + 5], 0, LE, |_| true), Ok(meta_end));
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
        assert_eq!(walk(&b, 0, be, |_| true), Ok(b.len()));
        assert!(
            walk(&b, 0, LE, |_| true).is_err(),
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
            if let Ok(end) = walk(&bytes, 0, encoding, |_| true) {
                proptest::prop_assert!(end <= bytes.len());
            }
        }
    }
}
