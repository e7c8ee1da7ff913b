//! What a tumour looks like: the lesion plan of one subject.
//!
//! Each radiological feature is switched on with a probability that depends
//! on the subtype; the probabilities overlap between classes (malignant
//! lesions usually, benign ones rarely, show periosteal reaction; benign ones
//! usually, malignant ones sometimes, have a sclerotic rim; ...), so telling
//! tumour from normal is learnable but not trivial and telling benign from
//! malignant is harder. Rates in the default cohort (seed 2021):
//!
//! | feature                              | malignant | benign |
//! |--------------------------------------|-----------|--------|
//! | narrow transition zone               | 0.26      | 0.90   |
//! | sclerotic rim                        | 0.13      | 0.44   |
//! | permeative / moth-eaten destruction  | 0.48      | 0.11   |
//! | cortical breakthrough                | 0.54      | 0.17   |
//! | soft-tissue mass                     | 0.50      | 0.04   |
//! | periosteal reaction                  | 0.61      | 0.07   |
//! | cloudy osteoid (sclerotic) matrix    | 0.56      | 0.00   |
//! | stippled chondroid calcification     | 0.14      | 0.14   |
//!
//! The subtype also decides where the lesion sits and its typical look:
//! osteosarcoma metaphyseal with osteoid matrix and sunburst/Codman reaction;
//! chondrosarcoma and chondroma with stippled chondroid calcification; Ewing
//! sarcoma permeative and diaphyseal with layered (onion-skin) reaction and a
//! large mass; giant cell tumour an eccentric epiphyseal lucency reaching the
//! subchondral bone; non-ossifying fibroma a lobulated cortical lucency in the
//! metaphysis with a sclerotic rim; "other benign" includes osteochondroma
//! (a bony outgrowth pointing away from the joint). About one lesion in nine
//! is small and faint. Nothing here depends on the acquisition.

use super::anatomy::{Bone, Knee};
use super::cohort::{Site, Subject, Subtype};
use crate::label::Label;
use rand::Rng;

/// Kinds of periosteal new bone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Periosteal {
    /// Elevated periosteum forming a triangle at the lesion's edge.
    Codman,
    /// Spicules radiating from the lesion.
    Sunburst,
    /// Lines parallel to the cortex (onion skin, or solid benign reaction).
    Layered,
    /// Spicules perpendicular to the cortex.
    HairOnEnd,
}

/// A bony outgrowth (osteochondroma) from the metaphyseal surface.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Exostosis {
    /// Height of the base.
    pub y: f32,
    pub length: f32,
    pub width: f32,
    /// Angle from the bone axis, pointing away from the joint (radians).
    pub angle: f32,
}

/// One subject's lesion, independent of the view. Strengths are 0 when a
/// feature is absent.
#[derive(Debug, Clone, PartialEq)]
pub struct LesionPlan {
    pub bone: Bone,
    pub subtype: Subtype,
    /// Height of the centre (joint-line coordinates, y down).
    pub y: f32,
    /// Centre across the bone, as a fraction of the half-width, in the
    /// medial-lateral (+ lateral) and antero-posterior (+ anterior) axes.
    pub ml: f32,
    pub ap: f32,
    /// Half-size across the bone (fraction of the half-width).
    pub across: f32,
    /// Half-size along the bone (image widths).
    pub along: f32,
    /// Direction the lesion faces, in the (ml, ap) plane: where the cortex
    /// is broken, the mass and periosteal reaction lie.
    pub outward: (f32, f32),
    /// Scales every effect: small faint lesions have 0.25..0.45.
    pub conspicuity: f32,
    /// Depth of the geographic lucency in marrow and in cortex (0..1).
    pub lysis: f32,
    pub cortical_lysis: f32,
    /// Zone of transition as a fraction of the lesion radius.
    pub transition: f32,
    /// Irregularity of the outline.
    pub lobulation: f32,
    pub rim: f32,
    pub septa: f32,
    /// Permeative (`fine_holes`) or moth-eaten destruction.
    pub holes: f32,
    pub fine_holes: bool,
    pub matrix: f32,
    pub stipple: f32,
    pub breakthrough: f32,
    pub expansion: f32,
    /// Soft-tissue mass radius (image widths).
    pub mass: f32,
    pub periosteal: Option<(Periosteal, f32)>,
    pub exostosis: Option<Exostosis>,
}

