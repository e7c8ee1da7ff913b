//! Format dispatch, and PNG/JPEG decoding through the `image` crate.

use super::{dicom, error_chain, GrayImage, ImagingError};
use image::{DynamicImage, ImageError, ImageFormat};
use std::path::Path;

/// Read and decode the image at `path`.
///
/// The format is recognised from the content (see [`decode_bytes`]), not from
/// the extension.
pub fn decode_file(path: &Path) -> Result<GrayImage, ImagingError> {
    decode_file_scaled(path, Gray16Scale::Auto)
}

/// [`decode_file`], 16-bit gray samples scaled as `gray16` says.
pub fn decode_file_scaled(path: &Path, gray16: Gray16Scale) -> Result<GrayImage, ImagingError> {
    let bytes = read_image_file(path)?;
    decode_bytes_scaled(&bytes, path, gray16).map(|(img, _)| img)
}

/// The most bytes an image file may have: room for a multi-frame DICOM
/// (whose first frame is read) of 20 uncompressed [`super::MAX_PIXELS`]
/// frames at 16 bits.
pub const MAX_FILE_BYTES: u64 = 4 << 30;

/// The bytes of the image file at `path`: a regular file (not a folder, a
/// device or a pipe, which could be read forever) of at most
/// [`MAX_FILE_BYTES`].
pub fn read_image_file(path: &Path) -> Result<Vec<u8>, ImagingError> {
    use std::io::Read;
    let io = |source| ImagingError::Io {
        path: path.to_path_buf(),
        source,
    };
    // Before opening: opening a pipe with no writer would wait for one.
    let meta = std::fs::metadata(path).map_err(io)?;
    if !meta.is_file() {
        return Err(io(std::io::Error::other(if meta.is_dir() {
            "is a folder, not an image file"
        } else {
            "not a regular file (a device or a pipe?)"
        })));
    }
    if meta.len() > MAX_FILE_BYTES {
        return Err(ImagingError::unsupported(
            path,
            format!(
                "a file of {} MiB (at most {} MiB are read)",
                meta.len() >> 20,
                MAX_FILE_BYTES >> 20
            ),
        ));
    }
    let file = std::fs::File::open(path).map_err(io)?;
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    file.take(MAX_FILE_BYTES)
        .read_to_end(&mut bytes)
        .map_err(io)?;
    Ok(bytes)
}

/// Decode an image held in memory; `name` only labels errors.
///
/// A DICOM file (`DICM` at byte 128, or at byte 0 without the preamble, or
/// a bare data set starting with group 0008) goes to the DICOM reader;
/// otherwise the magic bytes must say PNG or JPEG. Zero bytes give
/// [`ImagingError::Empty`]; another recognised format (TIFF, BMP, …) gives
/// [`ImagingError::Unsupported`]; anything else [`ImagingError::Undecodable`].
pub fn decode_bytes(bytes: &[u8], name: &Path) -> Result<GrayImage, ImagingError> {
    decode_bytes_scaled(bytes, name, Gray16Scale::Auto).map(|(img, _)| img)
}

/// How 16-bit gray samples are brought to `[0, 1]` (the spec's
/// `train.gray16`).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Default, serde::Serialize, serde::Deserialize,
)]
pub enum Gray16Scale {
    /// Per image ([`gray16_full_scale`]): divided by 4095 when no pixel is
    /// above 4095 (12-bit detector data), otherwise by 65535.
    #[default]
    #[serde(rename = "auto")]
    Auto,
    /// Divided by 4095 (12-bit data); brighter samples are white.
    #[serde(rename = "12bit")]
    Bits12,
    /// Divided by 65535.
    #[serde(rename = "16bit")]
    Bits16,
}

impl Gray16Scale {
    pub fn is_auto(&self) -> bool {
        *self == Gray16Scale::Auto
    }
}

