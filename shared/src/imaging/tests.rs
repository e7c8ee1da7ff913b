//! Tests of decoding (PNG, JPEG, DICOM) and resizing, with files made here.

use super::*;
use dicom_core::{DataElement, PrimitiveValue, VR};
use dicom_dictionary_std::tags;
use dicom_object::{FileMetaTableBuilder, InMemDicomObject};
use image::{ImageBuffer, Luma, Rgb, Rgba};
use std::path::Path;

const EXPLICIT_VR_LE: &str = "1.2.840.10008.1.2.1";
const DEFLATED: &str = "1.2.840.10008.1.2.1.99";
const JPEG_2000: &str = "1.2.840.10008.1.2.4.90";
const JPEG_BASELINE: &str = "1.2.840.10008.1.2.4.50";
const RLE_LOSSLESS: &str = "1.2.840.10008.1.2.5";
/// Digital X-Ray Image Storage - For Presentation.
const DX_STORAGE: &str = "1.2.840.10008.5.1.4.1.1.1.1";

fn close(a: f32, b: f64, tol: f64) -> bool {
    (f64::from(a) - b).abs() <= tol
}

fn assert_pixels(img: &GrayImage, expected: &[f64], tol: f64) {
    assert_eq!(img.pixels.len(), expected.len());
    for (i, (&got, &want)) in img.pixels.iter().zip(expected).enumerate() {
        assert!(close(got, want, tol), "pixel {i}: got {got}, want {want}");
    }
}

// ---------------------------------------------------------------- PNG / JPEG

#[test]
fn png_8bit_gray_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("g8.png");
    let src = ImageBuffer::from_fn(16, 16, |x, y| Luma([(x * 16 + y) as u8 ^ 0x5a]));
    src.save(&path).unwrap();
    let img = decode_file(&path).unwrap();
    assert_eq!((img.width, img.height), (16, 16));
    for (x, y, p) in src.enumerate_pixels() {
        assert_eq!(img.get(x, y), f32::from(p[0]) / 255.0, "({x}, {y})");
    }
    // Same size: the bytes come back unchanged, in either mode.
    for mode in [ResizeMode::Pad, ResizeMode::Stretch] {
        assert_eq!(
            load_square(
                &path,
                Reading {
                    size: 16,
                    mode,
                    gray16: Gray16Scale::Auto
                }
            )
            .unwrap(),
            src.as_raw().clone()
        );
    }
}

/// A 2x2 16-bit gray PNG of `values` (row by row), decoded.
fn decoded_gray16(values: [u16; 4]) -> GrayImage {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("g16.png");
    let src: ImageBuffer<Luma<u16>, Vec<u16>> =
        ImageBuffer::from_fn(2, 2, |x, y| Luma([values[(y * 2 + x) as usize]]));
    src.save(&path).unwrap();
    decode_file(&path).unwrap()
}

#[test]
fn png_16bit_gray_keeps_full_precision() {
    let values: [u16; 4] = [0, 200, 32768, 65535];
    let img = decoded_gray16(values);
    assert_eq!((img.width, img.height), (2, 2));
    let expected: Vec<f64> = values.iter().map(|&v| f64::from(v) / 65535.0).collect();
    assert_pixels(&img, &expected, 1e-7);
    // 200/65535*255 = 0.778 rounds to 1, where truncating to 8 bits first
    // (200 >> 8) would give 0; 32768 -> 127.502 -> 128.
    assert_eq!(
        resize_to_square(&img, 2, ResizeMode::Stretch),
        vec![0, 1, 128, 255]
    );
}

#[test]
fn png_16bit_gray_with_12_significant_bits_keeps_its_gray_levels() {
    // A 12-bit detector's values in a 16-bit file: 4095 is full white.
    let values: [u16; 4] = [0, 1000, 2048, 4095];
    let img = decoded_gray16(values);
    let expected: Vec<f64> = values.iter().map(|&v| f64::from(v) / 4095.0).collect();
    assert_pixels(&img, &expected, 1e-7);
    // 1000/4095*255 = 62.27, 2048/4095*255 = 127.53; divided by 65535
    // they would have been 4 and 8.
    assert_eq!(
        resize_to_square(&img, 2, ResizeMode::Stretch),
        vec![0, 62, 128, 255]
    );
}

#[test]
fn a_fixed_16_bit_scale_reads_every_image_alike() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("g16.png");
    let png = |values: [u16; 4]| {
        let src: ImageBuffer<Luma<u16>, Vec<u16>> =
            ImageBuffer::from_fn(2, 2, |x, y| Luma([values[(y * 2 + x) as usize]]));
        src.save(&path).unwrap();
        std::fs::read(&path).unwrap()
    };
    let read = |bytes: &[u8], scale| decode_bytes_scaled(bytes, &path, scale).unwrap();
    // A dark 16-bit frame (nothing above 4095): auto reads it as 12-bit
    // data, 16 times brighter; "16bit" keeps it dark.
    let dark = png([0, 1000, 2048, 4095]);
    let (img, how) = read(&dark, Gray16Scale::Auto);
    assert_eq!(how, Some(Gray16::As12Bit));
    assert_pixels(&img, &[0.0, 1000.0 / 4095.0, 2048.0 / 4095.0, 1.0], 1e-7);
    let (img, how) = read(&dark, Gray16Scale::Bits16);
    assert_eq!(how, Some(Gray16::As16Bit));
    let by = |v: [f64; 4], s: f64| v.map(|x| x / s);
    assert_pixels(&img, &by([0.0, 1000.0, 2048.0, 4095.0], 65535.0), 1e-7);
    // 12-bit data with one burned-in pixel at 65535: auto reads all of it
    // 16 times too dark; "12bit" keeps the image and makes that pixel white.
    let marked = png([0, 1000, 2048, 65535]);
    let (img, _) = read(&marked, Gray16Scale::Auto);
    assert_pixels(&img, &by([0.0, 1000.0, 2048.0, 65535.0], 65535.0), 1e-7);
    let (img, how) = read(&marked, Gray16Scale::Bits12);
    assert_eq!(how, Some(Gray16::Clipped12Bit));
    assert_pixels(&img, &[0.0, 1000.0 / 4095.0, 2048.0 / 4095.0, 1.0], 1e-7);
    // 8-bit images are not affected.
    let eight: ImageBuffer<Luma<u8>, Vec<u8>> = ImageBuffer::from_fn(1, 1, |_, _| Luma([51]));
    eight.save(&path).unwrap();
    let bytes = std::fs::read(&path).unwrap();
    for scale in [Gray16Scale::Bits12, Gray16Scale::Bits16] {
        let (img, how) = read(&bytes, scale);
        assert_eq!((img.pixels[0], how), (0.2, None));
    }
}

#[test]
fn sixteen_bit_gray_is_read_as_12_bit_below_4096_and_16_bit_from_there() {
    use crate::imaging::decode::gray16_full_scale;
    let scale = |v: &[u16]| gray16_full_scale(v.iter().copied());
    // Two 12-bit images of one detector, one much darker: scaled alike.
    assert_eq!(scale(&[0, 1020]), 4095.0);
    assert_eq!(scale(&[1030, 4095]), 4095.0);
    assert_eq!(scale(&[]), 4095.0);
    assert_eq!(scale(&[4096]), 65535.0);
    assert_eq!(scale(&[16383, 2]), 65535.0);
    assert_eq!(scale(&[65535]), 65535.0);
}

