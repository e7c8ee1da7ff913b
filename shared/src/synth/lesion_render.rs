//! How a lesion changes the X-ray picture at each point.
//!
//! A [`LesionPlan`] is placed in one view ([`PlacedLesion`]); at each point
//! it may reshape the host bone's outline (expansile remodelling, an
//! osteochondroma's outgrowth) and returns an [`Effect`]: multipliers on the
//! host's cortical and medullary bone (lucency, holes, cortical
//! breakthrough), added bone-like attenuation (sclerotic rim, septa, osteoid
//! matrix, chondroid stipples, periosteal new bone) and added soft-tissue path
//! (mass). The zone of transition is the width of the smoothstep between
//! lesion and normal bone: narrow for a well-defined lesion, wide for an
//! infiltrative one.

use super::anatomy::{Bone, BoneSample, KneeView};
use super::lesion::{LesionPlan, Periosteal};
use super::raster::{capsule_sdf, ellipse_sdf, smin, smoothstep};

/// Texture values at one pixel (unit-variance noise fields of different
/// grain), shared by all lesion features.
#[derive(Debug, Clone, Copy, Default)]
pub struct Texel {
    pub fine: f32,
    pub coarse: f32,
    pub cloud: f32,
    pub ridge: f32,
}

/// What a lesion does at one point.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Effect {
    pub cortex: f32,
    pub marrow: f32,
    pub extra: f32,
    pub soft: f32,
}

impl Effect {
    pub const NONE: Effect = Effect {
        cortex: 1.0,
        marrow: 1.0,
        extra: 0.0,
        soft: 0.0,
    };
}

/// Attenuation of the brightest lesion features, in the renderer's units.
const NEW_BONE: f32 = 0.55;

/// An osteochondroma in the image plane: base, tip, radius.
type Stalk = ((f32, f32), (f32, f32), f32);

/// A lesion placed in one projection.
#[derive(Debug, Clone)]
pub struct PlacedLesion<'a> {
    plan: &'a LesionPlan,
    pub bone: Bone,
    pub centre: (f32, f32),
    pub radii: (f32, f32),
    /// Host axis x at the centre's height.
    axis: f32,
    /// Image side (+1/-1) the lesion faces.
    side: f32,
    /// x of the outward cortex at the centre's height.
    edge: f32,
    /// Bounding box of every effect: (x0, x1, y0, y1).
    reach: (f32, f32, f32, f32),
    exostosis: Option<Stalk>,
    scale: f32,
}

