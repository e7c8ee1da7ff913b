//! DICOM files: the first frame, through the modality LUT, the VOI window (or a
//! min-max stretch) and MONOCHROME1 (or Presentation LUT Shape INVERSE)
//! inversion, to `[0, 1]` grayscale, with pixel padding black.

mod lengths;

use super::{error_chain, GrayImage, ImagingError};
use dicom_core::Tag;
use dicom_dictionary_std::tags;
use dicom_object::file::ReadPreamble;
use dicom_object::{FileDicomObject, FileMetaTable, FileMetaTableBuilder, InMemDicomObject};
use dicom_object::{OpenFileOptions, StandardDataDictionary};
use dicom_pixeldata::{
    DecodedPixelData, PhotometricInterpretation, PixelDecoder, PixelRepresentation,
    PlanarConfiguration, VoiLutFunction, WindowLevel,
};
use dicom_transfer_syntax_registry::{TransferSyntaxIndex, TransferSyntaxRegistry};
use lengths::{walk, walk_meta, Encoding};
use std::path::Path;

/// Length of the DICOM file preamble, after which `DICM` follows.
const PREAMBLE: usize = 128;

/// The RLE Lossless transfer syntax.
const RLE_LOSSLESS: &str = "1.2.840.10008.1.2.5";

/// Explicit VR Big Endian (retired, still read).
const EXPLICIT_VR_BE: &str = "1.2.840.10008.1.2.2";

/// Deflated Explicit VR Little Endian: the data set is compressed, so its
/// headers cannot be walked before it is read.
const DEFLATED: &str = "1.2.840.10008.1.2.1.99";

/// Implicit VR Little Endian, the default transfer syntax.
const IMPLICIT_VR_LE: &str = "1.2.840.10008.1.2";

/// Explicit VR Little Endian.
const EXPLICIT_VR_LE: &str = "1.2.840.10008.1.2.1";

/// How a file holds its DICOM data set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Framing {
    /// DICOM Part 10: a 128-byte preamble, `DICM`, the file meta group.
    Part10,
    /// `DICM` and the file meta group at the start (the preamble left out).
    NoPreamble,
    /// The data set alone, as older systems and some exports write it: no
    /// preamble, no meta group, little endian (implicit VR, or explicit when
    /// the first element has a VR), starting with an element of group 0008.
    Bare { explicit: bool },
}

impl Framing {
    /// How `bytes` hold a DICOM data set, if they look like one at all.
    pub(crate) fn of(bytes: &[u8]) -> Option<Framing> {
        if bytes.get(PREAMBLE..PREAMBLE + 4) == Some(b"DICM") {
            return Some(Framing::Part10);
        }
        if bytes.starts_with(b"DICM") {
            return Some(Framing::NoPreamble);
        }
        // Group 0008 (little endian), an element number of that group, then
        // either a VR and a 2-byte length or a 4-byte length that fits.
        let head: [u8; 8] = bytes.get(..8)?.try_into().ok()?;
        if head[..2] != [0x08, 0x00] || u16::from_le_bytes([head[2], head[3]]) >= 0x1000 {
            return None;
        }
        if dicom_core::VR::from_binary([head[4], head[5]]).is_some() {
            return Some(Framing::Bare { explicit: true });
        }
        let length = u32::from_le_bytes([head[4], head[5], head[6], head[7]]) as usize;
        (length.is_multiple_of(2) && length <= bytes.len() - 8)
            .then_some(Framing::Bare { explicit: false })
    }