#[test]
fn rgb_and_rgba_become_bt601_luma() {
    let dir = tempfile::tempdir().unwrap();
    let colours = [[255u8, 0, 0], [0, 255, 0], [0, 0, 255], [10, 200, 30]];
    // By hand: 0.299*255, 0.587*255, 0.114*255, 0.299*10 + 0.587*200 + 0.114*30.
    let luma_255 = [76.245, 149.685, 29.07, 123.81];
    let expected: Vec<f64> = luma_255.iter().map(|v| v / 255.0).collect();
    let bytes = vec![76u8, 150, 29, 124];

    let rgb = dir.path().join("rgb.png");
    ImageBuffer::from_fn(2, 2, |x, y| Rgb(colours[(y * 2 + x) as usize]))
        .save(&rgb)
        .unwrap();
    let img = decode_file(&rgb).unwrap();
    assert_pixels(&img, &expected, 1e-6);
    assert_eq!(resize_to_square(&img, 2, ResizeMode::Stretch), bytes);

    // Alpha is ignored, even fully transparent.
    let rgba = dir.path().join("rgba.png");
    ImageBuffer::from_fn(2, 2, |x, y| {
        let [r, g, b] = colours[(y * 2 + x) as usize];
        Rgba([r, g, b, (x * 100) as u8])
    })
    .save(&rgba)
    .unwrap();
    assert_pixels(&decode_file(&rgba).unwrap(), &expected, 1e-6);

    // 16-bit RGB: 65535 * (1, 0.5, 0) -> 0.299 + 0.587 * 0.5.
    let rgb16 = dir.path().join("rgb16.png");
    let half = 32768u16;
    ImageBuffer::<Rgb<u16>, Vec<u16>>::from_pixel(1, 1, Rgb([65535, half, 0]))
        .save(&rgb16)
        .unwrap();
    let want = 0.299 + 0.587 * f64::from(half) / 65535.0;
    assert_pixels(&decode_file(&rgb16).unwrap(), &[want], 1e-6);
}

/// Encode with image's JPEG encoder at quality 100.
fn write_jpeg(path: &Path, img: image::DynamicImage) {
    let file = std::fs::File::create(path).unwrap();
    let enc = image::codecs::jpeg::JpegEncoder::new_with_quality(file, 100);
    img.write_with_encoder(enc).unwrap();
}

/// CRC-32 (IEEE), as PNG chunks carry it.
fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

#[test]
fn an_image_stating_more_pixels_than_are_read_is_refused_before_decoding() {
    let dir = tempfile::tempdir().unwrap();
    let huge = |err: ImagingError| {
        let msg = err.to_string();
        assert!(matches!(err, ImagingError::Unsupported { .. }), "{msg}");
        assert!(
            msg.contains("20000 x 20000 pixels (400 megapixels; at most 100 are read)"),
            "{msg}"
        );
    };
    // A 2 x 2 PNG whose header says 20000 x 20000 (its CRC made to match).
    let path = dir.path().join("huge.png");
    ImageBuffer::from_pixel(2, 2, Luma([7u8]))
        .save(&path)
        .unwrap();
    let mut png = std::fs::read(&path).unwrap();
    // Signature (8), IHDR length (4) and type (4), then width and height.
    png[16..20].copy_from_slice(&20_000u32.to_be_bytes());
    png[20..24].copy_from_slice(&20_000u32.to_be_bytes());
    let crc = crc32(&png[12..29]);
    png[29..33].copy_from_slice(&crc.to_be_bytes());
    huge(decode_bytes(&png, &path).unwrap_err());
    // A JPEG whose frame header says the same.
    let path = dir.path().join("huge.jpg");
    write_jpeg(&path, ImageBuffer::from_pixel(8, 8, Luma([7u8])).into());
    let mut jpeg = std::fs::read(&path).unwrap();
    let sof = jpeg.windows(2).position(|w| w == [0xFF, 0xC0]).unwrap();
    // Marker (2), length (2), precision (1), then height and width.
    jpeg[sof + 5..sof + 7].copy_from_slice(&20_000u16.to_be_bytes());
    jpeg[sof + 7..sof + 9].copy_from_slice(&20_000u16.to_be_bytes());
    huge(decode_bytes(&jpeg, &path).unwrap_err());
    // A DICOM whose rows and columns say the same over 4 pixels of data.
    let path = dir.path().join("huge.dcm");
    write_dicom(
        &path,
        &Dcm {
            rows: 20_000,
            cols: 20_000,
            ..Dcm::mono2(2, 2, &[0, 1, 2, 3])
        },
    );
    huge(decode_file(&path).unwrap_err());
    // At the limit's side of it, a plain image reads as ever.
    assert!(check_size(&path, 10_000, 10_000).is_ok());
    assert!(check_size(&path, 10_000, 10_001).is_err());
}

#[test]
fn only_a_regular_file_is_read_as_an_image() {
    let dir = tempfile::tempdir().unwrap();
    let err = decode_file(dir.path()).unwrap_err().to_string();
    assert!(err.contains("is a folder, not an image file"), "{err}");
    // A device that never ends: refused, not read.
    let err = decode_file(Path::new("/dev/zero")).unwrap_err().to_string();
    assert!(
        err.starts_with("/dev/zero: cannot read: not a regular file"),
        "{err}"
    );
    // A pipe with no writer, which opening would wait on.
    let fifo = dir.path().join("pipe.png");
    let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: a valid path and mode.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    let err = decode_file(&fifo).unwrap_err().to_string();
    assert!(err.contains("not a regular file"), "{err}");
}

#[test]
fn jpeg_decodes_to_about_the_right_values() {
    let dir = tempfile::tempdir().unwrap();
    // Constant 8x8 blocks survive JPEG almost exactly.
    let gray = dir.path().join("g.jpg");
    let src = ImageBuffer::from_fn(16, 16, |x, _| Luma([if x < 8 { 50u8 } else { 200 }]));
    write_jpeg(&gray, src.into());
    let img = decode_file(&gray).unwrap();
    assert_eq!((img.width, img.height), (16, 16));
    for y in 0..16 {
        for x in 0..16 {
            let want = if x < 8 { 50.0 } else { 200.0 } / 255.0;
            assert!(close(img.get(x, y), want, 3.0 / 255.0), "({x}, {y})");
        }
    }

    let colour = dir.path().join("c.jpg");
    let src = ImageBuffer::from_pixel(16, 16, Rgb([200u8, 100, 50]));
    write_jpeg(&colour, src.into());
    let want = (0.299 * 200.0 + 0.587 * 100.0 + 0.114 * 50.0) / 255.0;
    let img = decode_file(&colour).unwrap();
    assert!(img.pixels.iter().all(|&v| close(v, want, 4.0 / 255.0)));
}

