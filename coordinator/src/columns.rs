//! The manifest's breakdown columns (site, subtype) as the coordinator
//! reads them when it summarises an experiment.
//!
//! They take no part in training, nor in the data set's fingerprint, so a
//! manifest whose site column was corrected is still the same data set, and
//! its experiment is not trained again. A round's predictions carry the
//! values its worker was sent; the summary and the results document take
//! the manifest's current ones instead, so that every round is broken down
//! alike, and a corrected column shows once the spec is submitted again
//! (see `service::experiments`). A value is taken only for an image the
//! manifest lists with the prediction's label and patient.

use crate::aggregate::JobResult;
use crossfold_shared::hash::sha256_hex;
use crossfold_shared::label::Label;
use crossfold_shared::manifest::Manifest;
use std::collections::HashMap;
use std::path::Path;

/// Per image: its label, patient, site and subtype ("" when absent).
#[derive(Debug, Clone, PartialEq)]
pub struct Columns {
    by_image: HashMap<String, (Label, String, String, String)>,
    /// SHA-256 of the site and subtype of every image (sorted lines of
    /// `path \t site \t subtype`): what the summary records, to tell a
    /// corrected column on a later submission.
    pub sha256: String,
}

impl Columns {
    pub fn of_manifest(m: &Manifest) -> Columns {
        let mut lines = Vec::with_capacity(m.entries.len());
        let mut by_image = HashMap::with_capacity(m.entries.len());
        for e in &m.entries {
            let site = e.site.clone().unwrap_or_default();
            let subtype = e.subtype.clone().unwrap_or_default();
            lines.push(format!("{}\t{site}\t{subtype}\n", e.path));
            by_image.insert(
                e.path.clone(),
                (e.label, e.patient_id.clone(), site, subtype),
            );
        }
        lines.sort();
        Columns {
            by_image,
            sha256: sha256_hex(lines.concat().as_bytes()),
        }
    }

    /// The columns of the manifest at `path`; `None` (logged) when it
    /// cannot be read now: the predictions keep their workers' values.
    pub fn read(path: &str) -> Option<Columns> {
        match Manifest::load(Path::new(path)) {
            Ok(m) => Some(Columns::of_manifest(&m)),
            Err(err) => {
                tracing::warn!(manifest = %path, error = %err, "manifest not read: breakdowns use the values the workers were sent");
                None
            }
        }
    }

    /// Give every prediction the manifest's site and subtype where the
    /// manifest lists its image with the same label and patient.
    pub fn apply(&self, results: &mut [JobResult]) {
        for p in results.iter_mut().flat_map(|r| r.predictions.iter_mut()) {
            let Some((label, patient, site, subtype)) = self.by_image.get(&p.image) else {
                continue;
            };
            let same_label = p.label.parse::<Label>().is_ok_and(|l| l == *label);
            if same_label && p.patient == *patient {
                p.site.clone_from(site);
                p.subtype.clone_from(subtype);
            }
        }
    }
}

/// The key under which a summary records [`Columns::sha256`].
pub const SUMMARY_KEY: &str = "breakdown_columns_sha256";

/// The key under which a stored summary keeps the site and subtype each
/// image was broken down by (`{image: [site, subtype]}`, "" for none), so
/// that the results document gives its predictions those same values
/// without reading the manifest again.
pub const STORED_KEY: &str = "breakdown_columns";

/// The site and subtype of every prediction's image in `results` (a
/// cleared column is kept as ""), as [`STORED_KEY`] keeps them.
pub fn as_stored(results: &[JobResult]) -> serde_json::Value {
    let mut by_image = serde_json::Map::new();
    for p in results.iter().flat_map(|r| &r.predictions) {
        by_image.insert(p.image.clone(), serde_json::json!([p.site, p.subtype]));
    }
    serde_json::Value::Object(by_image)
}

/// Give `results`' predictions the site and subtype `stored` (see
/// [`as_stored`]) keeps for their images; others are left as they are.
pub fn apply_stored(stored: &serde_json::Value, results: &mut [JobResult]) {
    let Some(by_image) = stored.as_object() else {
        return;
    };
    for p in results.iter_mut().flat_map(|r| r.predictions.iter_mut()) {
        if let Some([site, subtype]) = by_image
            .get(&p.image)
            .and_then(|v| v.as_array())
            .and_then(|a| <&[serde_json::Value; 2]>::try_from(a.as_slice()).ok())
        {
            p.site = site.as_str().unwrap_or_default().to_string();
            p.subtype = subtype.as_str().unwrap_or_default().to_string();
        }
    }
}