    /// The file's transfer syntax and data set.
    fn read(
        self,
        bytes: &[u8],
        name: &Path,
    ) -> Result<FileDicomObject<InMemDicomObject<StandardDataDictionary>>, ImagingError> {
        let undecodable = |what: &str, e: &dyn std::error::Error| {
            ImagingError::undecodable(name, format!("{what}: {}", error_chain(e)))
        };
        let damaged = |d: lengths::Overrun| ImagingError::undecodable(name, d.to_string());
        // The transfer syntax first, so that one we cannot read is reported
        // as such rather than as a parse failure further in. Every length the
        // reader would allocate is checked against the file before anything
        // is read (in a deflated data set, in its inflated copy).
        let (ts_uid, data_set_at) = match self {
            Framing::Part10 | Framing::NoPreamble => {
                let from = if self == Framing::Part10 { PREAMBLE } else { 0 };
                // The data set starts where the reader takes it to: at the
                // first element at or past the group's stated length.
                let meta_end =
                    walk_meta(bytes, from + 4, meta_group_end(bytes, from + 4)).map_err(damaged)?;
                let uid = FileMetaTable::from_reader(&bytes[from..])
                    .map_err(|e| undecodable("bad DICOM file meta information", &e))?
                    .transfer_syntax()
                    .trim_end_matches('\0')
                    .to_string();
                (uid, meta_end)
            }
            Framing::Bare { explicit: true } => (EXPLICIT_VR_LE.to_string(), 0),
            Framing::Bare { explicit: false } => (IMPLICIT_VR_LE.to_string(), 0),
        };
        let ts = match TransferSyntaxRegistry.get(&ts_uid) {
            None => {
                return Err(ImagingError::unsupported(
                    name,
                    format!("unknown DICOM transfer syntax {ts_uid}"),
                ))
            }
            Some(ts) if !ts.can_decode_all() => {
                return Err(ImagingError::unsupported(
                    name,
                    format!("DICOM transfer syntax {} ({ts_uid})", ts.name()),
                ))
            }
            Some(ts) => ts,
        };
        if ts_uid == DEFLATED {
            let inflated =
                inflate_capped(bytes.get(data_set_at..).unwrap_or_default(), MAX_INFLATED)
                    .map_err(|why| ImagingError::undecodable(name, why))?;
            walk(&inflated, 0, Encoding::EXPLICIT_LE).map_err(|d| {
                ImagingError::undecodable(name, format!("{d}, in its data set as inflated"))
            })?;
        } else {
            let encoding = Encoding {
                explicit_vr: ts_uid != IMPLICIT_VR_LE,
                big_endian: ts_uid == EXPLICIT_VR_BE,
            };
            walk(bytes, data_set_at, encoding).map_err(damaged)?;
        }
        match self {
            Framing::Part10 | Framing::NoPreamble => OpenFileOptions::new()
                .read_preamble(if self == Framing::Part10 {
                    ReadPreamble::Always
                } else {
                    ReadPreamble::Never
                })
                .from_reader(bytes)
                .map_err(|e| undecodable("bad DICOM data set", &e)),
            Framing::Bare { .. } => {
                let what = format!(
                    "bad DICOM data set (read as one without a preamble or file meta group, \
                     in {})",
                    ts.name()
                );
                InMemDicomObject::read_dataset_with_ts(bytes, ts)
                    .map_err(|e| undecodable(&what, &e))?
                    .with_meta(
                        FileMetaTableBuilder::new()
                            .transfer_syntax(ts_uid.as_str())
                            .media_storage_sop_class_uid("")
                            .media_storage_sop_instance_uid(""),
                    )
                    .map_err(|e| undecodable(&what, &e))
            }
        }
    }
}

/// Where the file meta group that starts at `at` says it ends: after its
/// group length element (0002,0000) UL and the bytes that gives.
fn meta_group_end(bytes: &[u8], at: usize) -> Option<usize> {
    let head = bytes.get(at..at + 12)?;
    if head[..8] != [0x02, 0x00, 0x00, 0x00, b'U', b'L', 0x04, 0x00] {
        return None;
    }
    let length = u32::from_le_bytes([head[8], head[9], head[10], head[11]]);
    Some(at + 12 + length as usize)
}