#[test]
fn format_comes_from_the_content_not_the_extension() {
    let dir = tempfile::tempdir().unwrap();
    let png_as_dcm = dir.path().join("really_png.dcm");
    ImageBuffer::from_pixel(3, 2, Luma([255u8]))
        .save_with_format(&png_as_dcm, image::ImageFormat::Png)
        .unwrap();
    let img = decode_file(&png_as_dcm).unwrap();
    assert_eq!((img.width, img.height), (3, 2));
    assert!(img.pixels.iter().all(|&v| v == 1.0));

    let dcm_as_png = dir.path().join("really_dicom.png");
    write_dicom(&dcm_as_png, &Dcm::mono2(2, 1, &[0, 10]));
    assert_pixels(&decode_file(&dcm_as_png).unwrap(), &[0.0, 1.0], 0.0);
}

#[test]
fn zero_byte_file_is_empty_naming_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("empty.png");
    std::fs::write(&path, b"").unwrap();
    let err = decode_file(&path).unwrap_err();
    assert!(
        matches!(&err, ImagingError::Empty { path: p } if p == &path),
        "{err:?}"
    );
    assert!(err.to_string().contains(&path.display().to_string()));
    assert_eq!(err.path(), path);
    assert!(load_square(
        &path,
        Reading {
            size: 8,
            mode: ResizeMode::Pad,
            gray16: Gray16Scale::Auto
        }
    )
    .is_err());
}

#[test]
fn garbage_is_undecodable_naming_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("junk.jpg");
    std::fs::write(&path, b"this is not an image at all").unwrap();
    let err = decode_file(&path).unwrap_err();
    assert!(
        matches!(&err, ImagingError::Undecodable { path: p, .. } if p == &path),
        "{err:?}"
    );
    assert!(err.to_string().contains(&path.display().to_string()));

    // A PNG signature followed by rubbish.
    let mut bytes = b"\x89PNG\r\n\x1a\n".to_vec();
    bytes.extend_from_slice(&[7u8; 64]);
    let name = Path::new("broken.png");
    let err = decode_bytes(&bytes, name).unwrap_err();
    assert!(matches!(&err, ImagingError::Undecodable { path, .. } if path == name));

    // A truncated PNG.
    let good = dir.path().join("good.png");
    ImageBuffer::from_fn(32, 32, |x, y| Luma([(x ^ y) as u8]))
        .save(&good)
        .unwrap();
    let bytes = std::fs::read(&good).unwrap();
    let err = decode_bytes(&bytes[..bytes.len() / 2], &good).unwrap_err();
    assert!(matches!(err, ImagingError::Undecodable { .. }), "{err:?}");

    // A truncated JPEG: the decoder alone would fill the rest with gray.
    let good = dir.path().join("good.jpg");
    write_jpeg(
        &good,
        image::DynamicImage::ImageLuma8(ImageBuffer::from_fn(64, 64, |x, y| Luma([(x ^ y) as u8]))),
    );
    let bytes = std::fs::read(&good).unwrap();
    decode_bytes(&bytes, &good).unwrap();
    let err = decode_bytes(&bytes[..bytes.len() * 6 / 10], &good).unwrap_err();
    assert!(
        matches!(&err, ImagingError::Undecodable { path, .. } if path == &good),
        "{err:?}"
    );
    assert!(err.to_string().contains("truncated JPEG"), "{err}");
}

#[test]
fn other_image_formats_are_unsupported() {
    let mut bmp = b"BM".to_vec();
    bmp.extend_from_slice(&[0u8; 60]);
    let name = Path::new("scan.bmp");
    let err = decode_bytes(&bmp, name).unwrap_err();
    assert!(
        matches!(&err, ImagingError::Unsupported { path, .. } if path == name),
        "{err:?}"
    );
    assert!(err.to_string().contains("scan.bmp"));
}

#[test]
fn missing_file_is_io_naming_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nope.png");
    let err = decode_file(&path).unwrap_err();
    match &err {
        ImagingError::Io { path: p, source } => {
            assert_eq!(p, &path);
            assert_eq!(source.kind(), std::io::ErrorKind::NotFound);
        }
        other => panic!("{other:?}"),
    }
    assert!(err.to_string().contains(&path.display().to_string()));
    assert!(err.detail().starts_with("cannot read"));
}

// ---------------------------------------------------------------- DICOM

/// A small DICOM image to write; the fields are the attributes.
pub(crate) struct Dcm {
    pub rows: u16,
    pub cols: u16,
    pub frames: Option<u32>,
    pub bits_allocated: u16,
    pub bits_stored: u16,
    pub signed: bool,
    pub samples_per_pixel: u16,
    pub photometric: &'static str,
    pub rescale: Option<(&'static str, &'static str)>,
    pub window: Option<(&'static str, &'static str)>,
    pub voi_function: Option<&'static str>,
    /// Pixel Padding Value and Range Limit, as stored (US).
    pub padding: Option<(u16, Option<u16>)>,
    pub presentation_lut: Option<&'static str>,
    pub pixels: PrimitiveValue,
    pub transfer_syntax: &'static str,
}

impl Dcm {
    /// Unsigned 16-bit MONOCHROME2, all 16 bits stored, no rescale, no window.
    pub(crate) fn mono2(cols: u16, rows: u16, pixels: &[u16]) -> Self {
        Dcm {
            rows,
            cols,
            frames: None,
            bits_allocated: 16,
            bits_stored: 16,
            signed: false,
            samples_per_pixel: 1,
            photometric: "MONOCHROME2",
            rescale: None,
            window: None,
            voi_function: None,
            padding: None,
            presentation_lut: None,
            pixels: PrimitiveValue::U16(pixels.iter().copied().collect()),
            transfer_syntax: EXPLICIT_VR_LE,
        }
    }
}

/// Write `d` as a DICOM file (preamble, meta group, explicit VR little endian).
pub(crate) fn write_dicom(path: &Path, d: &Dcm) {
    dicom_file(d).write_to_file(path).unwrap();
}

/// `d` written to `path` as a DICOM file, and decoded.
fn read_back(path: &Path, d: &Dcm) -> GrayImage {
    write_dicom(path, d);
    decode_file(path).unwrap()
}

