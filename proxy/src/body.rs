//! The response body type every layer speaks, and the error responses berth writes itself.

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full};

/// Errors a body may yield while streaming.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A streamed response body.
pub type Body = UnsyncBoxBody<Bytes, BoxError>;

/// A response with berth's body type.
pub type HttpResponse = Response<Body>;

/// The header that says why berth, not the app, answered with an error.
pub use berth_core::header::ERROR as ERROR_HEADER;

/// A body holding `bytes`.
pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into()).map_err(|never| match never {}).boxed_unsync()
}

/// An empty body.
pub fn empty() -> Body {
    http_body_util::Empty::new().map_err(|never| match never {}).boxed_unsync()
}

/// Boxes any body whose errors convert to [`BoxError`].
pub fn boxed<B>(body: B) -> Body
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    body.map_err(Into::into).boxed_unsync()
}

/// An error written by berth: `status`, `x-berth-error: <code>`, and a plain-text body that
/// says what happened and what to do.
pub fn error(status: StatusCode, code: &'static str, message: impl std::fmt::Display) -> HttpResponse {
    let mut resp = Response::new(full(format!("berth: {message}\n")));
    *resp.status_mut() = status;
    let headers = resp.headers_mut();
    headers.insert(ERROR_HEADER, HeaderValue::from_static(code));
    headers.insert(http::header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    resp
}

/// The gRPC status codes berth answers with (the subset of `google.rpc.Code` it needs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum GrpcStatus {
    Unknown = 2,
    InvalidArgument = 3,
    DeadlineExceeded = 4,
    ResourceExhausted = 8,
    Unimplemented = 12,
    Internal = 13,
    Unavailable = 14,
}

impl GrpcStatus {
    /// The gRPC status that tells a gRPC client what an HTTP status of berth's would: gRPC's
    /// own HTTP mapping, with timeouts as `DEADLINE_EXCEEDED` and refused sizes as
    /// `RESOURCE_EXHAUSTED`, as Linkerd answers.
    pub fn for_http(status: StatusCode) -> GrpcStatus {
        match status.as_u16() {
            400 => GrpcStatus::InvalidArgument,
            405 | 404 => GrpcStatus::Unimplemented,
            413 | 431 => GrpcStatus::ResourceExhausted,
            429 | 502 | 503 => GrpcStatus::Unavailable,
            504 => GrpcStatus::DeadlineExceeded,
            500 => GrpcStatus::Internal,
            _ => GrpcStatus::Unknown,
        }
    }

    /// The `grpc-status` value.
    pub fn code(self) -> u8 {
        self as u8
    }
}

/// Whether a request is gRPC (`content-type: application/grpc` or `application/grpc+…`).
pub fn is_grpc(headers: &http::HeaderMap) -> bool {
    headers.get(http::header::CONTENT_TYPE).is_some_and(|v| {
        let v = v.as_bytes();
        v.len() >= 16
            && v[..16].eq_ignore_ascii_case(b"application/grpc")
            && matches!(v.get(16), None | Some(b'+' | b';'))
    })
}

/// An error written by berth for a gRPC client: HTTP 200 with the status in `grpc-status` and
/// `grpc-message` (a trailers-only response, as gRPC servers send for an immediate failure),
/// plus `x-berth-error` like every error berth writes.
pub fn grpc_error(status: GrpcStatus, code: &'static str, message: impl std::fmt::Display) -> HttpResponse {
    let mut resp = Response::new(full(Bytes::new()));
    let headers = resp.headers_mut();
    headers.insert(http::header::CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
    headers.insert("grpc-status", HeaderValue::from(u16::from(status.code())));
    if let Ok(v) = HeaderValue::try_from(grpc_message(&format!("berth: {message}"))) {
        headers.insert("grpc-message", v);
    }
    headers.insert(ERROR_HEADER, HeaderValue::from_static(code));
    resp
}

/// Percent-encodes a `grpc-message` as the gRPC HTTP/2 protocol asks: every byte outside
/// printable ASCII, and `%` itself.
fn grpc_message(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if (0x20..=0x7e).contains(&b) && b != b'%' {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use http_body::Body as _;

    use super::*;

    #[test]
    fn grpc_content_types() {
        let h = |v: &'static str| {
            let mut h = http::HeaderMap::new();
            h.insert(http::header::CONTENT_TYPE, HeaderValue::from_static(v));
            h
        };
        assert!(is_grpc(&h("application/grpc")));
        assert!(is_grpc(&h("application/grpc+proto")));
        assert!(is_grpc(&h("Application/GRPC;charset=utf-8")));
        assert!(!is_grpc(&h("application/grpc-web")));
        assert!(!is_grpc(&h("application/json")));
        assert!(!is_grpc(&http::HeaderMap::new()));
    }

    #[test]
    fn grpc_errors_are_trailers_only_with_an_encoded_message() {
        let resp = grpc_error(GrpcStatus::Unavailable, "no-instances", "50% — gone");
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(resp.headers()["content-type"], "application/grpc");
        assert_eq!(resp.headers()["grpc-status"], "14");
        assert_eq!(resp.headers()["grpc-message"], "berth: 50%25 %E2%80%94 gone");
        assert_eq!(resp.headers()[ERROR_HEADER], "no-instances");
        assert!(resp.body().is_end_stream());
    }

    #[test]
    fn http_statuses_map_to_grpc_statuses() {
        let cases =
            [(400, 3), (405, 12), (431, 8), (413, 8), (502, 14), (503, 14), (504, 4), (500, 13), (418, 2)];
        for (http, grpc) in cases {
            let got = GrpcStatus::for_http(StatusCode::from_u16(http).unwrap()).code();
            assert_eq!(got, grpc, "HTTP {http}");
        }
    }
}
