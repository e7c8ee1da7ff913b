//! Reading radiographs into grayscale pixels and resizing them to the network's
//! square input.
//!
//! # Formats
//!
//! The format is recognised from the file's *content*, never its extension:
//!
//! - **DICOM**: the 128-byte preamble followed by `DICM` (Part 10); `DICM` and
//!   the meta group without the preamble; or a bare data set (no preamble,
//!   no meta group: implicit or explicit VR little endian, told apart by its
//!   first element, which must be of group 0008). Every element length is
//!   checked against the file before it is read (a damaged length is
//!   refused, naming the element and its byte, not allocated), except in a
//!   deflated data set, whose headers are compressed. Read with `dicom-object`,
//!   pixel data decoded with `dicom-pixeldata` (native transfer syntaxes, deflate,
//!   RLE and JPEG baseline/extended/lossless, all in pure Rust; JPEG 2000 and
//!   JPEG-LS are [`ImagingError::Unsupported`]). Only the first frame of a
//!   multi-frame object is read. The stored values go through:
//!   1. the modality LUT: `v * RescaleSlope + RescaleIntercept`;
//!   2. the VOI window when the file has WindowCenter/WindowWidth (the first
//!      pair; the LINEAR function of DICOM PS3.3 C.11.2.1.2 unless
//!      VOILUTFunction says LINEAR_EXACT or SIGMOID), otherwise a min-max
//!      stretch over the frame's rescaled values (a constant frame becomes 0);
//!   3. for `MONOCHROME1`, or Presentation LUT Shape `INVERSE`, inversion
//!      (`1 - v`), so bone is bright either way;
//!   4. pixel padding (PixelPaddingValue, up to PixelPaddingRangeLimit when
//!      given; stored values) black, and left out of the min-max stretch.
//!
//!   RGB pixels become BT.601 luma; `YBR_FULL` keeps its Y plane (which *is*
//!   BT.601 luma). VOI LUT sequences (explicit tables) are not applied: such a
//!   file falls back to its window, or to min-max.
//! - **PNG and JPEG** (through the `image` crate): 8-bit values are divided by 255;
//!   16-bit gray ones by 4095 when the brightest pixel is below 4096 (12-bit
//!   detector data in a 16-bit file keeps its gray levels), otherwise by
//!   65535, unless [`Gray16Scale`] fixes one scale for every image;
//!   16-bit colour by 65535;
//!   RGB(A) becomes ITU-R BT.601 luma
//!   `0.299 R + 0.587 G + 0.114 B`; alpha is ignored. A JPEG that ends
//!   before its end-of-image marker is refused as truncated (the decoder
//!   would fill the missing part with gray).
//!
//! Every decoder yields a [`GrayImage`]: `f32` intensities in `[0, 1]`,
//! 0 = black.
//!
//! # Resizing
//!
//! [`resize_to_square`] turns a [`GrayImage`] into `size × size` bytes, either
//! keeping the aspect ratio and padding with black ([`ResizeMode::Pad`]) or
//! stretching ([`ResizeMode::Stretch`]). Each axis is resampled on its own:
//! area averaging (an exact box filter over the source footprint of each output
//! pixel) when it shrinks, so large reductions do not alias, and bilinear
//! interpolation when it grows. Values are quantised only at the end:
//! `round(v * 255)` clamped to `0..=255`. Everything is deterministic.
//!
//! [`load_square`] is [`decode_file_scaled`] followed by [`resize_to_square`].

mod decode;
mod dicom;
mod jpeg;
mod resize;

#[cfg(test)]
pub(crate) mod tests;

pub use decode::{
    decode_bytes, decode_bytes_scaled, decode_file, decode_file_scaled, read_image_file, Gray16,
    Gray16Scale, MAX_FILE_BYTES,
};
pub use resize::{resize_to_square, ResizeMode};

/// Whether `head` (a file's first bytes, 4 KiB or all of it) looks like a
/// DICOM file or bare data set, as the decoder would take it.
pub fn looks_like_dicom(head: &[u8]) -> bool {
    dicom::Framing::of(head).is_some()
}

use std::path::{Path, PathBuf};

/// A decoded grayscale image, intensities normalised to `[0, 1]` (0 = black).
#[derive(Debug, Clone, PartialEq)]
pub struct GrayImage {
    /// Columns.
    pub width: u32,
    /// Rows.
    pub height: u32,
    /// `width * height` intensities, row-major (row 0 first, left to right).
    pub pixels: Vec<f32>,
}

