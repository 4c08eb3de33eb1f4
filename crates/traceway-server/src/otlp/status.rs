//! `google.rpc.Status` and the error details OTLP failures carry, built from the generated
//! `google.rpc` types of `tonic-types` (ADR 014).
//!
//! OTLP/HTTP answers every 4xx/5xx with a `Status` in the request's encoding; OTLP/gRPC
//! puts one in the `grpc-status-details-bin` trailer, with a `RetryInfo` when a retry can
//! succeed.

use prost_types::{Any, Duration};
use serde_json::{json, Value};
use tonic_types::pb::{bad_request::FieldViolation, BadRequest, RetryInfo, Status};

/// The type URL of `RetryInfo` in `Any`.
pub const RETRY_INFO_TYPE: &str = "type.googleapis.com/google.rpc.RetryInfo";
/// The type URL of `BadRequest` in `Any`.
pub const BAD_REQUEST_TYPE: &str = "type.googleapis.com/google.rpc.BadRequest";

/// A detail of a failure, in both encodings.
#[derive(Debug, Clone, PartialEq)]
pub enum Detail {
    /// Retry after this many seconds.
    RetryAfter(u32),
    /// The request is malformed; the description says why.
    BadRequest(String),
}

impl Detail {
    fn to_any(&self) -> Any {
        use prost::Message as _;
        match self {
            Detail::RetryAfter(secs) => Any {
                type_url: RETRY_INFO_TYPE.into(),
                value: RetryInfo {
                    retry_delay: Some(Duration {
                        seconds: i64::from(*secs),
                        nanos: 0,
                    }),
                }
                .encode_to_vec(),
            },
            Detail::BadRequest(description) => Any {
                type_url: BAD_REQUEST_TYPE.into(),
                value: BadRequest {
                    field_violations: vec![FieldViolation {
                        description: description.clone(),
                        ..FieldViolation::default()
                    }],
                }
                .encode_to_vec(),
            },
        }
    }

    /// The proto3 JSON form of the `Any` (`@type` plus the message's fields).
    fn to_json(&self) -> Value {
        match self {
            Detail::RetryAfter(secs) => {
                json!({"@type": RETRY_INFO_TYPE, "retryDelay": format!("{secs}s")})
            }
            Detail::BadRequest(description) => json!({
                "@type": BAD_REQUEST_TYPE,
                "fieldViolations": [{"description": description}],
            }),
        }
    }
}

/// A `google.rpc.Status` as protobuf bytes.
pub fn encode_protobuf(code: i32, message: &str, details: &[Detail]) -> Vec<u8> {
    use prost::Message as _;
    Status {
        code,
        message: message.to_string(),
        details: details.iter().map(Detail::to_any).collect(),
    }
    .encode_to_vec()
}

/// A `google.rpc.Status` in proto3 JSON.
pub fn encode_json(code: i32, message: &str, details: &[Detail]) -> Vec<u8> {
    let mut v = json!({"code": code, "message": message});
    if !details.is_empty() {
        v["details"] = details.iter().map(Detail::to_json).collect();
    }
    serde_json::to_vec(&v).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message as _;

    #[test]
    fn retry_info_round_trips_through_status_bytes() {
        let bytes = encode_protobuf(14, "busy", &[Detail::RetryAfter(2)]);
        let st = Status::decode(bytes.as_slice()).unwrap();
        assert_eq!((st.code, st.message.as_str()), (14, "busy"));
        assert_eq!(st.details[0].type_url, RETRY_INFO_TYPE);
        let info = RetryInfo::decode(st.details[0].value.as_slice()).unwrap();
        assert_eq!(info.retry_delay.unwrap().seconds, 2);
    }

    #[test]
    fn json_status_has_code_message_and_typed_details() {
        let v: Value =
            serde_json::from_slice(&encode_json(3, "bad", &[Detail::BadRequest("x".into())]))
                .unwrap();
        assert_eq!(v["code"], 3);
        assert_eq!(v["message"], "bad");
        assert_eq!(v["details"][0]["@type"], BAD_REQUEST_TYPE);
        assert_eq!(v["details"][0]["fieldViolations"][0]["description"], "x");
    }
}