impl<'a> PlacedLesion<'a> {
    pub fn new(plan: &'a LesionPlan, view: &KneeView<'_>) -> PlacedLesion<'a> {
        let s = view.knee.scale;
        let (axis, hw) = view.frame(plan.bone, plan.y);
        let cx = axis + view.project(plan.ml, plan.ap) * hw;
        let rx = (plan.across * hw).max(0.008);
        let ry = plan.along;
        let toward = view.project(plan.outward.0, plan.outward.1);
        let side = if toward < 0.0 { -1.0 } else { 1.0 };
        let edge = axis + side * hw;
        let exostosis = plan.exostosis.map(|e| {
            let (ax, ahw) = view.frame(plan.bone, e.y);
            let away = if plan.bone == Bone::Femur { -1.0 } else { 1.0 };
            let base = (ax + side * (ahw - e.width), e.y);
            let tip = (
                base.0 + side * e.angle.sin() * (e.length + e.width),
                base.1 + away * e.angle.cos() * (e.length + e.width),
            );
            (base, tip, e.width)
        });
        // Inside the bone: the lesion and its transition zone; outside: the
        // mass and periosteal reaction beyond the cortex it faces.
        let spread = 1.0 + 2.0 * plan.transition + 0.4;
        let outside = plan.mass * 2.2 + 0.08 * s;
        let mut reach = (
            (cx - rx * spread).min(edge - outside),
            (cx + rx * spread).max(edge + outside),
            plan.y - ry * spread - outside,
            plan.y + ry * spread + outside,
        );
        if let Some((b, t, w)) = exostosis {
            let pad = 3.0 * w;
            reach.0 = reach.0.min(b.0.min(t.0) - pad);
            reach.1 = reach.1.max(b.0.max(t.0) + pad);
            reach.2 = reach.2.min(b.1.min(t.1) - pad);
            reach.3 = reach.3.max(b.1.max(t.1) + pad);
        }
        // An osteochondroma's region is its outgrowth.
        let (centre, radii) = match exostosis {
            Some((b, t, w)) => (
                (0.5 * (b.0 + t.0), 0.5 * (b.1 + t.1)),
                (0.5 * (t.0 - b.0).abs() + w, 0.5 * (t.1 - b.1).abs() + w),
            ),
            None => ((cx, plan.y), (rx, ry)),
        };
        PlacedLesion {
            plan,
            bone: plan.bone,
            centre,
            radii,
            axis,
            side,
            edge,
            reach,
            exostosis,
            scale: s,
        }
    }

    /// Whether (x, y) is in the region the lesion can touch.
    #[inline]
    pub fn near(&self, x: f32, y: f32) -> bool {
        x >= self.reach.0 && x <= self.reach.1 && y >= self.reach.2 && y <= self.reach.3
    }

    /// Normalised elliptic distance from the lesion centre (1 on the outline).
    pub fn radial(&self, x: f32, y: f32) -> f32 {
        let dx = (x - self.centre.0) / self.radii.0;
        let dy = (y - self.centre.1) / self.radii.1;
        (dx * dx + dy * dy).sqrt()
    }

    /// Reshape the host bone at (x, y) and return the lesion's effect there.
    pub fn apply(&self, x: f32, y: f32, host: &mut BoneSample, t: &Texel) -> Effect {
        let p = self.plan;
        let s = self.scale;
        let c = p.conspicuity;
        let mut e = Effect::NONE;
        let (cx, cy) = self.centre;
        let (rx, ry) = self.radii;
        let q0 = self.radial(x, y);
        let q = q0 * (1.0 + 0.12 * p.lobulation * t.cloud);
        let dy = y - cy;

        if p.expansion > 0.0 {
            let bulge = p.expansion * rx.max(0.03 * s) * 0.5 * (1.0 - smoothstep(0.6, 1.5, q0));
            host.sdf -= bulge * c;
        }
        if let Some((base, tip, w)) = self.exostosis {
            let stalk = capsule_sdf((x, y), base, tip, w);
            let cap = ellipse_sdf(x - tip.0, y - tip.1, 1.35 * w, 1.2 * w);
            let exo = smin(stalk, cap, 0.6 * w);
            host.sdf = smin(host.sdf, exo, 0.02 * s);
            let along = (x - base.0) * (tip.0 - base.0) + (y - base.1) * (tip.1 - base.1);
            if exo < 0.0 && along > 0.0 {
                // Its medulla is continuous with the host's: no cortex across the base.
                e.cortex *= 0.6;
            }
        }
        let inside = smoothstep(0.004, -0.004, host.sdf);
        let tw = p.transition;
        let m = 1.0 - smoothstep(1.0 - tw, 1.0 + tw, q);
        let toward = smoothstep(-0.25 * rx, 0.25 * rx, (x - self.axis) * self.side);

        // Geographic lucency, cortical thinning and breakthrough.
        e.marrow *= 1.0 - p.lysis * c * m;
        let breach = p.breakthrough * toward;
        e.cortex *= 1.0 - (p.cortical_lysis + (1.0 - p.cortical_lysis) * breach) * c * m;
        if p.rim > 0.0 {
            let w = (0.006 * s / rx.min(ry)).clamp(0.04, 0.3);
            let d = (q - 1.0 - tw - 0.5 * w) / w;
            e.extra += p.rim * c * NEW_BONE * 0.9 * (-d * d).exp() * inside;
        }
        if p.septa > 0.0 {
            let ridge = 1.0 - smoothstep(0.0, 0.25, t.ridge.abs());
            e.extra += p.septa * c * NEW_BONE * 0.45 * ridge * m * inside;
        }
        // Permeative (fine) or moth-eaten (coarse) holes, over a wide zone.
        if p.holes > 0.0 {
            let region = 1.0 - smoothstep(0.9, 1.3 + 2.0 * tw, q0);
            let v = if p.fine_holes { t.fine } else { t.coarse };
            let h = smoothstep(0.0, 0.9, v) * region * p.holes * c;
            e.marrow *= 1.0 - 0.9 * h;
            e.cortex *= 1.0 - 0.75 * h;
        }
        let cloud = smoothstep(-0.2, 1.3, t.cloud);
        if p.matrix > 0.0 {
            let region = 1.0 - smoothstep(0.6, 1.15, q);
            e.extra += p.matrix * c * NEW_BONE * 1.6 * cloud * region * inside;
        }
        if p.stipple > 0.0 {
            let dots = smoothstep(1.8, 2.5, t.fine.abs().max(t.coarse));
            e.extra += p.stipple * c * NEW_BONE * 1.3 * dots * m;
        }

        // Soft-tissue mass beside the broken cortex, with osteoid in it.
        if p.mass > 0.0 {
            let mr = p.mass;
            let mx = self.edge + self.side * mr * 0.25;
            let mq = ellipse_sdf(x - mx, dy, mr, ry * 1.2 + mr * 0.3);
            let depth = (-mq).max(0.0);
            let thick = 2.0 * (depth * (2.0 * mr - depth).max(0.0)).sqrt();
            e.soft += 2.0 * c * thick;
            if p.matrix > 0.0 {
                let out = smoothstep(-0.004, 0.004, host.sdf);
                e.extra +=
                    p.matrix * c * NEW_BONE * 0.6 * cloud * smoothstep(0.0, -0.02 * s, mq) * out;
            }
        }

        // Periosteal new bone, outside the cortex on the lesion's side.
        if let Some((kind, strength)) = p.periosteal {
            let sd = host.sdf;
            if sd > 0.0 {
                let k = strength * c * NEW_BONE;
                let window = 1.0 - smoothstep(ry * 0.85, ry * 1.25, dy.abs());
                // Only beside the bone, never over the joint surfaces.
                let half = (self.edge - self.axis) * self.side;
                let beside = smoothstep(0.75 * half, 0.95 * half, (x - self.axis) * self.side);
                let facing = beside * smoothstep(0.02 * s, 0.05 * s, y.abs());
                let reach = p.mass.max(0.06 * s);
                e.extra += k
                    * facing
                    * match kind {
                        Periosteal::Layered => {
                            let gap = 0.009 * s;
                            let lines: f32 = (1..=3)
                                .map(|i| (-((sd - i as f32 * gap) / (0.003 * s)).powi(2)).exp())
                                .sum();
                            lines * window
                        }
                        Periosteal::Codman => {
                            let mut v = 0.0f32;
                            for end in [-1.0f32, 1.0] {
                                let along = (y - (cy + end * ry * 0.9)) * end;
                                let len = 0.06 * s;
                                if along > -0.004 * s && along < len {
                                    let h = 0.04 * s * (1.0 - along.max(0.0) / len);
                                    let fill = smoothstep(h, h - 0.003 * s, sd) * 0.45;
                                    let line = (-((sd - h) / (0.003 * s)).powi(2)).exp();
                                    v = v.max(fill + line);
                                }
                            }
                            v
                        }
                        Periosteal::Sunburst => {
                            let ox = cx - self.side * rx * 0.6;
                            let ang = dy.atan2(x - ox);
                            let spokes = (0.5 + 0.5 * (48.0 * ang + 1.5 * t.cloud).cos()).powi(6);
                            let len = reach * 1.4 * (0.6 + 0.4 * cloud);
                            spokes * smoothstep(len, 0.3 * len, sd) * window
                        }
                        Periosteal::HairOnEnd => {
                            let pitch = 0.009 * s;
                            let lines =
                                (0.5 + 0.5 * (dy / pitch * std::f32::consts::TAU).cos()).powi(6);
                            lines * smoothstep(reach, 0.0, sd) * window
                        }
                    };
            }
        }
        e.marrow = e.marrow.max(0.0);
        e.cortex = e.cortex.max(0.0);
        e
    }
}