impl GrayImage {
    /// The intensity at column `x`, row `y`.
    ///
    /// # Panics
    /// If `(x, y)` lies outside the image.
    pub fn get(&self, x: u32, y: u32) -> f32 {
        assert!(x < self.width && y < self.height, "pixel out of range");
        self.pixels[y as usize * self.width as usize + x as usize]
    }

    /// Whether every pixel has the same value (false for an image with no pixels).
    pub fn is_blank(&self) -> bool {
        match self.pixels.first() {
            Some(first) => self.pixels.iter().all(|v| v == first),
            None => false,
        }
    }
}

/// Why an image could not be read. Every variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum ImagingError {
    /// The file could not be read.
    #[error("{}: cannot read: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// A zero-byte file, or an image with zero rows or columns.
    #[error("{}: empty image (no bytes or no pixels)", path.display())]
    Empty { path: PathBuf },
    /// Not a PNG, JPEG or DICOM file, or a damaged one.
    #[error("{}: cannot decode: {reason}", path.display())]
    Undecodable { path: PathBuf, reason: String },
    /// A well-formed file using something crossfold cannot read, such as a DICOM
    /// transfer syntax, a photometric interpretation or another image format.
    #[error("{}: unsupported: {what}", path.display())]
    Unsupported { path: PathBuf, what: String },
}

impl ImagingError {
    /// The file the error is about.
    pub fn path(&self) -> &Path {
        match self {
            ImagingError::Io { path, .. }
            | ImagingError::Empty { path }
            | ImagingError::Undecodable { path, .. }
            | ImagingError::Unsupported { path, .. } => path,
        }
    }

    /// The message without the path, for reports that name the file already.
    pub fn detail(&self) -> String {
        match self {
            ImagingError::Io { source, .. } => format!("cannot read: {source}"),
            ImagingError::Empty { .. } => "empty image (no bytes or no pixels)".into(),
            ImagingError::Undecodable { reason, .. } => format!("cannot decode: {reason}"),
            ImagingError::Unsupported { what, .. } => format!("unsupported: {what}"),
        }
    }

    pub(crate) fn undecodable(path: &Path, reason: impl Into<String>) -> Self {
        ImagingError::Undecodable {
            path: path.to_path_buf(),
            reason: reason.into(),
        }
    }

    pub(crate) fn unsupported(path: &Path, what: impl Into<String>) -> Self {
        ImagingError::Unsupported {
            path: path.to_path_buf(),
            what: what.into(),
        }
    }
}

/// The most pixels an image may have: several times a full-field
/// radiograph's (43 x 43 cm at 0.1 mm is 18.5 megapixels). A file stating
/// more is refused before its pixels are decoded: a few hundred bytes can
/// state gigabytes of them.
pub const MAX_PIXELS: u64 = 100_000_000;

/// Refuses an image of `width` x `height` pixels above [`MAX_PIXELS`].
pub(crate) fn check_size(path: &Path, width: u32, height: u32) -> Result<(), ImagingError> {
    let pixels = u64::from(width) * u64::from(height);
    if pixels > MAX_PIXELS {
        return Err(ImagingError::unsupported(
            path,
            format!(
                "an image of {width} x {height} pixels ({} megapixels; at most {} are read)",
                pixels / 1_000_000,
                MAX_PIXELS / 1_000_000
            ),
        ));
    }
    Ok(())
}

/// How an image is read into a network's input: decoded, its 16-bit gray
/// samples scaled as `gray16` says, and resized to `size × size` by `mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Reading {
    pub size: u32,
    pub mode: ResizeMode,
    pub gray16: Gray16Scale,
}

/// Decode `path` and resize it as `reading` says
/// ([`decode_file_scaled`] + [`resize_to_square`]).
pub fn load_square(path: &Path, reading: Reading) -> Result<Vec<u8>, ImagingError> {
    let img = decode_file_scaled(path, reading.gray16)?;
    Ok(resize_to_square(&img, reading.size, reading.mode))
}

/// An error and its chain of causes, joined by `": "`.
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        let msg = s.to_string();
        if !out.ends_with(&msg) {
            out.push_str(": ");
            out.push_str(&msg);
        }
        cur = s.source();
    }
    out
}
