//! The knee: distal femur, patella, proximal tibia, fibula and the soft
//! tissue around them.
//!
//! Units are image widths at zoom 1; the origin is the middle of the tibial
//! plateau (the joint line) and y grows downwards, as in the image. Each bone
//! is a signed distance field in the projection plane plus, at every point, a
//! local tube radius, cortical thickness and marrow density: the renderer
//! turns these into X-ray path lengths with [`super::raster::tube_paths`], so
//! cortices come out as bright rims around darker medullary bone, overlapping
//! bones (fibular head over tibia, patella over femur) add up, and the joint
//! space is the gap between femoral condyles and tibial plateau.
//!
//! Every width is defined in 3-D (a medial-lateral and an antero-posterior
//! half-width); a view at projection angle phi (0 = antero-posterior,
//! 90 degrees = lateral) sees `sqrt((w_ml cos phi)^2 + (w_ap sin phi)^2)`.
//! Growth plates are open in children, narrowing through adolescence and
//! leaving a faint sclerotic scar in adults; elderly knees may show joint
//! space narrowing, osteophytes and subchondral sclerosis, and lower density.

use super::cohort::{Sex, Subject};
use super::raster::{lerp, smoothstep};
use rand::Rng;

/// The bones drawn; the index is the position in [`Sample::bones`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bone {
    Femur = 0,
    Tibia = 1,
    Fibula = 2,
    Patella = 3,
}

/// Subject-level anatomy: identical in every view of the subject.
#[derive(Debug, Clone, PartialEq)]
pub struct Knee {
    /// +1 when the lateral side (fibula) is on the image's right in an AP
    /// view, -1 when on the left. A right knee seen from the front has its
    /// fibula on the viewer's left.
    pub lateral: f32,
    pub scale: f32,
    pub femur_shaft: f32,
    pub femur_distal: f32,
    pub femur_depth: f32,
    pub condyle_height: f32,
    pub gap_medial: f32,
    pub gap_lateral: f32,
    pub plateau: f32,
    pub tibia_depth: f32,
    pub tibia_shaft: f32,
    pub fibula_offset: f32,
    pub fibula_head: f32,
    pub fibula_shaft: f32,
    pub patella: (f32, f32),
    pub patella_y: f32,
    pub valgus: f32,
    /// Growth plate: 1 wide open (child) .. 0 closed (adult).
    pub physis: f32,
    pub physis_phase: [f32; 3],
    /// 0 none .. 1 marked degenerative change.
    pub osteoarthritis: f32,
    pub soft: f32,
    pub fat: f32,
    pub cortex: f32,
    pub density: f32,
}