/// Feature probabilities for one subtype.
struct Profile {
    narrow: f64,
    rim: f64,
    septa: f64,
    holes: f64,
    matrix: f64,
    stipple: f64,
    breakthrough: f64,
    mass: f64,
    periosteal: f64,
    expansion: f64,
    exostosis: f64,
}

fn profile(subtype: Subtype) -> Profile {
    let p = |v: [f64; 11]| Profile {
        narrow: v[0],
        rim: v[1],
        septa: v[2],
        holes: v[3],
        matrix: v[4],
        stipple: v[5],
        breakthrough: v[6],
        mass: v[7],
        periosteal: v[8],
        expansion: v[9],
        exostosis: v[10],
    };
    // narrow rim septa holes matrix stipple breakthrough mass periosteal expansion exostosis
    match subtype {
        Subtype::Osteosarcoma => p([0.25, 0.15, 0.05, 0.5, 0.65, 0.04, 0.6, 0.6, 0.7, 0.05, 0.0]),
        Subtype::Chondrosarcoma => p([0.4, 0.25, 0.1, 0.3, 0.05, 0.75, 0.35, 0.4, 0.25, 0.2, 0.05]),
        Subtype::EwingSarcoma => p([0.1, 0.05, 0.0, 0.9, 0.15, 0.0, 0.6, 0.75, 0.7, 0.0, 0.0]),
        Subtype::OtherMalignant => p([0.35, 0.2, 0.1, 0.55, 0.2, 0.1, 0.5, 0.5, 0.4, 0.1, 0.0]),
        Subtype::GiantCellTumour => p([0.8, 0.25, 0.6, 0.1, 0.02, 0.02, 0.2, 0.12, 0.1, 0.5, 0.0]),
        Subtype::NonOssifyingFibroma => {
            p([0.95, 0.9, 0.5, 0.02, 0.0, 0.0, 0.02, 0.0, 0.02, 0.3, 0.0])
        }
        Subtype::Chondroma => p([0.9, 0.6, 0.1, 0.05, 0.0, 0.7, 0.02, 0.0, 0.03, 0.3, 0.0]),
        Subtype::OtherBenign => p([0.85, 0.7, 0.3, 0.1, 0.05, 0.15, 0.05, 0.05, 0.1, 0.3, 0.45]),
    }
}

/// Where along the bone a lesion sits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Zone {
    Epiphysis,
    Metaphysis,
    Diaphysis,
}

fn zone_range(bone: Bone, zone: Zone) -> (f32, f32) {
    match (bone, zone) {
        (Bone::Femur, Zone::Epiphysis) => (-0.15, -0.07),
        (Bone::Femur, Zone::Metaphysis) => (-0.3, -0.2),
        (Bone::Femur, Zone::Diaphysis) => (-0.37, -0.3),
        (Bone::Tibia, Zone::Epiphysis) => (0.035, 0.06),
        (Bone::Tibia, Zone::Metaphysis) => (0.1, 0.22),
        (Bone::Tibia, Zone::Diaphysis) => (0.24, 0.33),
        (_, Zone::Epiphysis) => (0.08, 0.11),
        (_, Zone::Metaphysis) => (0.12, 0.18),
        (_, Zone::Diaphysis) => (0.2, 0.3),
    }
}

