//! crossfold's gRPC protocol: package `crossfold.v1`, one `.proto` per
//! service (`Experiments`, `Workers`, `Data`) plus shared messages, compiled
//! by `build.rs` with protox (no system `protoc`); the client side of a
//! connection (TLS, bearer token: [`client`]); and the plain-HTTP metrics
//! endpoint served beside it ([`metrics_http`]).

pub mod client;
pub mod metrics_http;

#[allow(clippy::all, clippy::pedantic)]
pub mod v1 {
    tonic::include_proto!("crossfold.v1");
}

/// The encoded descriptors of every crossfold service, for gRPC server
/// reflection (so `grpcurl` can list and call them).
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/crossfold_descriptor.bin"));

#[cfg(test)]
mod tests {
    use super::v1::*;
    use prost::Message;

    #[test]
    fn messages_round_trip_through_the_wire_format() {
        let chunk = CompleteChunk {
            worker_id: "w1".into(),
            experiment_id: "e1".into(),
            job_key: "malignancy-r07".into(),
            attempt: 3,
            predictions: vec![Prediction {
                image: "images/malignant/P0001_ap.png".into(),
                label: "malignant".into(),
                score: 0.875,
                patient: "P0001".into(),
                site: "distal_femur".into(),
                subtype: "osteosarcoma".into(),
            }],
            history: vec![EpochRecord {
                epoch: 1,
                train_loss: 0.69,
                validation_auc: Some(0.71),
                ..Default::default()
            }],
            last: true,
            provenance_json: r#"{"device":"cuda(0)"}"#.into(),
            youden_threshold: Some(0.4375),
            warnings: vec!["the validation set lacks a class".into()],
            timing: Some(JobTiming {
                total: 4.25,
                validation: Some(0.5),
                images_per_second: 2650.5,
                ..Default::default()
            }),
        };
        let bytes = chunk.encode_to_vec();
        let back = CompleteChunk::decode(bytes.as_slice()).unwrap();
        assert_eq!(back, chunk);
        assert_eq!(back.history[0].validation_loss, None);
        assert_eq!(back.youden_threshold, Some(0.4375));
        assert_eq!(back.warnings.len(), 1);
        assert_eq!(back.timing.map(|t| t.total), Some(4.25));
        assert_eq!(back.timing.and_then(|t| t.validation), Some(0.5));
        assert_eq!(Task::try_from(2), Ok(Task::Malignancy));
    }
}