/// How a 16-bit gray PNG's samples were scaled ([`gray16_full_scale`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gray16 {
    /// No sample above 4095: read as 12-bit data (full scale 4095).
    As12Bit,
    /// Read as 16-bit data (full scale 65535).
    As16Bit,
    /// Read as 12-bit data because `train.gray16 = "12bit"` says so, with
    /// pixels above 4095 made white (16-bit data read as 12-bit?).
    Clipped12Bit,
}

/// [`decode_bytes`], 16-bit gray samples scaled as `gray16` says, also
/// saying how a 16-bit gray image was scaled (`None` for every other kind
/// of image), so that a data set whose 16-bit images were read on both
/// scales, or clipped, can be pointed out.
///
/// A decoding library that panics on a damaged file rather than refusing
/// it costs that file ([`ImagingError::Undecodable`], named), not the
/// process that reads it (a worker's job, the coordinator checking a data
/// set).
pub fn decode_bytes_scaled(
    bytes: &[u8],
    name: &Path,
    gray16: Gray16Scale,
) -> Result<(GrayImage, Option<Gray16>), ImagingError> {
    std::panic::catch_unwind(|| decode_unguarded(bytes, name, gray16)).unwrap_or_else(|panic| {
        let said = crate::logging::panic_text(panic.as_ref()).unwrap_or("no message");
        Err(ImagingError::undecodable(
            name,
            format!("the decoder crashed on it: {said}"),
        ))
    })
}

fn decode_unguarded(
    bytes: &[u8],
    name: &Path,
    gray16: Gray16Scale,
) -> Result<(GrayImage, Option<Gray16>), ImagingError> {
    if bytes.is_empty() {
        return Err(ImagingError::Empty {
            path: name.to_path_buf(),
        });
    }
    if let Some(framing) = dicom::Framing::of(bytes) {
        return dicom::decode(bytes, framing, name).map(|img| (img, None));
    }
    let format = image::guess_format(bytes)
        .map_err(|_| ImagingError::undecodable(name, "not a PNG, JPEG or DICOM file"))?;
    if !matches!(format, ImageFormat::Png | ImageFormat::Jpeg) {
        return Err(ImagingError::unsupported(
            name,
            format!("{format:?} images (only PNG, JPEG and DICOM are read)"),
        ));
    }
    if format == ImageFormat::Jpeg {
        if let Some(why) = super::jpeg::truncation(bytes) {
            return Err(ImagingError::undecodable(name, why));
        }
    }
    let failed = |e: ImageError| match e {
        ImageError::Unsupported(u) => ImagingError::unsupported(name, u.to_string()),
        other => ImagingError::undecodable(name, error_chain(&other)),
    };
    // The size its header states, before any pixel is decoded.
    let (width, height) = image::ImageReader::with_format(std::io::Cursor::new(bytes), format)
        .into_dimensions()
        .map_err(failed)?;
    super::check_size(name, width, height)?;
    let img = image::load_from_memory_with_format(bytes, format).map_err(failed)?;
    if img.width() == 0 || img.height() == 0 {
        return Err(ImagingError::Empty {
            path: name.to_path_buf(),
        });
    }
    Ok(to_gray(img, gray16))
}

/// BT.601 luma of an RGB triple, in the channels' own scale.
#[inline]
fn luma(r: f32, g: f32, b: f32) -> f32 {
    0.299 * r + 0.587 * g + 0.114 * b
}

/// The full scale of 16-bit gray samples. Radiographs from 12-bit
/// detectors are often stored in 16-bit files; divided by 65535 they would
/// keep 16 of 256 gray levels. So an image whose brightest pixel is below
/// 4096 is read as 12-bit data (full scale 4095), any other as 16-bit
/// (65535). One threshold, not a scale per bit depth, so that images of one
/// detector are scaled alike: a 12-bit image never exceeds 4095, and a
/// 16-bit one rarely stays below it (a frame that dark is brightened 16x).
pub fn gray16_full_scale(samples: impl Iterator<Item = u16>) -> f32 {
    if brightest(samples) < 4096 {
        4095.0
    } else {
        65535.0
    }
}