impl LesionPlan {
    /// The lesion of a tumour subject, or `None` for a normal knee.
    pub fn draw<R: Rng>(subject: &Subject, knee: &Knee, rng: &mut R) -> Option<LesionPlan> {
        let subtype = subject.subtype?;
        let site = subject.site.unwrap_or(Site::DistalFemur);
        let bone = match site {
            Site::DistalFemur => Bone::Femur,
            Site::ProximalTibia => Bone::Tibia,
            Site::ProximalFibula => Bone::Fibula,
        };
        let pr = profile(subtype);
        let malignant = subtype.label() == Label::Malignant;
        let s = knee.scale;
        let mut has = |p: f64| rng.random::<f64>() < p;
        let f_narrow = has(pr.narrow);
        let f_rim = has(pr.rim);
        let f_septa = has(pr.septa);
        let f_holes = has(pr.holes);
        let f_matrix = has(pr.matrix);
        let f_stipple = has(pr.stipple);
        let f_break = has(pr.breakthrough);
        let f_mass = has(pr.mass);
        let f_periosteal = has(pr.periosteal);
        let f_expansion = has(pr.expansion);
        let f_exostosis = has(pr.exostosis);
        let mut u = |lo: f32, hi: f32| rng.random_range(lo..hi);

        // Placement: zone, position across the bone, size.
        let zone = match subtype {
            Subtype::GiantCellTumour => Zone::Epiphysis,
            Subtype::NonOssifyingFibroma => Zone::Metaphysis,
            Subtype::EwingSarcoma if u(0.0, 1.0) < 0.7 => Zone::Diaphysis,
            Subtype::Chondroma | Subtype::Chondrosarcoma | Subtype::Osteosarcoma
                if u(0.0, 1.0) < 0.15 =>
            {
                Zone::Diaphysis
            }
            Subtype::OtherMalignant | Subtype::OtherBenign | Subtype::Chondrosarcoma
                if u(0.0, 1.0) < 0.2 =>
            {
                Zone::Epiphysis
            }
            _ => Zone::Metaphysis,
        };
        // The fibula is thin: its tumours sit in the head and neck and
        // show by expanding the bone.
        let zone = match (bone, zone) {
            (Bone::Fibula, Zone::Diaphysis) => Zone::Metaphysis,
            _ => zone,
        };
        let (y0, y1) = zone_range(bone, zone);
        let y = u(y0, y1) * s;
        let side = if u(0.0, 1.0) < 0.5 { -1.0 } else { 1.0 };
        let tilt = u(-0.9, 0.9);
        let outward = (side * tilt.cos(), tilt.sin());
        let subtle = u(0.0, 1.0) < 0.12;
        // Primary bone tumours are usually large at diagnosis (the paper's
        // screening AUC is 0.998), so most lesions are sizeable; the
        // `subtle` ones stay small and faint.
        let mut along = if malignant {
            u(0.12, 0.24)
        } else {
            u(0.08, 0.16)
        } * s;
        let (mut across, offset) = match subtype {
            Subtype::GiantCellTumour => (u(0.3, 0.55), u(0.25, 0.5)),
            Subtype::NonOssifyingFibroma => {
                let a = u(0.14, 0.3);
                (a, 1.0 - 0.6 * a)
            }
            Subtype::EwingSarcoma => (u(0.7, 0.95), u(0.0, 0.15)),
            _ if malignant => (u(0.5, 1.0), u(0.0, 0.35)),
            _ => (u(0.35, 0.8), u(0.0, 0.35)),
        };
        if subtype == Subtype::EwingSarcoma {
            along *= 1.5;
        }
        if subtype == Subtype::NonOssifyingFibroma {
            along *= 1.3;
        }
        if bone == Bone::Fibula {
            across = across.max(0.7) * 1.1;
            along = (along * 0.7).max(0.05 * s);
        }
        if subtle {
            along *= 0.6;
            across *= 0.7;
        }
        let conspicuity = if subtle { u(0.25, 0.45) } else { u(0.8, 1.0) };
        let transition = if f_narrow {
            u(0.04, 0.12)
        } else {
            u(0.25, 0.6)
        };
        let mut plan = LesionPlan {
            bone,
            subtype,
            y,
            ml: offset * outward.0,
            ap: offset * outward.1,
            across,
            along,
            outward,
            conspicuity,
            lysis: if f_matrix {
                u(0.15, 0.5)
            } else {
                u(0.55, 0.95)
            },
            cortical_lysis: if offset > 0.5 {
                u(0.4, 0.8)
            } else {
                u(0.2, 0.4)
            },
            transition,
            lobulation: if f_narrow { u(0.2, 0.8) } else { u(0.5, 1.5) },
            rim: if f_rim { u(0.4, 1.0) } else { 0.0 },
            septa: if f_septa { u(0.4, 1.0) } else { 0.0 },
            holes: if f_holes { u(0.5, 1.0) } else { 0.0 },
            fine_holes: subtype == Subtype::EwingSarcoma || u(0.0, 1.0) < 0.5,
            matrix: if f_matrix { u(0.4, 1.0) } else { 0.0 },
            stipple: if f_stipple { u(0.4, 1.0) } else { 0.0 },
            breakthrough: if f_break { u(0.5, 1.0) } else { 0.0 },
            expansion: if f_expansion { u(0.2, 0.6) } else { 0.0 },
            mass: if f_mass { u(0.03, 0.09) * s } else { 0.0 },
            periosteal: None,
            exostosis: None,
        };
        if subtype == Subtype::EwingSarcoma && plan.mass > 0.0 {
            plan.mass = plan.mass.max(u(0.05, 0.09) * s);
        }
        if bone == Bone::Fibula {
            plan.expansion = plan.expansion.max(u(0.3, 0.8));
        }
        if plan.holes > 0.0 {
            // Destruction by many holes leaves less geographic lysis.
            plan.lysis *= 0.7;
        }
        if f_periosteal {
            let k = u(0.0, 1.0);
            let kind = match subtype {
                Subtype::Osteosarcoma if k < 0.45 => Periosteal::Sunburst,
                Subtype::Osteosarcoma if k < 0.85 => Periosteal::Codman,
                Subtype::EwingSarcoma if k < 0.6 => Periosteal::Layered,
                Subtype::EwingSarcoma if k < 0.8 => Periosteal::HairOnEnd,
                Subtype::OtherMalignant if k < 0.5 => Periosteal::Codman,
                Subtype::OtherMalignant if k < 0.8 => Periosteal::Layered,
                Subtype::OtherMalignant => Periosteal::Sunburst,
                _ if k < 0.7 => Periosteal::Layered,
                _ => Periosteal::Codman,
            };
            plan.periosteal = Some((kind, u(0.5, 1.0)));
        }
        if f_exostosis {
            // An osteochondroma replaces the lucent lesion by an outgrowth.
            let (m0, m1) = zone_range(bone, Zone::Metaphysis);
            plan.exostosis = Some(Exostosis {
                y: u(m0, m1) * s,
                length: u(0.05, 0.12) * s,
                width: u(0.015, 0.03) * s,
                angle: u(0.5, 1.2),
            });
            plan.lysis = 0.0;
            plan.cortical_lysis = 0.0;
            plan.rim = 0.0;
            plan.septa = 0.0;
            plan.expansion = 0.0;
        }
        Some(plan)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::synth::cohort::draw_cohort;
    use crate::synth::SynthConfig;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    fn plans(label: Label) -> Vec<LesionPlan> {
        let cohort = draw_cohort(&SynthConfig::default());
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        cohort
            .iter()
            .filter(|s| s.label == label)
            .filter_map(|s| {
                let knee = Knee::draw(s, &mut rng);
                LesionPlan::draw(s, &knee, &mut rng)
            })
            .collect()
    }

    #[test]
    fn features_overlap_but_differ_between_classes() {
        assert!(plans(Label::Normal).is_empty());
        let m = plans(Label::Malignant);
        let b = plans(Label::Benign);
        assert_eq!((m.len(), b.len()), (180, 80));
        let rate = |v: &[LesionPlan], f: &dyn Fn(&LesionPlan) -> bool| {
            v.iter().filter(|p| f(p)).count() as f64 / v.len() as f64
        };
        // A feature typical of one class, yet present in both: its rate
        // among malignant and benign lesions must fall in the given ranges.
        let check =
            |name: &str, f: &dyn Fn(&LesionPlan) -> bool, rm: (f64, f64), rb: (f64, f64)| {
                let (m_rate, b_rate) = (rate(&m, f), rate(&b, f));
                assert!(
                    (rm.0..rm.1).contains(&m_rate),
                    "{name}: malignant rate {m_rate}"
                );
                assert!(
                    (rb.0..rb.1).contains(&b_rate),
                    "{name}: benign rate {b_rate}"
                );
            };
        check(
            "periosteal",
            &|p| p.periosteal.is_some(),
            (0.45, 0.8),
            (0.01, 0.2),
        );
        check("rim", &|p| p.rim > 0.0, (0.05, 0.3), (0.35, 0.7));
        check(
            "wide zone",
            &|p| p.transition > 0.2,
            (0.55, 0.9),
            (0.05, 0.3),
        );
        check("mass", &|p| p.mass > 0.0, (0.4, 0.75), (0.01, 0.2));
    }

    #[test]
    fn lesions_sit_on_the_subjects_bone() {
        let cohort = draw_cohort(&SynthConfig::default());
        let mut rng = ChaCha8Rng::seed_from_u64(8);
        for s in cohort.iter().filter(|s| s.label.is_tumour()) {
            let knee = Knee::draw(s, &mut rng);
            let p = LesionPlan::draw(s, &knee, &mut rng).expect("tumour has a lesion");
            let expected = match s.site {
                Some(Site::DistalFemur) => Bone::Femur,
                Some(Site::ProximalTibia) => Bone::Tibia,
                _ => Bone::Fibula,
            };
            assert_eq!(p.bone, expected);
            assert_eq!(p.bone == Bone::Femur, p.y < 0.0, "{p:?}");
        }
    }
}