/// Decode the first frame of the DICOM data set in `bytes`, held as
/// `framing` says (`name` is for messages).
pub(crate) fn decode(
    bytes: &[u8],
    framing: Framing,
    name: &Path,
) -> Result<GrayImage, ImagingError> {
    let undecodable = |what: &str, e: &dyn std::error::Error| {
        ImagingError::undecodable(name, format!("{what}: {}", error_chain(e)))
    };
    let obj = framing.read(bytes, name)?;
    let ts_uid = obj
        .meta()
        .transfer_syntax()
        .trim_end_matches('\0')
        .to_string();

    // The size its attributes state, before a frame is decoded into it.
    let stated = |tag| {
        obj.element_opt(tag)
            .ok()
            .flatten()
            .and_then(|e| e.to_int::<u32>().ok())
    };
    if let (Some(rows), Some(columns)) = (stated(tags::ROWS), stated(tags::COLUMNS)) {
        super::check_size(name, columns, rows)?;
        // A JPEG frame is decoded at its own header's size, whatever Rows
        // and Columns say: that size is checked too, and must agree.
        let first_fragment = obj
            .element_opt(tags::PIXEL_DATA)
            .ok()
            .flatten()
            .and_then(|e| e.fragments())
            .and_then(|f| f.first());
        if let Some((w, h)) = first_fragment.and_then(|f| super::jpeg::frame_size(f)) {
            super::check_size(name, w, h)?;
            if (w, h) != (columns, rows) {
                return Err(ImagingError::undecodable(
                    name,
                    format!(
                        "its JPEG pixel data is {w} x {h} pixels, but Columns and Rows say \
                         {columns} x {rows}"
                    ),
                ));
            }
        }
    }
    let px = obj
        .decode_pixel_data_frame(0)
        .map_err(|e| undecodable("cannot decode the pixel data", &e))?;

    let (width, height) = (px.columns(), px.rows());
    if width == 0 || height == 0 {
        return Err(ImagingError::Empty {
            path: name.to_path_buf(),
        });
    }
    let pi = px.photometric_interpretation().clone();
    // dicom-pixeldata labels every decoded 3-sample frame RGB, but its RLE
    // decoder does not convert YBR_FULL: the first plane is still Y.
    let stored_ybr = text_of(&obj, tags::PHOTOMETRIC_INTERPRETATION).as_deref() == Some("YBR_FULL");
    let ybr_still = stored_ybr && ts_uid == RLE_LOSSLESS;
    let spp = px.samples_per_pixel();
    let expected_spp = match pi {
        PhotometricInterpretation::Monochrome1 | PhotometricInterpretation::Monochrome2 => 1,
        PhotometricInterpretation::Rgb | PhotometricInterpretation::YbrFull => 3,
        other => {
            return Err(ImagingError::unsupported(
                name,
                format!("DICOM photometric interpretation {other}"),
            ))
        }
    };
    if spp != expected_spp {
        return Err(ImagingError::unsupported(
            name,
            format!("DICOM {pi} with {spp} samples per pixel"),
        ));
    }
    let layout = Layout::of(&px).map_err(|what| ImagingError::unsupported(name, what))?;
    let data = px
        .frame_data(0)
        .map_err(|e| undecodable("pixel data", &e))?;

    let pixels = if spp == 1 {
        // MONOCHROME1 is shown inverted; so is any image whose Presentation
        // LUT Shape is INVERSE (the DX module requires it of MONOCHROME1,
        // where it is the same inversion, not a second one).
        let inverse = text_of(&obj, tags::PRESENTATION_LUT_SHAPE).as_deref() == Some("INVERSE");
        let shown = Shown {
            invert: pi == PhotometricInterpretation::Monochrome1 || inverse,
            padding: padding_of(&obj, &layout),
        };
        monochrome(&px, &layout, data, shown).map_err(|e| undecodable("pixel attributes", &e))?
    } else {
        colour(
            &px,
            &layout,
            data,
            pi == PhotometricInterpretation::Rgb && !ybr_still,
        )
    };
    Ok(GrayImage {
        width,
        height,
        pixels,
    })
}