/// `d` as a DICOM file object, its meta group naming `d.transfer_syntax`.
fn dicom_file(d: &Dcm) -> dicom_object::DefaultDicomObject {
    let mut obj = InMemDicomObject::new_empty();
    let us = |obj: &mut InMemDicomObject, tag, v: u16| {
        obj.put(DataElement::new(tag, VR::US, PrimitiveValue::from(v)));
    };
    let text = |obj: &mut InMemDicomObject, tag, vr, v: &str| {
        obj.put(DataElement::new(tag, vr, PrimitiveValue::from(v)));
    };
    text(&mut obj, tags::SOP_CLASS_UID, VR::UI, DX_STORAGE);
    text(
        &mut obj,
        tags::SOP_INSTANCE_UID,
        VR::UI,
        "1.2.826.0.1.3680043.2.1",
    );
    text(&mut obj, tags::MODALITY, VR::CS, "DX");
    us(&mut obj, tags::ROWS, d.rows);
    us(&mut obj, tags::COLUMNS, d.cols);
    us(&mut obj, tags::BITS_ALLOCATED, d.bits_allocated);
    us(&mut obj, tags::BITS_STORED, d.bits_stored);
    us(&mut obj, tags::HIGH_BIT, d.bits_stored - 1);
    us(&mut obj, tags::PIXEL_REPRESENTATION, u16::from(d.signed));
    us(&mut obj, tags::SAMPLES_PER_PIXEL, d.samples_per_pixel);
    if d.samples_per_pixel > 1 {
        us(&mut obj, tags::PLANAR_CONFIGURATION, 0);
    }
    text(
        &mut obj,
        tags::PHOTOMETRIC_INTERPRETATION,
        VR::CS,
        d.photometric,
    );
    if let Some(n) = d.frames {
        text(&mut obj, tags::NUMBER_OF_FRAMES, VR::IS, &n.to_string());
    }
    if let Some((slope, intercept)) = d.rescale {
        text(&mut obj, tags::RESCALE_SLOPE, VR::DS, slope);
        text(&mut obj, tags::RESCALE_INTERCEPT, VR::DS, intercept);
    }
    if let Some((center, width)) = d.window {
        text(&mut obj, tags::WINDOW_CENTER, VR::DS, center);
        text(&mut obj, tags::WINDOW_WIDTH, VR::DS, width);
    }
    if let Some(f) = d.voi_function {
        text(&mut obj, tags::VOILUT_FUNCTION, VR::CS, f);
    }
    if let Some((value, limit)) = d.padding {
        us(&mut obj, tags::PIXEL_PADDING_VALUE, value);
        if let Some(limit) = limit {
            us(&mut obj, tags::PIXEL_PADDING_RANGE_LIMIT, limit);
        }
    }
    if let Some(shape) = d.presentation_lut {
        text(&mut obj, tags::PRESENTATION_LUT_SHAPE, VR::CS, shape);
    }
    if d.transfer_syntax == EXPLICIT_VR_LE || d.transfer_syntax == DEFLATED {
        let vr = if d.bits_allocated > 8 { VR::OW } else { VR::OB };
        obj.put(DataElement::new(tags::PIXEL_DATA, vr, d.pixels.clone()));
    } else {
        // An encapsulated syntax: `pixels` holds the one frame's fragment.
        let mut fragment = d.pixels.to_bytes().to_vec();
        if fragment.is_empty() {
            fragment = vec![0u8; 16];
        }
        if fragment.len() % 2 == 1 {
            fragment.push(0);
        }
        obj.put(DataElement::new(
            tags::PIXEL_DATA,
            VR::OB,
            dicom_core::value::Value::PixelSequence(dicom_core::value::PixelFragmentSequence::new(
                Vec::<u32>::new(),
                vec![fragment],
            )),
        ));
    }
    obj.with_meta(FileMetaTableBuilder::new().transfer_syntax(d.transfer_syntax))
        .unwrap()
}

#[test]
fn dicom_monochrome2_rescale_and_linear_window() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m2.dcm");
    // 12 bits stored: the top nibble of the second pixel is junk to be masked.
    let raw = [0u16, 0xF000 | 150, 200, 250, 300, 4095];
    let d = Dcm {
        bits_stored: 12,
        rescale: Some(("2", "-100")),
        window: Some(("300", "401")),
        ..Dcm::mono2(3, 2, &raw)
    };
    write_dicom(&path, &d);
    let img = decode_file(&path).unwrap();
    assert_eq!((img.width, img.height), (3, 2));
    // Modality values 2v - 100: -100, 200, 300, 400, 500, 8090.
    // LINEAR, c = 300, w = 401: 0 at x <= 99.5, 1 at x > 499.5, else
    // (x - 299.5) / 400 + 0.5.
    let expected = [0.0, 0.25125, 0.50125, 0.75125, 1.0, 1.0];
    assert_pixels(&img, &expected, 1e-6);
    // Quantised: 0.25125 * 255 = 64.07, 0.50125 * 255 = 127.82, 0.75125 * 255 = 191.57.
    assert_eq!(
        resize_to_square(&img, 3, ResizeMode::Pad),
        vec![0, 64, 128, 192, 255, 255, 0, 0, 0]
    );
}

#[test]
fn dicom_multi_valued_windows_use_their_first_values() {
    let dir = tempfile::tempdir().unwrap();
    let raw = [0u16, 100, 200, 400];
    let read = |name: &str, window: (&'static str, &'static str)| {
        let path = dir.path().join(name);
        let d = Dcm {
            window: Some(window),
            ..Dcm::mono2(2, 2, &raw)
        };
        write_dicom(&path, &d);
        decode_file(&path).unwrap()
    };
    // Two centers, one width: the first center with that width (LINEAR,
    // c = 2048, w = 4096: (x - 2047.5) / 4095 + 0.5), not a refused file.
    let img = read("unpaired.dcm", ("2048\\1024", "4096"));
    let linear = |x: f64| (x - 2047.5) / 4095.0 + 0.5;
    assert_pixels(
        &img,
        &[0.0, linear(100.0), linear(200.0), linear(400.0)],
        1e-6,
    );
    // Two of each: the first pair (LINEAR, c = 200, w = 401).
    let img = read("paired.dcm", ("200\\1000", "401\\10"));
    assert_pixels(&img, &[0.00125, 0.25125, 0.50125, 1.0], 1e-6);
}

#[test]
fn dicom_monochrome1_is_inverted() {
    let dir = tempfile::tempdir().unwrap();
    // With a window: c = 2048, w = 4096: 0 at x <= 0, 1 at x > 4095,
    // else (x - 2047.5) / 4095 + 0.5; then 1 - v.
    let path = dir.path().join("m1w.dcm");
    let d = Dcm {
        photometric: "MONOCHROME1",
        bits_stored: 12,
        window: Some(("2048", "4096")),
        ..Dcm::mono2(4, 1, &[0, 1024, 2048, 4095])
    };
    write_dicom(&path, &d);
    let lin = |x: f64| (x - 2047.5) / 4095.0 + 0.5;
    let expected = [1.0, 1.0 - lin(1024.0), 1.0 - lin(2048.0), 1.0 - lin(4095.0)];
    assert_pixels(&decode_file(&path).unwrap(), &expected, 1e-6);

    // Without a window: min-max, then inverted, so the smallest value is white.
    let path = dir.path().join("m1.dcm");
    let d = Dcm {
        photometric: "MONOCHROME1",
        ..Dcm::mono2(4, 1, &[100, 200, 300, 500])
    };
    assert_pixels(&read_back(&path, &d), &[1.0, 0.75, 0.5, 0.0], 1e-7);
}

