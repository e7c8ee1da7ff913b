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
//! `dicom-object` still reads and may refuse. A deflated data set is
//! walked in its inflated copy (`super::inflate_capped`).

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

    /// Explicit VR little endian (also a deflated data set's, inflated).
    pub(crate) const EXPLICIT_LE: Encoding = Encoding::META;

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

/// One element's header as the reader takes it.
struct Header {
    tag: (u16, u16),
    vr: VR,
    length: u32,
    /// Bytes of the header.
    size: usize,
}

/// The header at `at`, or `None` where the file ends inside it. Group FFFE
/// (items and delimiters) has no VR in either encoding.
fn header_at(bytes: &[u8], at: usize, encoding: Encoding) -> Option<Header> {
    let tag = (encoding.u16_at(bytes, at)?, encoding.u16_at(bytes, at + 2)?);
    if tag.0 == 0xFFFE || !encoding.explicit_vr {
        let vr = if tag.0 == 0xFFFE {
            VR::UN
        } else {
            implicit_vr(tag)
        };
        let length = encoding.u32_at(bytes, at + 4)?;
        return Some(Header {
            tag,
            vr,
            length,
            size: 8,
        });
    }
    let vr_bytes = bytes.get(at + 4..at + 6)?;
    // As the reader: a VR it does not know is UN.
    let vr = VR::from_binary([vr_bytes[0], vr_bytes[1]]).unwrap_or(VR::UN);
    let (length, size) = if long_length(vr) {
        (encoding.u32_at(bytes, at + 8)?, 12)
    } else {
        (u32::from(encoding.u16_at(bytes, at + 6)?), 8)
    };
    Some(Header {
        tag,
        vr,
        length,
        size,
    })
}

/// Refuse a defined `length` of the element at `at` that runs past the end.
fn fits(bytes: &[u8], at: usize, h: &Header) -> Result<(), Overrun> {
    let left = bytes.len().saturating_sub(at + h.size);
    if h.length != UNDEFINED && h.length as usize > left {
        return Err(Overrun {
            at,
            tag: h.tag,
            length: h.length,
            left,
        });
    }
    Ok(())
}

/// Walk the file meta group from `start` (explicit VR little endian) as
/// its reader reads it: element after element, each value skipped whole
/// (a sequence's too), up to `end` (where its group length says it ends)
/// or, without one, while the group is 0002. Returns where the data set
/// starts, or where the walk stopped (an undefined length, a header cut
/// short).
pub(crate) fn walk_meta(bytes: &[u8], start: usize, end: Option<usize>) -> Result<usize, Overrun> {
    let mut at = start;
    while let Some(h) = header_at(bytes, at, Encoding::META) {
        let more = match end {
            Some(end) => at < end,
            None => h.tag.0 == 2,
        };
        if !more || h.length == UNDEFINED {
            break;
        }
        fits(bytes, at, &h)?;
        at += h.size + h.length as usize;
    }
    Ok(at)
}

/// Where the walk of a data set is, as the reader's own state.
enum Within {
    /// A data set: the file's (no end), or an item's (its end, if defined).
    DataSet { end: Option<usize> },
    /// A sequence's items (its end, if defined).
    Sequence { end: Option<usize> },
    /// Encapsulated pixel data's fragments.
    Fragments,
}