/// A text attribute's value without its padding, if the data set has it.
fn text_of(obj: &InMemDicomObject, tag: Tag) -> Option<String> {
    let e = obj.element(tag).ok()?;
    let s = e.to_str().ok()?;
    Some(s.trim_end_matches(['\0', ' ']).to_string())
}

/// Which samples are pixel padding (PS3.3 C.7.5.1.1.2): Pixel Padding
/// Value, or every value between it and Pixel Padding Range Limit.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Padding {
    /// Stored values (before the modality LUT) in this range.
    Values(f64, f64),
    /// Sample words, as written, in this range: for a padding value the
    /// stored bits cannot hold (0xFFFF in 12-bit data), which only a word
    /// written whole can equal.
    Words(u32, u32),
}

impl Padding {
    fn covers(self, word: u32, value: f64) -> bool {
        match self {
            Padding::Values(lo, hi) => (lo..=hi).contains(&value),
            Padding::Words(lo, hi) => (lo..=hi).contains(&word),
        }
    }
}

/// The image's pixel padding, if it has any. Both attributes are encoded
/// as US or SS as the pixels are; a reader without VRs may give a signed
/// one as US (64536 for -1000), which is taken back. A range limit that
/// cannot be read drops the padding.
fn padding_of(obj: &InMemDicomObject, layout: &Layout) -> Option<Padding> {
    let read = |tag| obj.element(tag).ok().map(|e| e.to_int::<i64>().ok());
    let value = read(tags::PIXEL_PADDING_VALUE)??;
    let limit = match read(tags::PIXEL_PADDING_RANGE_LIMIT) {
        None => value,
        Some(limit) => limit?,
    };
    let as_value = |mut v: i64| {
        let bits = layout.stored.min(32);
        let (lo, hi) = if layout.signed {
            if v > i64::from(i16::MAX) && v <= i64::from(u16::MAX) && bits <= 16 {
                v -= 1 << 16;
            }
            (-(1i64 << (bits - 1)), (1i64 << (bits - 1)) - 1)
        } else {
            (0, (1i64 << bits) - 1)
        };
        (lo..=hi).contains(&v).then_some(v as f64)
    };
    let as_word = |v: i64| {
        let bits = u32::from(layout.allocated);
        let fits = -(1i64 << (bits - 1)) <= v && v < (1i64 << bits);
        fits.then(|| ((v as u64) & ((1u64 << bits) - 1)) as u32)
    };
    if let (Some(a), Some(b)) = (as_value(value), as_value(limit)) {
        return Some(Padding::Values(a.min(b), a.max(b)));
    }
    let (a, b) = (as_word(value)?, as_word(limit)?);
    Some(Padding::Words(a.min(b), a.max(b)))
}

/// How a monochrome frame is shown: inverted or not, and which samples are
/// padding (made black, and left out of a min-max stretch).
#[derive(Debug, Clone, Copy)]
struct Shown {
    invert: bool,
    padding: Option<Padding>,
}

/// How stored samples are laid out: BitsAllocated, BitsStored, HighBit and
/// PixelRepresentation.
struct Layout {
    allocated: u16,
    shift: u32,
    mask: u32,
    sign_bit: u32,
    stored: u32,
    signed: bool,
}

impl Layout {
    /// The layout of `px`'s samples; `Err` names what is unsupported.
    fn of(px: &DecodedPixelData<'_>) -> Result<Self, String> {
        let allocated = px.bits_allocated();
        if !matches!(allocated, 1 | 8 | 16 | 32) {
            return Err(format!("DICOM BitsAllocated = {allocated}"));
        }
        let stored = u32::from(px.bits_stored().clamp(1, allocated));
        // Samples normally sit in the low bits (HighBit = BitsStored - 1).
        let shift = (u32::from(px.high_bit()) + 1)
            .saturating_sub(stored)
            .min(u32::from(allocated) - stored);
        Ok(Layout {
            allocated,
            shift,
            mask: if stored >= 32 {
                u32::MAX
            } else {
                (1u32 << stored) - 1
            },
            sign_bit: 1u32 << (stored - 1),
            stored,
            signed: px.pixel_representation() == PixelRepresentation::Signed,
        })
    }