#[test]
fn dicom_presentation_lut_inverse_inverts_monochrome2_and_not_monochrome1_twice() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("inverse.dcm");
    for (photometric, shape, want) in [
        ("MONOCHROME2", None, [0.0, 0.25, 0.5, 1.0]),
        ("MONOCHROME2", Some("IDENTITY"), [0.0, 0.25, 0.5, 1.0]),
        ("MONOCHROME2", Some("INVERSE"), [1.0, 0.75, 0.5, 0.0]),
        ("MONOCHROME1", Some("INVERSE"), [1.0, 0.75, 0.5, 0.0]),
        ("MONOCHROME1", None, [1.0, 0.75, 0.5, 0.0]),
    ] {
        let d = Dcm {
            photometric,
            presentation_lut: shape,
            ..Dcm::mono2(4, 1, &[100, 200, 300, 500])
        };
        assert_pixels(&read_back(&path, &d), &want, 1e-7);
    }
}

#[test]
fn dicom_pixel_padding_is_black_and_left_out_of_min_max() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("padded.dcm");
    // Padding 0 around values 100..500: the stretch is over 100..500, not
    // 0..500, and the padding is black.
    let d = Dcm {
        padding: Some((0, None)),
        ..Dcm::mono2(3, 2, &[0, 100, 200, 300, 500, 0])
    };
    assert_pixels(
        &read_back(&path, &d),
        &[0.0, 0.0, 0.25, 0.5, 1.0, 0.0],
        1e-7,
    );
    // Inverted (MONOCHROME1): the image inverts, the padding stays black.
    let d = Dcm {
        photometric: "MONOCHROME1",
        padding: Some((0, None)),
        ..Dcm::mono2(3, 2, &[0, 100, 200, 300, 500, 0])
    };
    assert_pixels(
        &read_back(&path, &d),
        &[0.0, 1.0, 0.75, 0.5, 0.0, 0.0],
        1e-7,
    );
    // A padding range (limit below the value; either order is a range),
    // with a window: values in 4000..=4095 are padding.
    let d = Dcm {
        bits_stored: 12,
        padding: Some((4095, Some(4000))),
        window: Some(("2048", "4096")),
        ..Dcm::mono2(4, 1, &[4095, 4000, 3999, 2048])
    };
    write_dicom(&path, &d);
    let lin = |x: f64| (x - 2047.5) / 4095.0 + 0.5;
    assert_pixels(
        &decode_file(&path).unwrap(),
        &[0.0, 0.0, lin(3999.0), lin(2048.0)],
        1e-6,
    );
    // Signed pixels: the padding value's bits are read as a signed sample
    // (0xF830 = -2000), and the rescale applies after the comparison.
    let values: [i16; 4] = [-2000, -1000, 0, 1000];
    let d = Dcm {
        signed: true,
        rescale: Some(("1", "1024")),
        padding: Some((-2000i16 as u16, None)),
        ..Dcm::mono2(2, 2, &values.map(|v| v as u16))
    };
    assert_pixels(&read_back(&path, &d), &[0.0, 0.0, 0.5, 1.0], 1e-7);
    // The same with 12 bits stored: -2000 is 0xF830 as US, 0x830 in the
    // 12 stored bits; both are -2000.
    let d = Dcm {
        signed: true,
        bits_stored: 12,
        padding: Some((-2000i16 as u16, None)),
        ..Dcm::mono2(2, 2, &values.map(|v| (v as u16) & 0x0FFF))
    };
    assert_pixels(&read_back(&path, &d), &[0.0, 0.0, 0.5, 1.0], 1e-7);
    // A padding value the stored bits cannot hold (0xF830 in unsigned
    // 12-bit data) is compared with the words as written, not masked onto
    // a value: 2096 (0x830) stays an image value.
    let d = Dcm {
        bits_stored: 12,
        padding: Some((0xF830, None)),
        ..Dcm::mono2(2, 2, &[2096, 100, 4000, 0])
    };
    assert_pixels(
        &read_back(&path, &d),
        &[2096.0 / 4000.0, 100.0 / 4000.0, 1.0, 0.0],
        1e-6,
    );
    // And a word written whole as the padding value (0xFFFF in 12-bit
    // data, which masked would read as 4095) is padding.
    let d = Dcm {
        bits_stored: 12,
        padding: Some((0xFFFF, None)),
        ..Dcm::mono2(2, 2, &[0xFFFF, 100, 4000, 0])
    };
    assert_pixels(
        &read_back(&path, &d),
        &[0.0, 100.0 / 4000.0, 1.0, 0.0],
        1e-6,
    );
}

#[test]
fn dicom_without_preamble_or_meta_group_is_read() {
    let dir = tempfile::tempdir().unwrap();
    let d = Dcm {
        window: Some(("2048", "4096")),
        bits_stored: 12,
        ..Dcm::mono2(4, 1, &[0, 1024, 2048, 4095])
    };
    let lin = |x: f64| (x - 2047.5) / 4095.0 + 0.5;
    let want = [0.0, lin(1024.0), lin(2048.0), 1.0];
    let file = dicom_file(&d);
    // `DICM` and the meta group, no preamble.
    let mut no_preamble = b"DICM".to_vec();
    file.write_meta(&mut no_preamble).unwrap();
    file.write_dataset(&mut no_preamble).unwrap();
    // The data set alone, in both little-endian syntaxes (a bare data set
    // says nothing of its syntax: the first element tells).
    let bare = |uid: &str| {
        let ts = dicom_transfer_syntax_registry::TransferSyntaxRegistry
            .get(uid)
            .unwrap();
        let mut out = Vec::new();
        file.write_dataset_with_ts(&mut out, ts).unwrap();
        out
    };
    use dicom_transfer_syntax_registry::TransferSyntaxIndex;
    for (name, bytes) in [
        ("no_preamble", no_preamble),
        ("bare_implicit", bare("1.2.840.10008.1.2")),
        ("bare_explicit", bare(EXPLICIT_VR_LE)),
    ] {
        // No extension: the content decides.
        let path = dir.path().join(name);
        std::fs::write(&path, &bytes).unwrap();
        let img = decode_file(&path).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_pixels(&img, &want, 1e-6);
    }
    // A bare data set that breaks off is undecodable, naming the file and
    // the element cut short.
    let mut cut = bare("1.2.840.10008.1.2");
    cut.truncate(cut.len() - 3);
    let err = decode_bytes(&cut, Path::new("/data/IM0001")).unwrap_err();
    assert!(matches!(&err, ImagingError::Undecodable { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.starts_with("/data/IM0001: "), "{msg}");
    assert!(
        msg.contains("(7FE0,0010) at byte 192 says its value is 8 bytes long")
            && msg.contains("5 bytes left"),
        "{msg}"
    );
    // A bare data set without its pixel data.
    let whole = bare("1.2.840.10008.1.2");
    let err = decode_bytes(&whole[..192], Path::new("/data/IM0002")).unwrap_err();
    assert!(err.to_string().contains("`PixelData`"), "{err}");
}

#[test]
fn dicom_deflated_is_read_and_its_lengths_checked_inflated() {
    let dir = tempfile::tempdir().unwrap();
    let plain = Dcm::mono2(4, 1, &[0, 1000, 2000, 65535]);
    let deflated = Dcm {
        transfer_syntax: DEFLATED,
        ..Dcm::mono2(4, 1, &[0, 1000, 2000, 65535])
    };
    let a = read_back(&dir.path().join("plain.dcm"), &plain);
    let b = read_back(&dir.path().join("deflated.dcm"), &deflated);
    assert_eq!(a.pixels, b.pixels);
    // A deflate stream whose one element says it is 4 GB long: refused
    // from the inflated copy, before the parser would allocate it.
    let mut bytes = vec![0u8; 128];
    bytes.extend_from_slice(b"DICM");
    dicom_file(&deflated).write_meta(&mut bytes).unwrap();
    let mut element = vec![0x08, 0x00, 0x16, 0x00, b'O', b'B', 0, 0];
    element.extend_from_slice(&0xFFFF_FFF0u32.to_le_bytes());
    element.extend_from_slice(&[1, 2, 3, 4]);
    let mut z = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
    std::io::Write::write_all(&mut z, &element).unwrap();
    bytes.extend(z.finish().unwrap());
    let err = decode_bytes(&bytes, Path::new("/data/bomb.dcm")).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, ImagingError::Undecodable { .. }), "{msg}");
    assert!(
        msg.starts_with("/data/bomb.dcm: ")
            && msg.contains("(0008,0016) at byte 0 says its value is 4294967280 bytes long")
            && msg.contains("in its data set as inflated"),
        "{msg}"
    );
    // Garbage where the deflate stream should be: undecodable, said so.
    let mut garbage = bytes[..bytes.len() - 8].to_vec();
    let at = garbage.len() - 20;
    garbage[at..].fill(0xFF);
    let err = decode_bytes(&garbage, Path::new("/data/g.dcm")).unwrap_err();
    assert!(matches!(err, ImagingError::Undecodable { .. }), "{err}");
}