/// Walk a data set from `start` in `encoding`, checking every length the
/// reader will allocate. Returns where the walk stopped: the end of the
/// file, a header cut short, or something the reader refuses anyway (a
/// sequence holding other than items).
pub(crate) fn walk(bytes: &[u8], start: usize, encoding: Encoding) -> Result<usize, Overrun> {
    let mut at = start;
    let mut stack = vec![Within::DataSet { end: None }];
    loop {
        // Leave the sequences and items whose defined length is used up.
        while let Some(Within::DataSet { end: Some(end) } | Within::Sequence { end: Some(end) }) =
            stack.last()
        {
            if at < *end {
                break;
            }
            stack.pop();
        }
        let Some(within) = stack.last() else {
            return Ok(at);
        };
        let Some(h) = header_at(bytes, at, encoding) else {
            return Ok(at);
        };
        match within {
            Within::Sequence { .. } | Within::Fragments => {
                match h.tag {
                    (0xFFFE, 0xE000) => {
                        fits(bytes, at, &h)?;
                        at += h.size;
                        match (within, h.length) {
                            // A fragment is skipped; one of undefined
                            // length the reader refuses.
                            (Within::Fragments, UNDEFINED) => return Ok(at),
                            (Within::Fragments, n) => at += n as usize,
                            (_, UNDEFINED) => stack.push(Within::DataSet { end: None }),
                            (_, n) => stack.push(Within::DataSet {
                                end: Some(at + n as usize),
                            }),
                        }
                    }
                    // The end of the sequence; its length is not read.
                    (0xFFFE, 0xE0DD) => {
                        stack.pop();
                        at += h.size;
                    }
                    _ => return Ok(at),
                }
            }
            Within::DataSet { end } => {
                // The end of an item of undefined length.
                if h.tag == (0xFFFE, 0xE00D) && end.is_none() && stack.len() > 1 {
                    stack.pop();
                    at += h.size;
                    continue;
                }
                // Anything else is an element, a stray item or delimiter
                // included (the reader takes it as UN and reads its value).
                fits(bytes, at, &h)?;
                at += h.size;
                if h.length == UNDEFINED {
                    // Every undefined-length element but encapsulated
                    // pixel data is read as a sequence.
                    let pixels = h.tag == (0x7FE0, 0x0010) && h.vr != VR::SQ;
                    stack.push(if pixels {
                        Within::Fragments
                    } else {
                        Within::Sequence { end: None }
                    });
                } else if h.vr == VR::SQ && h.tag.0 != 0xFFFE {
                    stack.push(Within::Sequence {
                        end: Some(at + h.length as usize),
                    });
                } else {
                    at += h.length as usize;
                }
            }
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
        assert_eq!(walk(&b, 0, LE), Ok(b.len()));
    }

    #[test]
    fn a_length_past_the_end_is_found_with_its_place() {
        let mut b = el(0x0008, 0x0016, b"UI", b"1.2.3\0");
        let second = b.len();
        b.extend(el(0x7FE0, 0x0010, b"OW", &[0; 8]));
        set_u32(&mut b, second + 8, 0xF000_0000);
        let err = walk(&b, 0, LE).unwrap_err();
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
        assert!(walk(&b, 0, LE).is_err());
        // A VR that is none is read as UN, as the reader does: a 4-byte
        // length after two reserved bytes, here the value's "3" and NUL and
        // the next element's first bytes.
        let mut b = el(0x0008, 0x0016, b"UI", b"1.2.3\0");
        b.extend(el(0x0028, 0x0010, b"US", &[2, 0]));
        b[4] = b'x';
        let err = walk(&b, 0, LE).unwrap_err();
        assert_eq!((err.at, err.tag), (0, (8, 0x16)));
        // Zero padding at the end of a file reads as zero-length elements.
        let mut b = el(0x0008, 0x0016, b"UI", b"1.2.3\0");
        b.extend([0; 12]);
        assert_eq!(walk(&b, 0, LE), Ok(b.len()));
    }

    #[test]
    fn the_meta_group_is_read_flat_as_its_reader_reads_it() {
        // A sequence in the meta group is skipped whole: its value, which
        // would read as a header with a huge length, is not looked into;
        // the real element after it is.
        let fake = [0x02, 0, 0x02, 0, b'O', b'B', 0, 0, 0xFF, 0xFF, 0xFF, 0x7F];
        let mut b = el(0x0002, 0x0001, b"SQ", &fake);
        let real = b.len();
        b.extend(el(0x0002, 0x0010, b"OB", &[0; 4]));
        assert_eq!(walk_meta(&b, 0, None), Ok(b.len()));
        set_u32(&mut b, real + 8, 0xF000_0000);
        let err = walk_meta(&b, 0, None).unwrap_err();
        assert_eq!((err.at, err.tag), (real, (2, 0x10)));
        // The stated end, not the group, decides where the meta group ends.
        assert_eq!(walk_meta(&b, 0, Some(1)), Ok(real));
    }

    #[test]
    fn delimiters_are_not_judged_by_their_length_where_the_reader_ignores_it() {
        // An undefined-length sequence with an undefined-length item whose
        // delimiters carry a (meaningless) non-zero length.
        let mut b = el(0x0008, 0x1140, b"SQ", &[]);
        set_u32(&mut b, 8, UNDEFINED);
        b.extend(item(UNDEFINED));
        b.extend(el(0x0008, 0x0100, b"SH", b"CODE"));
        b.extend([0xFE, 0xFF, 0x0D, 0xE0, 0xFF, 0, 0, 0]);
        b.extend([0xFE, 0xFF, 0xDD, 0xE0, 0xFF, 0, 0, 0]);
        b.extend(el(0x0028, 0x0010, b"US", &[2, 0]));
        assert_eq!(walk(&b, 0, LE), Ok(b.len()));
    }

    #[test]
    fn a_stray_item_outside_a_sequence_is_an_element_whose_value_is_skipped() {
        // The reader takes it as UN and reads its value: bytes that would
        // read as a huge element are not headers.
        let mut b = item(12);
        b.extend([0x08, 0, 0x16, 0, b'O', b'B', 0, 0, 0xFF, 0xFF, 0xFF, 0x7F]);
        b.extend(el(0x0028, 0x0010, b"US", &[2, 0]));
        assert_eq!(walk(&b, 0, LE), Ok(b.len()));
    }

    #[test]
    fn delimiters_and_stray_items_have_their_lengths_checked() {
        let mut b = el(0x0008, 0x0016, b"UI", b"1.2.3\0");
        b.extend([0xFE, 0xFF, 0xDD, 0xE0]);
        b.extend(0x4000_0000u32.to_le_bytes());
        assert!(walk(&b, 0, LE).is_err());
        // Another tag of group FFFE where an element belongs: its value is
        // read, so skipped.
        let mut b = [0xFE, 0xFF, 0x10, 0x00].to_vec();
        b.extend(4u32.to_le_bytes());
        b.extend(*b"abcd");
        b.extend(el(0x0028, 0x0010, b"US", &[2, 0]));
        assert_eq!(walk(&b, 0, LE), Ok(b.len()));
    }

    #[test]
    fn sequences_and_items_are_entered_and_their_contents_checked() {
        // A defined-length sequence holding one item holding one element
        // whose length is damaged.
        let inner = el(0x0008, 0x0100, b"SH", b"CODE");
        let mut seq_value = item(inner.len() as u32);
        seq_value.extend(&inner);
        let mut b = el(0x0008, 0x1140, b"SQ", &seq_value);
        assert_eq!(walk(&b, 0, LE), Ok(b.len()));
        let inner_at = b.len() - inner.len();
        b[inner_at + 6] = 0xFF;
        assert_eq!(walk(&b, 0, LE).unwrap_err().tag, (8, 0x100));
        // An undefined-length UN is entered, as the reader enters it.
        let mut b = [0x0009u16.to_le_bytes(), 0x1010u16.to_le_bytes()].concat();
        b.extend(b"UN\0\0");
        b.extend(UNDEFINED.to_le_bytes());
        b.extend(item(UNDEFINED));
        let inner = b.len() + 8;
        b.extend(el(0x0009, 0x0001, b"OB", &[0; 4]));
        b.extend([0xFE, 0xFF, 0x0D, 0xE0, 0, 0, 0, 0]);
        b.extend([0xFE, 0xFF, 0xDD, 0xE0, 0, 0, 0, 0]);
        assert_eq!(walk(&b, 0, LE), Ok(b.len()));
        set_u32(&mut b, inner, 1 << 31);
        assert_eq!(walk(&b, 0, LE).unwrap_err().tag, (9, 1));
        // Implicit VR: a sequence by the dictionary (Referenced Image
        // Sequence).
        let mut b = [0x0008u16.to_le_bytes(), 0x1140u16.to_le_bytes()].concat();
        let mut value = item(12);
        value.extend([0x08, 0, 0x00, 0x01, 4, 0, 0, 0]);
        value.extend(b"CODE");
        b.extend((value.len() as u32).to_le_bytes());
        b.extend(&value);
        assert_eq!(walk(&b, 0, IMPLICIT), Ok(b.len()));
        let n = b.len();
        set_u32(&mut b, n - 8, 1 << 30);
        assert!(walk(&b, 0, IMPLICIT).is_err());
        // Pixel data whose first samples happen to spell an item tag is
        // still pixel data, skipped whole.
        let mut b = [0x7FE0u16.to_le_bytes(), 0x0010u16.to_le_bytes()].concat();
        b.extend(12u32.to_le_bytes());
        b.extend([0xFE, 0xFF, 0x00, 0xE0, 0xFF, 0xFF, 0xFF, 0x0F, 1, 2, 3, 4]);
        assert_eq!(walk(&b, 0, IMPLICIT), Ok(b.len()));
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
        assert_eq!(walk(&b, 0, LE), Ok(b.len()));
        // A fragment longer than the file.
        let at = b.len() - 8 - fragment.len() - 4;
        set_u32(&mut b, at, 1000);
        assert_eq!(walk(&b, 0, LE).unwrap_err().tag, (0xFFFE, 0xE000));
    }

    #[test]
    fn the_walk_stops_where_told_and_at_a_cut_header() {
        let mut b = el(0x0002, 0x0010, b"UI", b"1.2.840.10008.1.2\0");
        let meta_end = b.len();
        b.extend(el(0x0008, 0x0016, b"UI", b"1.2.3\0"));
        assert_eq!(walk_meta(&b, 0, None), Ok(meta_end));
        assert_eq!(walk(&b[..meta_end + 5], 0, LE), Ok(meta_end));
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
        assert_eq!(walk(&b, 0, be), Ok(b.len()));
        assert!(walk(&b, 0, LE).is_err(), "read little endian: 1536 bytes");
    }

    proptest::proptest! {
        #[test]
        fn any_bytes_are_walked_without_panicking(
            bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..400),
            explicit_vr in proptest::prelude::any::<bool>(),
            big_endian in proptest::prelude::any::<bool>(),
        ) {
            let encoding = Encoding { explicit_vr, big_endian };
            if let Ok(end) = walk(&bytes, 0, encoding) {
                proptest::prop_assert!(end <= bytes.len());
            }
        }
    }
}