/// The largest of `samples` (0 for none).
fn brightest(samples: impl Iterator<Item = u16>) -> u16 {
    samples.max().unwrap_or(0)
}

/// Gray pixels of any `DynamicImage`: 8-bit values / 255, 16-bit gray by
/// the full scale `gray16` gives (and which it was), colour to BT.601
/// luma, alpha dropped.
fn to_gray(img: DynamicImage, gray16_scale: Gray16Scale) -> (GrayImage, Option<Gray16>) {
    let (width, height) = (img.width(), img.height());
    const U8: f32 = 255.0;
    const U16: f32 = 65535.0;
    let mut gray16 = None;
    // The full scale for these samples, noting how they were read.
    let mut full_scale = |samples: &mut dyn Iterator<Item = u16>| {
        let (scale, how) = match gray16_scale {
            Gray16Scale::Auto => {
                let scale = gray16_full_scale(samples);
                let how = if scale < U16 {
                    Gray16::As12Bit
                } else {
                    Gray16::As16Bit
                };
                (scale, how)
            }
            Gray16Scale::Bits12 if brightest(samples) > 4095 => (4095.0, Gray16::Clipped12Bit),
            Gray16Scale::Bits12 => (4095.0, Gray16::As12Bit),
            Gray16Scale::Bits16 => (U16, Gray16::As16Bit),
        };
        gray16 = Some(how);
        scale
    };
    let pixels: Vec<f32> = match img {
        DynamicImage::ImageLuma8(b) => b.as_raw().iter().map(|&v| f32::from(v) / U8).collect(),
        DynamicImage::ImageLumaA8(b) => b
            .as_raw()
            .chunks_exact(2)
            .map(|p| f32::from(p[0]) / U8)
            .collect(),
        DynamicImage::ImageLuma16(b) => {
            let scale = full_scale(&mut b.as_raw().iter().copied());
            b.as_raw()
                .iter()
                .map(|&v| (f32::from(v) / scale).min(1.0))
                .collect()
        }
        DynamicImage::ImageLumaA16(b) => {
            let scale = full_scale(&mut b.as_raw().chunks_exact(2).map(|p| p[0]));
            b.as_raw()
                .chunks_exact(2)
                .map(|p| (f32::from(p[0]) / scale).min(1.0))
                .collect()
        }
        DynamicImage::ImageRgb8(b) => rgb_luma(b.as_raw(), 3, U8),
        DynamicImage::ImageRgba8(b) => rgb_luma(b.as_raw(), 4, U8),
        DynamicImage::ImageRgb16(b) => rgb_luma(b.as_raw(), 3, U16),
        DynamicImage::ImageRgba16(b) => rgb_luma(b.as_raw(), 4, U16),
        DynamicImage::ImageRgb32F(b) => rgb_luma(b.as_raw(), 3, 1.0),
        DynamicImage::ImageRgba32F(b) => rgb_luma(b.as_raw(), 4, 1.0),
        // `DynamicImage` is non-exhaustive: go through 32-bit float RGB.
        other => rgb_luma(other.to_rgb32f().as_raw(), 3, 1.0),
    };
    (
        GrayImage {
            width,
            height,
            pixels,
        },
        gray16,
    )
}

/// Luma of interleaved samples with `stride` channels (R, G, B first), each
/// divided by `max`, clamped to `[0, 1]`.
fn rgb_luma<T: Copy + Into<f64>>(raw: &[T], stride: usize, max: f32) -> Vec<f32> {
    raw.chunks_exact(stride)
        .map(|p| {
            let [r, g, b] = [p[0], p[1], p[2]].map(|v| v.into() as f32);
            (luma(r, g, b) / max).clamp(0.0, 1.0)
        })
        .collect()
}