impl Knee {
    /// Draw a knee for a subject; depends on age and sex only through the
    /// priors (size, growth plates, degeneration), never on the label.
    pub fn draw<R: Rng>(subject: &Subject, rng: &mut R) -> Knee {
        let age = subject.age as f32;
        let mut u = |lo: f32, hi: f32| rng.random_range(lo..hi);
        let sex = if subject.sex == Sex::Male { 1.03 } else { 0.97 };
        let s = 0.92 * sex * u(0.94, 1.06) * lerp(0.8, 1.0, smoothstep(5.0, 16.0, age));
        let lateral = if u(0.0, 1.0) < 0.5 { -1.0 } else { 1.0 };
        let physis = if age < 13.0 {
            1.0
        } else if age < 18.0 {
            lerp(1.0, 0.3, (age - 13.0) / 5.0)
        } else if age < 21.0 {
            lerp(0.3, 0.0, (age - 18.0) / 3.0)
        } else {
            0.0
        };
        let degeneration = smoothstep(40.0, 80.0, age);
        let osteoarthritis = if u(0.0, 1.0) < degeneration + 0.03 {
            u(0.3, 1.0) * degeneration.max(0.3)
        } else {
            0.0
        };
        let child_gap = 0.025 * (1.0 - smoothstep(5.0, 14.0, age));
        let gap = 0.028 * s * u(0.85, 1.15) + child_gap;
        let femur_distal = 0.215 * s * u(0.95, 1.05);
        let plateau = femur_distal * u(1.0, 1.06);
        let cortex = u(0.85, 1.15) * (1.0 - 0.25 * smoothstep(55.0, 85.0, age));
        let density = u(0.92, 1.08) * (1.0 - 0.25 * smoothstep(50.0, 85.0, age));
        Knee {
            lateral,
            scale: s,
            femur_shaft: 0.085 * s * u(0.93, 1.07),
            femur_distal,
            femur_depth: 0.18 * s,
            condyle_height: 0.11 * s * u(0.92, 1.08),
            gap_medial: gap * (1.0 - 0.65 * osteoarthritis),
            gap_lateral: gap * (1.0 - 0.2 * osteoarthritis) * u(0.9, 1.15),
            plateau,
            tibia_depth: 0.17 * s,
            tibia_shaft: 0.088 * s * u(0.92, 1.08),
            fibula_offset: plateau * u(0.8, 0.88),
            fibula_head: 0.058 * s * u(0.9, 1.1),
            fibula_shaft: 0.024 * s * u(0.85, 1.1),
            patella: (0.085 * s * u(0.9, 1.1), 0.1 * s * u(0.9, 1.1)),
            patella_y: -0.13 * s * u(0.85, 1.15),
            valgus: u(0.03, 0.12),
            physis,
            physis_phase: [u(0.0, 6.3), u(0.0, 6.3), u(0.0, 6.3)],
            osteoarthritis,
            soft: 0.36 * s * u(0.9, 1.2),
            fat: if subject.sex == Sex::Female {
                u(0.03, 0.06)
            } else {
                u(0.015, 0.04)
            },
            cortex,
            density,
        }
    }

    /// The knee as seen at projection angle `phi` (radians; 0 = AP).
    pub fn view(&self, phi: f32) -> KneeView<'_> {
        KneeView {
            knee: self,
            cos: phi.cos(),
            sin: phi.sin(),
            anterior: -self.lateral,
        }
    }
}

/// Geometry of one bone at one point.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BoneSample {
    /// Signed distance to the projected outline (negative inside).
    pub sdf: f32,
    /// Local tube radius (half the bone's thickness along the ray).
    pub radius: f32,
    /// Cortical thickness.
    pub cortex: f32,
    /// Relative density of the medullary bone (trabecular near the joint,
    /// fatty marrow in the diaphysis).
    pub marrow: f32,
    /// Fraction of bone removed by an open growth plate (0..1).
    pub physis: f32,
    /// Extra density: subchondral sclerosis, physeal scar (0..).
    pub sclerosis: f32,
}

impl BoneSample {
    pub const OUTSIDE: BoneSample = BoneSample {
        sdf: 1.0,
        radius: 0.0,
        cortex: 0.0,
        marrow: 0.0,
        physis: 0.0,
        sclerosis: 0.0,
    };
}

/// Everything the renderer needs at one point.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    /// Soft-tissue path length (fat counted at a lower weight).
    pub soft: f32,
    pub bones: [BoneSample; 4],
}

/// A knee in one projection.
#[derive(Debug, Clone, Copy)]
pub struct KneeView<'a> {
    pub knee: &'a Knee,
    pub cos: f32,
    pub sin: f32,
    /// Image side (+1/-1) that anterior projects to in a lateral view.
    pub anterior: f32,
}

