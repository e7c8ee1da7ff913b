//! The standard normal distribution: CDF and quantile function.

// The AS 241 coefficients are kept digit for digit as Wichura published them (more
// digits than an f64 holds), so they can be checked against the paper.
#![allow(clippy::excessive_precision)]

use std::f64::consts::SQRT_2;

/// Standard normal CDF, `Φ(x) = erfc(−x/√2) / 2`.
///
/// Written with the complementary error function so both tails keep full relative
/// precision (`Φ(−10) ≈ 7.6e−24`, not 0). `Φ(±inf) = 1, 0`; NaN gives NaN.
pub fn normal_cdf(x: f64) -> f64 {
    0.5 * libm::erfc(-x / SQRT_2)
}

/// Horner evaluation of `c[0] + c[1] r + … + c[7] r⁷`.
fn poly(c: &[f64; 8], r: f64) -> f64 {
    c.iter().rev().fold(0.0, |acc, &k| acc * r + k)
}

// Coefficients of Wichura's AS 241 (PPND16): numerator and denominator of the central
// region |p − 1/2| <= 0.425, then of the tails for r = sqrt(−ln min(p, 1−p)) <= 5 and > 5.
const A: [f64; 8] = [
    3.387_132_872_796_366_608,
    1.331_416_678_917_843_774_5e2,
    1.971_590_950_306_551_442_7e3,
    1.373_169_376_550_946_112_5e4,
    4.592_195_393_154_987_145_7e4,
    6.726_577_092_700_870_085_3e4,
    3.343_057_558_358_812_810_5e4,
    2.509_080_928_730_122_672_7e3,
];
const B: [f64; 8] = [
    1.0,
    4.231_333_070_160_091_125_2e1,
    6.871_870_074_920_579_083e2,
    5.394_196_021_424_751_107_7e3,
    2.121_379_430_158_659_586_7e4,
    3.930_789_580_009_271_061e4,
    2.872_908_573_572_194_267_4e4,
    5.226_495_278_852_854_561e3,
];
const C: [f64; 8] = [
    1.423_437_110_749_683_577_34,
    4.630_337_846_156_545_295_9,
    5.769_497_221_460_691_405_5,
    3.647_848_324_763_204_605_04,
    1.270_458_252_452_368_382_58,
    2.417_807_251_774_506_117_7e-1,
    2.272_384_498_926_918_458_33e-2,
    7.745_450_142_783_414_076_4e-4,
];
const D: [f64; 8] = [
    1.0,
    2.053_191_626_637_758_821_87,
    1.676_384_830_183_803_849_4,
    6.897_673_349_851_000_045_5e-1,
    1.481_039_764_274_800_745_9e-1,
    1.519_866_656_361_645_719_66e-2,
    5.475_938_084_995_344_946e-4,
    1.050_750_071_644_416_843_24e-9,
];
const E: [f64; 8] = [
    6.657_904_643_501_103_777_2,
    5.463_784_911_164_114_369_9,
    1.784_826_539_917_291_335_8,
    2.965_605_718_285_048_912_3e-1,
    2.653_218_952_657_612_309_3e-2,
    1.242_660_947_388_078_438_6e-3,
    2.711_555_568_743_487_578_15e-5,
    2.010_334_399_292_288_132_65e-7,
];
const F: [f64; 8] = [
    1.0,
    5.998_322_065_558_879_376_9e-1,
    1.369_298_809_227_358_053_1e-1,
    1.487_536_129_085_061_485_25e-2,
    7.868_691_311_456_132_591e-4,
    1.846_318_317_510_054_681_8e-5,
    1.421_511_758_316_445_888_7e-7,
    2.044_263_103_389_939_785_64e-15,
];

/// Standard normal quantile `Φ⁻¹(p)`, by Wichura's algorithm AS 241 (PPND16), whose
/// relative error is about 1e−16 over `(0, 1)`.
///
/// `normal_quantile(0.975) = 1.959963984540054`. Returns `−inf` at `p = 0`, `+inf` at
/// `p = 1`, and NaN for NaN or `p` outside `[0, 1]`.
pub fn normal_quantile(p: f64) -> f64 {
    if p.is_nan() || !(0.0..=1.0).contains(&p) {
        return f64::NAN;
    }
    if p == 0.0 {
        return f64::NEG_INFINITY;
    }
    if p == 1.0 {
        return f64::INFINITY;
    }
    let q = p - 0.5;
    if q.abs() <= 0.425 {
        let r = 0.180_625 - q * q;
        return q * poly(&A, r) / poly(&B, r);
    }
    let tail = if q < 0.0 { p } else { 1.0 - p };
    let r = (-tail.ln()).sqrt();
    let x = if r <= 5.0 {
        let r = r - 1.6;
        poly(&C, r) / poly(&D, r)
    } else {
        let r = r - 5.0;
        poly(&E, r) / poly(&F, r)
    };
    if q < 0.0 {
        -x
    } else {
        x
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantile_975_is_1_959963985() {
        assert!((normal_quantile(0.975) - 1.959_963_985).abs() < 1e-8);
        assert!((normal_quantile(0.025) + 1.959_963_985).abs() < 1e-8);
        assert!((normal_cdf(1.959_963_985) - 0.975).abs() < 1e-9);
    }

    #[test]
    fn known_values() {
        // Published reference values of Φ⁻¹ (e.g. Abramowitz & Stegun table 26.5, to
        // the digits given there and beyond by any standard library).
        let cases = [
            (0.5, 0.0),
            (0.9, 1.281_551_565_544_600_5),
            (0.95, 1.644_853_626_951_472_2),
            (0.995, 2.575_829_303_548_900_4),
            (0.999, 3.090_232_306_167_813_5),
        ];
        for (p, x) in cases {
            assert!((normal_quantile(p) - x).abs() < 1e-12, "p = {p}");
        }
        assert!((normal_cdf(0.0) - 0.5).abs() < 1e-16);
        assert!((normal_cdf(1.0) - 0.841_344_746_068_542_9).abs() < 1e-15);
    }

    #[test]
    fn quantile_inverts_cdf_across_regions() {
        // Central region, first tail region (r <= 5) and far tail (r > 5, p < 1.4e-11).
        for p in [
            1e-300, 1e-20, 1e-12, 1e-6, 0.001, 0.02, 0.075, 0.2, 0.5, 0.8, 0.97, 0.999_999,
        ] {
            let x = normal_quantile(p);
            let back = normal_cdf(x);
            assert!(
                ((back - p) / p).abs() < 1e-12,
                "p = {p}: x = {x}, Φ(x) = {back}"
            );
            if p >= 1e-6 {
                // Symmetry Φ⁻¹(1 − p) = −Φ⁻¹(p), where 1 − p is exact enough.
                assert!((normal_quantile(1.0 - p) + x).abs() < 1e-9, "p = {p}");
            }
        }
    }

    #[test]
    fn quantile_limits() {
        assert_eq!(normal_quantile(0.0), f64::NEG_INFINITY);
        assert_eq!(normal_quantile(1.0), f64::INFINITY);
        assert!(normal_quantile(-0.1).is_nan());
        assert!(normal_quantile(1.1).is_nan());
        assert!(normal_quantile(f64::NAN).is_nan());
        assert_eq!(normal_cdf(f64::INFINITY), 1.0);
        assert_eq!(normal_cdf(f64::NEG_INFINITY), 0.0);
    }
}