#[test]
fn inflating_stops_at_its_cap() {
    let zeros = vec![0u8; 10_000];
    let mut z = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
    std::io::Write::write_all(&mut z, &zeros).unwrap();
    let deflated = z.finish().unwrap();
    assert_eq!(
        super::dicom::inflate_capped(&deflated, 10_000)
            .unwrap()
            .len(),
        10_000
    );
    let err = super::dicom::inflate_capped(&deflated, 9_999).unwrap_err();
    assert!(err.contains("more than 9999 bytes"), "{err}");
}

#[test]
fn dicom_without_window_is_min_max_after_rescale_signed() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("signed.dcm");
    let values: [i16; 4] = [-1000, -500, 0, 1000];
    let raw: Vec<u16> = values.iter().map(|&v| v as u16).collect();
    let d = Dcm {
        signed: true,
        rescale: Some(("0.5", "24")),
        ..Dcm::mono2(2, 2, &raw)
    };
    write_dicom(&path, &d);
    // Modality: -476, -226, 24, 524; min-max over a range of 1000.
    assert_pixels(&decode_file(&path).unwrap(), &[0.0, 0.25, 0.5, 1.0], 1e-7);
}

#[test]
fn dicom_constant_frame_without_window_is_black() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("flat.dcm");
    write_dicom(&path, &Dcm::mono2(2, 2, &[7, 7, 7, 7]));
    let img = decode_file(&path).unwrap();
    assert_pixels(&img, &[0.0; 4], 0.0);
    assert!(img.is_blank());
}

#[test]
fn dicom_linear_exact_and_sigmoid_windows() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("exact.dcm");
    // LINEAR_EXACT, c = 100, w = 200: (x - 100) / 200 + 0.5 between 0 and 200.
    let d = Dcm {
        window: Some(("100", "200")),
        voi_function: Some("LINEAR_EXACT"),
        ..Dcm::mono2(4, 1, &[0, 50, 150, 300])
    };
    assert_pixels(&read_back(&path, &d), &[0.0, 0.25, 0.75, 1.0], 1e-7);

    let path = dir.path().join("sigmoid.dcm");
    let d = Dcm {
        window: Some(("100", "200")),
        voi_function: Some("SIGMOID"),
        ..Dcm::mono2(3, 1, &[0, 100, 150])
    };
    write_dicom(&path, &d);
    let sig = |x: f64| 1.0 / (1.0 + (-4.0 * (x - 100.0) / 200.0).exp());
    assert_pixels(
        &decode_file(&path).unwrap(),
        &[sig(0.0), 0.5, sig(150.0)],
        1e-6,
    );
}

#[test]
fn dicom_multi_frame_reads_the_first_frame() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("frames.dcm");
    let d = Dcm {
        frames: Some(2),
        ..Dcm::mono2(2, 2, &[0, 10, 20, 30, 1000, 0, 0, 0])
    };
    write_dicom(&path, &d);
    let img = decode_file(&path).unwrap();
    assert_eq!((img.width, img.height), (2, 2));
    assert_pixels(&img, &[0.0, 1.0 / 3.0, 2.0 / 3.0, 1.0], 1e-6);
}

#[test]
fn dicom_8bit_rgb_becomes_luma() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rgb.dcm");
    let bytes: Vec<u8> = vec![255, 0, 0, 0, 255, 0, 0, 0, 255, 10, 200, 30];
    let d = Dcm {
        bits_allocated: 8,
        bits_stored: 8,
        samples_per_pixel: 3,
        photometric: "RGB",
        pixels: PrimitiveValue::U8(bytes.into_iter().collect()),
        ..Dcm::mono2(2, 2, &[])
    };
    write_dicom(&path, &d);
    let expected = [0.299, 0.587, 0.114, 123.81 / 255.0];
    assert_pixels(&decode_file(&path).unwrap(), &expected, 1e-6);
}

/// One RLE Lossless fragment of an 8-bit, 3-sample frame of 4 pixels: a
/// 64-byte header (3 segments) and one PackBits literal run per plane.
fn rle_fragment(planes: [[u8; 4]; 3]) -> Vec<u8> {
    let mut header = vec![0u8; 64];
    header[0..4].copy_from_slice(&3u32.to_le_bytes());
    let mut body = Vec::new();
    for (i, plane) in planes.iter().enumerate() {
        let offset = 64 + body.len() as u32;
        header[4 + 4 * i..8 + 4 * i].copy_from_slice(&offset.to_le_bytes());
        body.push(3); // four literal bytes follow
        body.extend_from_slice(plane);
        body.push(0x80); // no-op: keeps each segment even
    }
    header.extend(body);
    header
}

#[test]
fn dicom_rle_ybr_full_is_read_by_its_y_plane() {
    let dir = tempfile::tempdir().unwrap();
    // Gray pixels stored as YBR_FULL: Y carries the image, Cb = Cr = 128.
    let y = [200u8, 50, 0, 255];
    let write = |name: &str, photometric: &'static str, planes| {
        let path = dir.path().join(name);
        let d = Dcm {
            bits_allocated: 8,
            bits_stored: 8,
            samples_per_pixel: 3,
            photometric,
            transfer_syntax: RLE_LOSSLESS,
            pixels: PrimitiveValue::U8(rle_fragment(planes).into_iter().collect()),
            ..Dcm::mono2(2, 2, &[])
        };
        write_dicom(&path, &d);
        decode_file(&path).unwrap()
    };
    let img = write("ybr.dcm", "YBR_FULL", [y, [128; 4], [128; 4]]);
    let expected: Vec<f64> = y.iter().map(|&v| f64::from(v) / 255.0).collect();
    assert_pixels(&img, &expected, 1e-6);
    // RGB under RLE is still read as RGB (BT.601 luma).
    let img = write(
        "rgb.dcm",
        "RGB",
        [[255, 0, 0, 10], [0, 255, 0, 200], [0, 0, 255, 30]],
    );
    assert_pixels(&img, &[0.299, 0.587, 0.114, 123.81 / 255.0], 1e-6);
}

