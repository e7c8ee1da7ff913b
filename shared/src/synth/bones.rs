//! The shapes of the individual bones and the soft tissue, for
//! [`super::anatomy::KneeView`]: each returns its signed distance, tube
//! radius, cortical thickness, marrow density and growth-plate effects at a
//! point (see the model in [`super::anatomy`]).

use super::anatomy::{BoneSample, KneeView};
use super::raster::{ellipse_sdf, lerp, smax, smin, smoothstep, superellipse_sdf};

/// A smooth bump of half-width `w` centred at 0 (1 at the centre).
#[inline]
fn bump(u: f32, w: f32) -> f32 {
    let t = 1.0 - (u / w) * (u / w);
    if t > 0.0 {
        t * t
    } else {
        0.0
    }
}

impl KneeView<'_> {
    pub(super) fn femur_axis(&self, y: f32) -> f32 {
        let k = self.knee;
        let t = smoothstep(-0.34 * k.scale, -0.1 * k.scale, y);
        self.project(k.valgus * (-y - 0.15).max(0.0), -0.03 * k.scale * t)
    }

    /// (half-width, d half-width / dy) of the femur above the condyles.
    pub(super) fn femur_half_width(&self, y: f32) -> (f32, f32) {
        let k = self.knee;
        // Trumpet-shaped metaphysis: the width grows ever faster toward the
        // condyles.
        let (a, b) = (-0.42 * k.scale, -0.14 * k.scale);
        let u = ((y - a) / (b - a)).clamp(0.0, 1.0);
        let t = u * u;
        let dt = if (0.0..1.0).contains(&u) {
            2.0 * u / (b - a)
        } else {
            0.0
        };
        let distal = self.width(k.femur_distal, k.femur_depth);
        (
            lerp(k.femur_shaft, distal, t),
            (distal - k.femur_shaft) * dt,
        )
    }

    pub(super) fn tibia_half_width(&self, y: f32) -> (f32, f32) {
        let k = self.knee;
        // Trumpet-shaped metaphysis below the condylar block.
        let (a, b) = (0.05 * k.scale, 0.42 * k.scale);
        let u = ((y - a) / (b - a)).clamp(0.0, 1.0);
        let t = 1.0 - (1.0 - u) * (1.0 - u);
        let dt = if (0.0..1.0).contains(&u) {
            2.0 * (1.0 - u) / (b - a)
        } else {
            0.0
        };
        let top = 0.93 * self.width(k.plateau, k.tibia_depth);
        (lerp(top, k.tibia_shaft, t), (k.tibia_shaft - top) * dt)
    }

    pub(super) fn fibula_head_centre(&self) -> (f32, f32) {
        let k = self.knee;
        (
            self.project(k.fibula_offset, -0.12 * k.scale),
            0.1 * k.scale,
        )
    }

    pub(super) fn fibula_shaft_x(&self) -> f32 {
        let k = self.knee;
        self.project(k.fibula_offset - 0.012 * k.scale, -0.12 * k.scale)
    }

    /// Height of a growth plate line: `base` plus a gentle undulation.
    pub(super) fn physis_line(&self, x: f32, base: f32, phase: f32) -> f32 {
        let s = self.knee.scale;
        base + 0.008 * s * (x / s * 18.0 + phase).sin() - 0.01 * s * bump(x, 0.08 * s)
    }

    /// Growth plate at height `base` (undulating with `phase`) seen at
    /// (`x`, `y`), x relative to the bone axis: (lucency, sclerosis).
    pub(super) fn physis_effect(&self, x: f32, y: f32, base: f32, phase: f32) -> (f32, f32) {
        let k = self.knee;
        if (y - base).abs() > 0.05 * k.scale {
            return (0.0, 0.0);
        }
        let d = y - self.physis_line(x, base, phase);
        let w = (0.003 + 0.006 * k.physis) * k.scale;
        let band = (-(d * d) / (w * w)).exp();
        let edge = (-((d - 1.4 * w) / (0.004 * k.scale)).powi(2)).exp();
        let lucency = 0.9 * k.physis * band;
        let scar = (1.0 - k.physis) * 0.2 * (-(d * d) / (0.0025 * k.scale).powi(2)).exp();
        (lucency, scar + 0.3 * k.physis * edge)
    }

    pub(super) fn femur(&self, x: f32, y: f32) -> BoneSample {
        let k = self.knee;
        let s = k.scale;
        let (hw, dhw) = self.femur_half_width(y);
        let axis = self.femur_axis(y);
        let slab = ((x - axis).abs() - hw) / (1.0 + dhw * dhw).sqrt();
        let b = k.condyle_height;
        // Two condyles overlapping near the midline leave a shallow notch.
        let a_ml = k.femur_distal / 1.8;
        let c_ml = 0.8 * a_ml;
        let a = self.width(a_ml, k.femur_depth * 0.9);
        let cy_m = -k.gap_medial - b;
        let cy_l = -k.gap_lateral - b;
        let cut = y - 0.5 * (cy_m + cy_l);
        let shaft = slab.max(cut);
        let cm = superellipse_sdf(x - self.project(-c_ml, -0.03 * s), y - cy_m, a, b, 3);
        let cl = superellipse_sdf(x - self.project(c_ml, -0.03 * s), y - cy_l, a, b * 0.97, 3);
        let mut sdf = smin(shaft, cm.min(cl), 0.025 * s);
        if k.osteoarthritis > 0.0 {
            for side in [-1.0, 1.0] {
                let ox = self.project(side * k.femur_distal, 0.0);
                let spur = ellipse_sdf(x - ox, y - cy_m * 0.6, 0.016 * s, 0.012 * s);
                sdf = smin(sdf, spur + 0.012 * s * (1.0 - k.osteoarthritis), 0.01 * s);
            }
        }
        let t = smoothstep(-0.4 * s, -0.12 * s, y);
        let joint = smoothstep(0.03 * s, 0.0, y - 0.5 * (cy_m + cy_l) - b);
        let (physis, scar) =
            self.physis_effect(x - axis, y, cy_m - b - 0.012 * s, k.physis_phase[0]);
        BoneSample {
            sdf,
            radius: hw.min(0.17 * s),
            cortex: lerp(0.022, 0.006, t) * s * k.cortex,
            marrow: lerp(0.3, 1.0, smoothstep(-0.44 * s, -0.22 * s, y)),
            physis,
            sclerosis: scar + 0.5 * k.osteoarthritis * joint,
        }
    }

    pub(super) fn tibia_top(&self, x: f32) -> f32 {
        let k = self.knee;
        let s = k.scale;
        let spine_x = 0.022 * s * self.cos;
        let spines = bump(x - self.project(0.0, -0.01) - spine_x, 0.016 * s)
            + bump(x - self.project(0.0, -0.01) + spine_x, 0.016 * s);
        let u = (x - self.project(0.0, -0.01)) / self.width(k.plateau, k.tibia_depth);
        -0.024 * s * spines.min(1.2) + 0.006 * s * u * u
    }

    pub(super) fn tibia(&self, x: f32, y: f32) -> BoneSample {
        let k = self.knee;
        let s = k.scale;
        let (hw, dhw) = self.tibia_half_width(y);
        let axis = self.project(0.0, -0.01);
        let top = self.tibia_top(x);
        let slab = ((x - axis).abs() - hw) / (1.0 + dhw * dhw).sqrt();
        let shaft = smax(slab, top - y, 0.02 * s);
        // The condylar block: nearly vertical sides, rounded shoulders.
        let block_hw = self.width(k.plateau, k.tibia_depth);
        let block = superellipse_sdf(x - axis, y - 0.035 * s, block_hw, 0.06 * s, 4);
        let mut sdf = smin(shaft, smax(block, top - y, 0.01 * s), 0.03 * s);
        if self.sin > 0.2 {
            let tx = self.project(0.0, k.tibia_depth * 0.85);
            let tub = ellipse_sdf(x - tx, y - 0.13 * s, 0.035 * s * self.sin, 0.07 * s);
            sdf = smin(sdf, tub, 0.03 * s);
        }
        if k.osteoarthritis > 0.0 {
            for side in [-1.0, 1.0] {
                let ox = axis + side * hw;
                let spur = ellipse_sdf(x - ox, y - 0.004 * s, 0.018 * s, 0.01 * s);
                sdf = smin(sdf, spur + 0.014 * s * (1.0 - k.osteoarthritis), 0.01 * s);
            }
        }
        let joint = smoothstep(0.03 * s, 0.0, y - top);
        let (physis, scar) = self.physis_effect(x - axis, y, 0.085 * s, k.physis_phase[1]);
        BoneSample {
            sdf,
            radius: hw.min(0.16 * s),
            cortex: lerp(0.006, 0.02, smoothstep(0.1 * s, 0.36 * s, y)) * s * k.cortex,
            marrow: lerp(1.0, 0.3, smoothstep(0.22 * s, 0.44 * s, y)),
            physis,
            sclerosis: scar + 0.5 * k.osteoarthritis * joint,
        }
    }

    pub(super) fn fibula(&self, x: f32, y: f32) -> BoneSample {
        let k = self.knee;
        let s = k.scale;
        let (hx, hy) = self.fibula_head_centre();
        let r = k.fibula_head;
        let head = ellipse_sdf(x - hx, y - hy, r, r * 0.88);
        let ax = self.project(k.fibula_offset + 0.012 * s, -0.12 * s);
        let apex = ellipse_sdf(x - ax, y - (hy - r * 0.75), 0.017 * s, 0.026 * s);
        let sx = self.fibula_shaft_x();
        let shaft = ((x - sx).abs() - k.fibula_shaft).max(hy - y);
        let sdf = smin(smin(head, apex, 0.015 * s), shaft, 0.03 * s);
        let t = smoothstep(hy, hy + 0.09 * s, y);
        let (physis, scar) = self.physis_effect(x - hx, y, hy + 0.3 * r, k.physis_phase[2]);
        BoneSample {
            sdf,
            radius: lerp(r, k.fibula_shaft, t),
            cortex: lerp(0.005, 0.009, t) * s * k.cortex,
            marrow: lerp(0.9, 0.6, t),
            physis,
            sclerosis: scar,
        }
    }

    pub(super) fn patella(&self, x: f32, y: f32) -> BoneSample {
        let k = self.knee;
        let s = k.scale;
        let cx = self.project(0.01, k.femur_depth * 0.8);
        let (w_ml, w_ap) = (k.patella.0, 0.04 * s);
        let a = self.width(w_ml, w_ap);
        // The patella is flat: thin along the ray in AP, thick in lateral.
        let along_ray = ((w_ml * self.sin).powi(2) + (w_ap * self.cos).powi(2)).sqrt();
        let sdf = ellipse_sdf(x - cx, y - k.patella_y, a, k.patella.1);
        BoneSample {
            sdf,
            radius: along_ray.min(a),
            cortex: 0.003 * s * k.cortex,
            marrow: 0.45,
            physis: 0.0,
            sclerosis: 0.0,
        }
    }

    /// Soft-tissue path length through an elliptic limb section with a
    /// subcutaneous fat layer (fat weighted 0.75 of muscle).
    pub(super) fn soft(&self, x: f32, y: f32) -> f32 {
        let k = self.knee;
        let s = k.scale;
        let thigh = smoothstep(0.0, -0.5, y);
        let calf = bump(y - 0.3 * s, 0.25);
        let w = k.soft * (1.0 + 0.18 * thigh + 0.06 * calf);
        let cx = self.project(0.0, -0.02 * s);
        let dx = x - cx;
        let path = |w: f32| 2.0 * (w * w - dx * dx).max(0.0).sqrt();
        let fat = k.fat.min(w * 0.5);
        0.9 * (0.75 * path(w) + 0.25 * path(w - fat))
    }
}
