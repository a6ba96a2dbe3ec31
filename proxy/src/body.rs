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