#[test]
fn dicom_8bit_monochrome() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("g8.dcm");
    let d = Dcm {
        bits_allocated: 8,
        bits_stored: 8,
        window: Some(("128", "256")),
        pixels: PrimitiveValue::U8([0u8, 64, 128, 255].into_iter().collect()),
        ..Dcm::mono2(2, 2, &[])
    };
    write_dicom(&path, &d);
    let lin = |x: f64| (x - 127.5) / 255.0 + 0.5;
    let expected = [0.0, lin(64.0), lin(128.0), 1.0];
    assert_pixels(&decode_file(&path).unwrap(), &expected, 1e-6);
}

#[test]
fn dicom_unsupported_things_are_unsupported() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("j2k.dcm");
    let d = Dcm {
        transfer_syntax: JPEG_2000,
        ..Dcm::mono2(4, 4, &[])
    };
    write_dicom(&path, &d);
    let err = decode_file(&path).unwrap_err();
    assert!(
        matches!(&err, ImagingError::Unsupported { path: p, what } if p == &path && what.contains(JPEG_2000)),
        "{err:?}"
    );

    let path = dir.path().join("palette.dcm");
    let d = Dcm {
        photometric: "PALETTE COLOR",
        ..Dcm::mono2(2, 1, &[0, 1])
    };
    write_dicom(&path, &d);
    let err = decode_file(&path).unwrap_err();
    assert!(
        matches!(&err, ImagingError::Unsupported { what, .. } if what.contains("PALETTE COLOR")),
        "{err:?}"
    );
    assert!(err.to_string().contains(&path.display().to_string()));
}

#[test]
fn dicom_jpeg_baseline_is_decoded() {
    let dir = tempfile::tempdir().unwrap();
    let encode = |img: image::DynamicImage| {
        let mut jpeg = Vec::new();
        let enc = image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpeg, 100);
        img.write_with_encoder(enc).unwrap();
        PrimitiveValue::U8(jpeg.into_iter().collect())
    };

    // Gray: MONOCHROME2, 8 bits, min-max over the decoded values.
    let path = dir.path().join("jpeg_gray.dcm");
    let src = ImageBuffer::from_fn(16, 16, |x, _| Luma([if x < 8 { 40u8 } else { 220 }]));
    let d = Dcm {
        transfer_syntax: JPEG_BASELINE,
        bits_allocated: 8,
        bits_stored: 8,
        pixels: encode(src.into()),
        ..Dcm::mono2(16, 16, &[])
    };
    write_dicom(&path, &d);
    let img = decode_file(&path).unwrap();
    assert_eq!((img.width, img.height), (16, 16));
    for y in 0..16 {
        for x in 0..16 {
            let want = if x < 8 { 0.0 } else { 1.0 };
            assert!(close(img.get(x, y), want, 0.02), "({x}, {y})");
        }
    }

    // Colour: stored as YCbCr, decoded to RGB, then BT.601 luma.
    let path = dir.path().join("jpeg_rgb.dcm");
    let src = ImageBuffer::from_pixel(16, 16, Rgb([200u8, 100, 50]));
    let d = Dcm {
        transfer_syntax: JPEG_BASELINE,
        bits_allocated: 8,
        bits_stored: 8,
        samples_per_pixel: 3,
        photometric: "YBR_FULL_422",
        pixels: encode(src.into()),
        ..Dcm::mono2(16, 16, &[])
    };
    write_dicom(&path, &d);
    let want = (0.299 * 200.0 + 0.587 * 100.0 + 0.114 * 50.0) / 255.0;
    let img = decode_file(&path).unwrap();
    assert!(img.pixels.iter().all(|&v| close(v, want, 4.0 / 255.0)));

    // A JPEG whose own header disagrees with Rows and Columns (the decoder
    // would work at the JPEG's size): refused, both sizes named.
    let path = dir.path().join("jpeg_other_size.dcm");
    let src = ImageBuffer::from_pixel(16, 8, Luma([90u8]));
    let d = Dcm {
        transfer_syntax: JPEG_BASELINE,
        bits_allocated: 8,
        bits_stored: 8,
        pixels: encode(src.into()),
        ..Dcm::mono2(10, 10, &[])
    };
    write_dicom(&path, &d);
    let err = decode_file(&path).unwrap_err().to_string();
    assert!(
        err.contains("its JPEG pixel data is 16 x 8 pixels, but Columns and Rows say 10 x 10"),
        "{err}"
    );
}

#[test]
fn broken_dicom_is_undecodable_naming_the_path() {
    let mut bytes = vec![0u8; 128];
    bytes.extend_from_slice(b"DICM");
    bytes.extend_from_slice(b"\x02\x00\x10\x00garbage garbage garbage");
    let name = Path::new("/data/broken.dcm");
    let err = decode_bytes(&bytes, name).unwrap_err();
    assert!(
        matches!(&err, ImagingError::Undecodable { path, .. } if path == name),
        "{err:?}"
    );
    assert!(err.to_string().starts_with("/data/broken.dcm: "));

    // A valid header whose pixel data is cut short.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("short.dcm");
    write_dicom(&path, &Dcm::mono2(100, 100, &[1, 2, 3]));
    let err = decode_file(&path).unwrap_err();
    assert!(matches!(&err, ImagingError::Undecodable { .. }), "{err:?}");

    // A damaged length (4 GB stated in a file of a few hundred bytes) is
    // found before anything is read or allocated.
    let path = dir.path().join("long.dcm");
    write_dicom(&path, &Dcm::mono2(2, 2, &[1, 2, 3, 4]));
    let mut bytes = std::fs::read(&path).unwrap();
    let at = bytes
        .windows(6)
        .position(|w| w == b"\xe0\x7f\x10\x00OW")
        .unwrap();
    bytes[at + 8..at + 12].copy_from_slice(&0xF000_0000u32.to_le_bytes());
    let err = decode_bytes(&bytes, &path).unwrap_err();
    assert!(matches!(&err, ImagingError::Undecodable { .. }), "{err:?}");
    assert!(
        err.to_string().contains("(7FE0,0010) at byte ")
            && err.to_string().contains("4026531840 bytes long"),
        "{err}"
    );
    // The same in the file meta group.
    let mut bytes = std::fs::read(&path).unwrap();
    let at = bytes
        .windows(6)
        .position(|w| w == b"\x02\x00\x10\x00UI")
        .unwrap();
    bytes[at + 6..at + 8].copy_from_slice(&0xFFF0u16.to_le_bytes());
    let err = decode_bytes(&bytes, &path).unwrap_err();
    assert!(err.to_string().contains("(0002,0010)"), "{err}");

    // Zero rows and columns.
    let path = dir.path().join("zero.dcm");
    write_dicom(&path, &Dcm::mono2(0, 0, &[]));
    let err = decode_file(&path).unwrap_err();
    assert!(
        matches!(&err, ImagingError::Empty { path: p } if p == &path),
        "{err:?}"
    );
}