/// Whether a stored summary was made with other breakdown columns than
/// `current` (or before summaries recorded them).
pub fn summary_differs(summary_json: &str, current: &Columns) -> bool {
    serde_json::from_str::<serde_json::Value>(summary_json)
        .ok()
        .and_then(|v| {
            v.get(SUMMARY_KEY)
                .and_then(|s| s.as_str())
                .map(str::to_string)
        })
        .is_none_or(|s| s != current.sha256)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aggregate::tests::result;
    use crossfold_shared::manifest::Entry;

    fn manifest(site_of_b: &str) -> Manifest {
        let mut a = Entry::new("a.png", Label::Normal, "p0");
        a.site = Some("femur".into());
        let mut b = Entry::new("b.png", Label::Malignant, "p1");
        b.site = Some(site_of_b.into());
        b.subtype = Some("osteosarcoma".into());
        Manifest {
            root: "/data".into(),
            entries: vec![a, b],
        }
    }

    #[test]
    fn predictions_take_the_manifests_columns_where_it_lists_their_image_alike() {
        let cols = Columns::of_manifest(&manifest("tibia"));
        let mut results = vec![result(1, &[("normal", 0.2), ("malignant", 0.9)])];
        let names: Vec<(String, String)> = results[0]
            .predictions
            .iter()
            .map(|p| (p.image.clone(), p.patient.clone()))
            .collect();
        // The test helper's images and patients, listed in a manifest.
        let m = Manifest {
            root: "/data".into(),
            entries: names
                .iter()
                .zip([Label::Normal, Label::Malignant])
                .map(|((image, patient), label)| {
                    let mut e = Entry::new(image, label, patient);
                    e.site = Some(format!("site of {image}"));
                    e
                })
                .collect(),
        };
        Columns::of_manifest(&m).apply(&mut results);
        for p in &results[0].predictions {
            assert_eq!(p.site, format!("site of {}", p.image));
        }
        // Another label or patient for the image: left as the worker sent it.
        let mut other = vec![result(1, &[("normal", 0.2)])];
        other[0].predictions[0].site = "as sent".into();
        other[0].predictions[0].label = "benign".into();
        Columns::of_manifest(&m).apply(&mut other);
        assert_eq!(other[0].predictions[0].site, "as sent");
        let mut moved = vec![result(1, &[("normal", 0.2)])];
        moved[0].predictions[0].site = "as sent".into();
        moved[0].predictions[0].patient = "another patient".into();
        Columns::of_manifest(&m).apply(&mut moved);
        assert_eq!(moved[0].predictions[0].site, "as sent");
        // An image the manifest does not list: left alone too.
        let mut unlisted = vec![result(1, &[("normal", 0.2)])];
        unlisted[0].predictions[0].image = "elsewhere.png".into();
        cols.apply(&mut unlisted);
        assert_eq!(unlisted[0].predictions[0].site, "");
    }

    #[test]
    fn a_corrected_column_changes_the_digest_and_a_reordered_manifest_does_not() {
        let before = Columns::of_manifest(&manifest("tibia"));
        let fixed = Columns::of_manifest(&manifest("distal femur"));
        assert_ne!(before.sha256, fixed.sha256);
        let mut reordered = manifest("tibia");
        reordered.entries.reverse();
        assert_eq!(Columns::of_manifest(&reordered).sha256, before.sha256);
        let summary = format!("{{\"{SUMMARY_KEY}\": \"{}\"}}", before.sha256);
        // What a summary keeps of the values it used, given back alike.
        let mut results = vec![result(1, &[("normal", 0.2), ("malignant", 0.9)])];
        results[0].predictions[0].site = "femur".into();
        let stored = as_stored(&results);
        assert_eq!(stored.as_object().map(|o| o.len()), Some(2));
        let mut fresh = vec![result(1, &[("normal", 0.2), ("malignant", 0.9)])];
        fresh[0].predictions[1].site = "as the worker was sent".into();
        apply_stored(&stored, &mut fresh);
        assert_eq!(fresh[0].predictions[0].site, "femur");
        // A column cleared since: cleared here too.
        assert_eq!(fresh[0].predictions[1].site, "");
        assert!(!summary_differs(&summary, &before));
        assert!(summary_differs(&summary, &fixed));
        assert!(summary_differs("{}", &before), "an older summary");
    }
}