    /// The value of one raw sample word.
    #[inline]
    fn value(&self, raw: u32) -> f64 {
        let v = (raw >> self.shift) & self.mask;
        if self.signed && v & self.sign_bit != 0 {
            (i64::from(v) - (1i64 << self.stored)) as f64
        } else {
            f64::from(v)
        }
    }

    /// Call `f` with each sample's value, in order, without allocating.
    fn for_each(&self, data: &[u8], mut f: impl FnMut(f64)) {
        self.for_each_word(data, |w| f(self.value(w)));
    }

    /// Call `f` with each sample's word as written, in order.
    fn for_each_word(&self, data: &[u8], mut f: impl FnMut(u32)) {
        match self.allocated {
            // dicom-pixeldata expands 1-bit samples to one byte each, 0 or 255.
            1 => data.iter().for_each(|&b| f(u32::from(b != 0))),
            8 => data.iter().for_each(|&b| f(u32::from(b))),
            16 => data
                .chunks_exact(2)
                .for_each(|c| f(u32::from(u16::from_ne_bytes([c[0], c[1]])))),
            _ => data
                .chunks_exact(4)
                .for_each(|c| f(u32::from_ne_bytes([c[0], c[1], c[2], c[3]]))),
        }
    }

    /// The largest value a sample can hold (for colour scaling).
    fn max(&self) -> f64 {
        self.mask as f64
    }
}

/// Modality LUT, then VOI window or min-max, then inversion; padding black.
fn monochrome(
    px: &DecodedPixelData<'_>,
    layout: &Layout,
    data: &[u8],
    shown: Shown,
) -> Result<Vec<f32>, dicom_pixeldata::Error> {
    // Which samples are padding, in order.
    let padding: Vec<bool> = match shown.padding {
        Some(p) => {
            let mut mask = Vec::with_capacity(px.rows() as usize * px.columns() as usize);
            layout.for_each_word(data, |w| mask.push(p.covers(w, layout.value(w))));
            mask
        }
        None => Vec::new(),
    };
    let is_padding = |i: usize| padding.get(i).copied().unwrap_or(false);
    let (slope, intercept) = match px.rescale()?.first() {
        Some(r) if r.slope.is_finite() && r.intercept.is_finite() => (r.slope, r.intercept),
        _ => (1.0, 0.0),
    };
    let modality = |s: f64| s * slope + intercept;
    let window = px.window()?.and_then(|w| w.first().copied());
    let function = px
        .voi_lut_function()?
        .and_then(|f| f.first().copied())
        .unwrap_or_default();
    let window = window.filter(|w| window_is_valid(w, function));

    let mut out = Vec::with_capacity(px.rows() as usize * px.columns() as usize);
    match window {
        Some(w) => layout.for_each(data, |s| {
            out.push(apply_window(modality(s), w, function) as f32);
        }),
        None => {
            // Min-max over the rescaled values of the image (padding left
            // out); a constant frame becomes 0.
            let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
            let mut i = 0;
            layout.for_each(data, |s| {
                if !is_padding(i) {
                    let m = modality(s);
                    lo = lo.min(m);
                    hi = hi.max(m);
                }
                i += 1;
            });
            let span = hi - lo;
            if span > 0.0 {
                layout.for_each(data, |s| {
                    out.push((((modality(s) - lo) / span) as f32).clamp(0.0, 1.0))
                });
            } else {
                layout.for_each(data, |_| out.push(0.0));
            }
        }
    }
    if shown.invert {
        for v in &mut out {
            *v = 1.0 - *v;
        }
    }
    for (v, &pad) in out.iter_mut().zip(&padding) {
        if pad {
            *v = 0.0;
        }
    }
    Ok(out)
}