// ---------------------------------------------------------------- resizing

fn constant(width: u32, height: u32, v: f32) -> GrayImage {
    GrayImage {
        width,
        height,
        pixels: vec![v; (width * height) as usize],
    }
}

#[test]
fn pad_keeps_the_aspect_ratio() {
    let out = resize_to_square(&constant(100, 50, 1.0), 64, ResizeMode::Pad);
    assert_eq!(out.len(), 64 * 64);
    for (y, row) in out.chunks(64).enumerate() {
        let want = if (16..48).contains(&y) { 255 } else { 0 };
        assert!(row.iter().all(|&v| v == want), "row {y}: {row:?}");
    }
    // Portrait: the left and right 16 columns are black.
    let out = resize_to_square(&constant(50, 100, 1.0), 64, ResizeMode::Pad);
    for row in out.chunks(64) {
        for (x, &v) in row.iter().enumerate() {
            assert_eq!(v, if (16..48).contains(&x) { 255 } else { 0 }, "column {x}");
        }
    }
    // An odd leftover goes to the bottom: 3 x 2 -> 4 x 3 (2 * 4 / 3 = 2.67 -> 3).
    let out = resize_to_square(&constant(3, 2, 1.0), 4, ResizeMode::Pad);
    assert_eq!(&out[..4], &[255; 4]);
    assert_eq!(&out[12..], &[0; 4]);
}

#[test]
fn stretch_fills_the_square() {
    let out = resize_to_square(&constant(100, 50, 1.0), 64, ResizeMode::Stretch);
    assert_eq!(out.len(), 64 * 64);
    assert!(out.iter().all(|&v| v == 255));
    // A left-to-right split stays split at the middle.
    let img = GrayImage {
        width: 100,
        height: 50,
        pixels: (0..5000)
            .map(|i| if i % 100 < 50 { 0.0 } else { 1.0 })
            .collect(),
    };
    let out = resize_to_square(&img, 64, ResizeMode::Stretch);
    for row in out.chunks(64) {
        assert!(row[..32].iter().all(|&v| v == 0));
        assert!(row[32..].iter().all(|&v| v == 255));
    }
}

#[test]
fn a_constant_image_stays_constant() {
    let want = (0.4f32 * 255.0).round() as u8;
    for (w, h, size) in [
        (37, 91, 64),
        (2000, 1500, 64),
        (10, 10, 224),
        (1, 1, 5),
        (300, 7, 33),
    ] {
        let out = resize_to_square(&constant(w, h, 0.4), size, ResizeMode::Stretch);
        assert!(out.iter().all(|&v| v == want), "{w}x{h} -> {size}");
    }
}

#[test]
fn large_reductions_average_instead_of_aliasing() {
    // A one-pixel checkerboard and one-pixel stripes, 2000 -> 64: every output
    // pixel averages 31.25 x 31.25 source pixels, so all come out mid-gray.
    // Sampling a few source pixels per output would give 0s and 255s.
    let checker = GrayImage {
        width: 2000,
        height: 2000,
        pixels: (0..2000 * 2000)
            .map(|i| ((i % 2000 + i / 2000) % 2) as f32)
            .collect(),
    };
    let stripes = GrayImage {
        pixels: (0..2000 * 2000).map(|i| ((i % 2000) % 2) as f32).collect(),
        ..checker.clone()
    };
    for img in [checker, stripes] {
        let out = resize_to_square(&img, 64, ResizeMode::Stretch);
        let (lo, hi) = (out.iter().min().unwrap(), out.iter().max().unwrap());
        // A footprint of 31.25 pixels holds 15.25 to 16 ones: 124.4 to 130.6.
        assert!(*lo >= 124 && *hi <= 131, "{lo}..{hi}");
    }
}

#[test]
fn shrinking_averages_areas_and_enlarging_interpolates() {
    // 4x4 of 2x2 blocks -> 2x2 block means.
    let img = GrayImage {
        width: 4,
        height: 4,
        pixels: vec![
            0.0, 0.2, 1.0, 1.0, //
            0.2, 0.4, 1.0, 1.0, //
            0.6, 0.6, 0.2, 0.6, //
            0.6, 0.6, 0.6, 0.2,
        ],
    };
    assert_eq!(
        resize_to_square(&img, 2, ResizeMode::Stretch),
        vec![51, 255, 153, 102]
    );
    // Bilinear 2 -> 4: 0, 0.25, 0.75, 1 along each row.
    let img = GrayImage {
        width: 2,
        height: 2,
        pixels: vec![0.0, 1.0, 0.0, 1.0],
    };
    let out = resize_to_square(&img, 4, ResizeMode::Stretch);
    for row in out.chunks(4) {
        assert_eq!(row, &[0, 64, 191, 255]);
    }
}

#[test]
fn degenerate_inputs_give_black() {
    assert!(resize_to_square(&constant(5, 5, 1.0), 0, ResizeMode::Pad).is_empty());
    let empty = GrayImage {
        width: 0,
        height: 0,
        pixels: vec![],
    };
    assert_eq!(resize_to_square(&empty, 3, ResizeMode::Pad), vec![0; 9]);
    // Out-of-range values are clamped.
    let img = GrayImage {
        width: 2,
        height: 1,
        pixels: vec![-0.5, 1.5],
    };
    assert_eq!(
        resize_to_square(&img, 2, ResizeMode::Pad),
        vec![0, 255, 0, 0]
    );
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(300))]
    /// A DICOM file (Part 10, or a bare data set found by its first
    /// element) with bytes overwritten anywhere, lengths included, is
    /// decoded or refused, never a panic.
    #[test]
    fn a_damaged_dicom_file_is_refused_without_panicking(
        damage in proptest::collection::vec((0usize..4096, proptest::prelude::any::<u8>()), 1..8),
        framing in 0..3u8,
    ) {
        use dicom_transfer_syntax_registry::TransferSyntaxIndex;
        let file = dicom_file(&Dcm {
            rescale: Some(("1", "0")),
            ..Dcm::mono2(4, 2, &[0, 1, 2, 3, 4, 5, 6, 7])
        });
        let mut bytes = Vec::new();
        let keep = if framing == 0 {
            // Part 10: the preamble and `DICM` kept.
            file.write_all(&mut bytes).unwrap();
            132
        } else {
            let uid = if framing == 1 { EXPLICIT_VR_LE } else { "1.2.840.10008.1.2" };
            let ts = dicom_transfer_syntax_registry::TransferSyntaxRegistry.get(uid).unwrap();
            file.write_dataset_with_ts(&mut bytes, ts).unwrap();
            // The first four bytes make it a data set at all.
            4
        };
        for (at, b) in damage {
            let at = keep + at % (bytes.len() - keep);
            bytes[at] = b;
        }
        let _ = decode_bytes(&bytes, Path::new("damaged"));
    }
}