impl KneeView<'_> {
    /// Image x of a point `ml` lateral (negative: medial) and `ap` anterior
    /// of the bone axis.
    #[inline]
    pub fn project(&self, ml: f32, ap: f32) -> f32 {
        ml * self.knee.lateral * self.cos + ap * self.anterior * self.sin
    }

    /// Projected half-width of a section with half-widths `ml` and `ap`.
    #[inline]
    pub fn width(&self, ml: f32, ap: f32) -> f32 {
        ((ml * self.cos).powi(2) + (ap * self.sin).powi(2)).sqrt()
    }

    /// Axis position and half-width of a bone at height `y`, used to place
    /// lesions on it.
    pub fn frame(&self, bone: Bone, y: f32) -> (f32, f32) {
        let k = self.knee;
        match bone {
            Bone::Femur => (self.femur_axis(y), self.femur_half_width(y).0),
            Bone::Tibia => (self.project(0.0, -0.01), self.tibia_half_width(y).0),
            Bone::Fibula => {
                let (hx, hy) = self.fibula_head_centre();
                let t = smoothstep(hy, hy + 0.09 * k.scale, y);
                (
                    lerp(hx, self.fibula_shaft_x(), t),
                    lerp(k.fibula_head, k.fibula_shaft, t),
                )
            }
            Bone::Patella => (self.project(0.01, k.femur_depth * 0.8), k.patella.0),
        }
    }

    /// Geometry at one point of the projection.
    pub fn sample(&self, x: f32, y: f32) -> Sample {
        let k = self.knee;
        let s = k.scale;
        let mut bones = [BoneSample::OUTSIDE; 4];
        // Cheap bounds first: much of the image is far from the bones.
        let reach = k.femur_distal.max(k.plateau) + k.valgus * 0.5 + 0.08 * s;
        if x.abs() > reach + 0.1 * s {
            return Sample {
                soft: self.soft(x, y),
                bones,
            };
        }
        if y < 0.03 * s && x.abs() < reach {
            bones[Bone::Femur as usize] = self.femur(x, y);
        }
        if y > -0.04 * s && x.abs() < reach {
            bones[Bone::Tibia as usize] = self.tibia(x, y);
        }
        let (hx, hy) = self.fibula_head_centre();
        if y > hy - 0.1 * s && (x - hx).abs() < 0.12 * s {
            bones[Bone::Fibula as usize] = self.fibula(x, y);
        }
        if (y - k.patella_y).abs() < k.patella.1 + 0.02 {
            bones[Bone::Patella as usize] = self.patella(x, y);
        }
        Sample {
            soft: self.soft(x, y),
            bones,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::label::Label;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    fn subject(age: f64) -> Subject {
        Subject {
            index: 0,
            patient_id: "P0001".into(),
            label: Label::Normal,
            subtype: None,
            site: None,
            age,
            sex: Sex::Female,
            center: 0,
        }
    }

    #[test]
    fn bones_sit_where_a_knee_has_them() {
        let knee = Knee::draw(&subject(40.0), &mut ChaCha8Rng::seed_from_u64(3));
        let v = knee.view(0.0);
        // Femoral shaft above, tibial shaft below, a joint space between.
        assert!(v.sample(0.0, -0.4).bones[Bone::Femur as usize].sdf < 0.0);
        assert!(v.sample(0.0, 0.4).bones[Bone::Tibia as usize].sdf < 0.0);
        let lateral_compartment = v.project(0.1, 0.0);
        let gap = v.sample(lateral_compartment, -0.5 * knee.gap_lateral);
        assert!(gap.bones.iter().take(2).all(|b| b.sdf > 0.0), "{gap:?}");
        // The fibula is on the lateral side.
        let fx = v.project(knee.fibula_offset, 0.0);
        assert!(v.sample(fx, 0.3).bones[Bone::Fibula as usize].sdf < 0.0);
        assert!(v.sample(-fx, 0.3).bones[Bone::Fibula as usize].sdf > 0.0);
        // Soft tissue everywhere near the middle, nothing far outside.
        assert!(v.sample(0.0, 0.0).soft > 0.3);
        assert_eq!(v.sample(0.9, 0.0).soft, 0.0);
    }

    #[test]
    fn growth_plates_are_open_only_in_the_young() {
        let mut rng = ChaCha8Rng::seed_from_u64(4);
        assert_eq!(Knee::draw(&subject(9.0), &mut rng).physis, 1.0);
        assert_eq!(Knee::draw(&subject(30.0), &mut rng).physis, 0.0);
    }
}