/// Whether a window can be applied: finite, and wide enough for its function
/// (LINEAR needs a width of at least 1, the others a positive width).
fn window_is_valid(w: &WindowLevel, function: VoiLutFunction) -> bool {
    w.center.is_finite()
        && w.width.is_finite()
        && match function {
            VoiLutFunction::Linear => w.width >= 1.0,
            VoiLutFunction::LinearExact | VoiLutFunction::Sigmoid => w.width > 0.0,
        }
}

/// The VOI LUT functions of DICOM PS3.3 C.11.2.1.2, with output range `[0, 1]`.
pub(crate) fn apply_window(x: f64, w: WindowLevel, function: VoiLutFunction) -> f64 {
    let (c, width) = (w.center, w.width);
    match function {
        // C.11.2.1.2.1: LINEAR.
        VoiLutFunction::Linear => {
            if x <= c - 0.5 - (width - 1.0) / 2.0 {
                0.0
            } else if x > c - 0.5 + (width - 1.0) / 2.0 {
                1.0
            } else {
                // Reached only when width > 1 (at width 1 the thresholds meet).
                ((x - (c - 0.5)) / (width - 1.0) + 0.5).clamp(0.0, 1.0)
            }
        }
        // C.11.2.1.3.2: LINEAR_EXACT.
        VoiLutFunction::LinearExact => {
            if x <= c - width / 2.0 {
                0.0
            } else if x > c + width / 2.0 {
                1.0
            } else {
                ((x - c) / width + 0.5).clamp(0.0, 1.0)
            }
        }
        // C.11.2.1.3.1: SIGMOID.
        VoiLutFunction::Sigmoid => 1.0 / (1.0 + (-4.0 * (x - c) / width).exp()),
    }
}

/// Three samples per pixel to luma: BT.601 from RGB; the Y plane of YBR_FULL
/// (already BT.601 luma). Values are scaled by the largest storable value.
fn colour(px: &DecodedPixelData<'_>, layout: &Layout, data: &[u8], rgb: bool) -> Vec<f32> {
    let mut samples = Vec::with_capacity(data.len());
    layout.for_each(data, |s| samples.push(s));
    let max = layout.max();
    let n = samples.len() / 3;
    let planar = px.planar_configuration() == PlanarConfiguration::PixelFirst;
    let sample = |i: usize, channel: usize| {
        if planar {
            samples[channel * n + i]
        } else {
            samples[3 * i + channel]
        }
    };
    (0..n)
        .map(|i| {
            let y = if rgb {
                0.299 * sample(i, 0) + 0.587 * sample(i, 1) + 0.114 * sample(i, 2)
            } else {
                sample(i, 0)
            };
            (y / max).clamp(0.0, 1.0) as f32
        })
        .collect()
}

/// The most a deflated data set may inflate to: far more than a
/// radiograph's pixels, far less than a deflate bomb's.
const MAX_INFLATED: u64 = 512 << 20;

/// A deflated data set (raw deflate, PS3.5 A.5) inflated, up to `cap`
/// bytes; why not, when it does not inflate or is larger.
pub(crate) fn inflate_capped(deflated: &[u8], cap: u64) -> Result<Vec<u8>, String> {
    use std::io::Read;
    let mut out = Vec::new();
    flate2::read::DeflateDecoder::new(deflated)
        .take(cap + 1)
        .read_to_end(&mut out)
        .map_err(|e| format!("its deflated data set does not inflate: {e}"))?;
    if out.len() as u64 > cap {
        return Err(format!(
            "its deflated data set inflates to more than {cap} bytes, more than any \
             radiograph needs (a damaged or hostile file)"
        ));
    }
    Ok(out)
}
