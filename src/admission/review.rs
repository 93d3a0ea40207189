//! The `admission.k8s.io/v1` AdmissionReview wire format: reading a request
//! body (rejecting anything malformed or of another version with a clear
//! 400) and wrapping a response.
use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use kube::core::DynamicObject;
use kube::core::admission::{AdmissionRequest, AdmissionResponse, AdmissionReview};

/// The only AdmissionReview version we speak; the webhook configurations
/// ask the API server for exactly this one.
pub const REVIEW_API_VERSION: &str = "admission.k8s.io/v1";
const REVIEW_KIND: &str = "AdmissionReview";

/// Why a request body is not a usable AdmissionReview. Answered with 400.
#[derive(Debug, thiserror::Error)]
pub enum ReviewError {
    #[error("request body is not a valid AdmissionReview: {0}")]
    Malformed(#[source] serde_json::Error),
    #[error(
        "unsupported review {kind:?} {api_version:?}: only {REVIEW_KIND} {REVIEW_API_VERSION} is served"
    )]
    UnsupportedVersion { api_version: String, kind: String },
    #[error("AdmissionReview has no request")]
    MissingRequest,
}

impl IntoResponse for ReviewError {
    fn into_response(self) -> Response {
        (StatusCode::BAD_REQUEST, self.to_string()).into_response()
    }
}

/// The request carried by a v1 AdmissionReview body.
pub type Request = AdmissionRequest<DynamicObject>;

/// Parses and checks a review body.
pub fn parse_review(body: &[u8]) -> Result<Request, ReviewError> {
    let review: AdmissionReview<DynamicObject> =
        serde_json::from_slice(body).map_err(ReviewError::Malformed)?;
    if review.types.api_version != REVIEW_API_VERSION || review.types.kind != REVIEW_KIND {
        return Err(ReviewError::UnsupportedVersion {
            api_version: review.types.api_version,
            kind: review.types.kind,
        });
    }
    review.try_into().map_err(|_| ReviewError::MissingRequest)
}

/// Wraps a response into the review body the API server expects.
pub fn reply(response: AdmissionResponse) -> Json<AdmissionReview<DynamicObject>> {
    Json(response.into_review())
}

/// `Kind namespace/name` for messages; the name may be empty on CREATE with
/// `generateName`, so fall back to the object's own name or generateName.
pub fn describe_subject(request: &Request) -> String {
    let object_meta = request.object.as_ref().map(|o| &o.metadata);
    let name = if !request.name.is_empty() {
        request.name.clone()
    } else {
        object_meta
            .and_then(|m| m.name.clone().or_else(|| m.generate_name.clone()))
            .unwrap_or_default()
    };
    match request.namespace.as_deref() {
        Some(ns) if !ns.is_empty() => format!("{} {ns}/{name}", request.kind.kind),
        _ => format!("{} {name}", request.kind.kind),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use serde_json::json;

    /// A v1 review of a Pod CREATE, for tests across the module.
    pub(crate) fn pod_review(pod_spec: serde_json::Value) -> serde_json::Value {
        json!({
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "request": {
                "uid": "705ab4f5-6393-11e8-b7cc-42010a800002",
                "kind": {"group": "", "version": "v1", "kind": "Pod"},
                "resource": {"group": "", "version": "v1", "resource": "pods"},
                "name": "web",
                "namespace": "default",
                "operation": "CREATE",
                "userInfo": {"username": "alice", "groups": ["system:authenticated"]},
                "object": {
                    "apiVersion": "v1",
                    "kind": "Pod",
                    "metadata": {"name": "web", "namespace": "default"},
                    "spec": pod_spec
                },
                "oldObject": null,
                "dryRun": false
            }
        })
    }

    #[test]
    fn parses_a_v1_review() {
        let body = pod_review(json!({"containers": [{"name": "c", "image": "nginx:1.27"}]}));
        let request = parse_review(body.to_string().as_bytes());
        let request = match request {
            Ok(r) => r,
            Err(e) => panic!("valid review rejected: {e}"),
        };
        assert_eq!(request.uid, "705ab4f5-6393-11e8-b7cc-42010a800002");
        assert_eq!(describe_subject(&request), "Pod default/web");
    }

    #[test]
    fn malformed_body_is_rejected() {
        for body in [&b"not json"[..], b"{}", b"{\"apiVersion\": 3}", b""] {
            let err = parse_review(body).err();
            assert!(
                matches!(
                    err,
                    Some(ReviewError::Malformed(_) | ReviewError::UnsupportedVersion { .. })
                ),
                "{:?} gave {err:?}",
                String::from_utf8_lossy(body)
            );
        }
    }

    #[test]
    fn v1beta1_review_is_rejected() {
        let mut body = pod_review(json!({"containers": []}));
        body["apiVersion"] = json!("admission.k8s.io/v1beta1");
        let err = parse_review(body.to_string().as_bytes()).err();
        assert!(
            matches!(err, Some(ReviewError::UnsupportedVersion { .. })),
            "{err:?}"
        );
        let text = err.map(|e| e.to_string()).unwrap_or_default();
        assert!(text.contains("admission.k8s.io/v1beta1"), "{text}");
    }

    #[test]
    fn review_without_request_is_rejected() {
        let body = json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview"});
        let err = parse_review(body.to_string().as_bytes()).err();
        assert!(matches!(err, Some(ReviewError::MissingRequest)), "{err:?}");
    }

    #[test]
    fn errors_answer_400() {
        let response = ReviewError::MissingRequest.into_response();
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    }
}
