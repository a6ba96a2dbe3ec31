use std::net::SocketAddr;
use std::time::Duration;

use http::StatusCode;
use http_body_util::BodyExt;

use super::*;
use crate::outbound::RetryClass;

fn addr() -> SocketAddr {
    SocketAddr::from(([10, 0, 0, 1], 80))
}

async fn text(resp: HttpResponse) -> String {
    String::from_utf8(resp.into_body().collect().await.unwrap().to_bytes().to_vec()).unwrap()
}

fn cases() -> Vec<(Error, StatusCode, &'static str, u8)> {
    let ns = || "public".to_owned();
    vec![
        (
            Error::NoService(crate::outbound::target::TargetError::NoService),
            StatusCode::BAD_REQUEST,
            "no-service",
            3,
        ),
        (Error::BadSymbol("x-berth-symbol: bad".into()), StatusCode::BAD_REQUEST, "bad-symbol", 3),
        (Error::ConnectUnsupported, StatusCode::METHOD_NOT_ALLOWED, "connect-unsupported", 12),
        (
            Error::HeadersTooLarge { size: 70_000, limit: 16_384 },
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "headers-too-large",
            8,
        ),
        (Error::BadRequest("bad body".into()), StatusCode::BAD_REQUEST, "bad-request", 3),
        (
            Error::RegistryUnavailable { service: "users".into(), namespace: ns(), detail: "down".into() },
            StatusCode::SERVICE_UNAVAILABLE,
            "registry-unavailable",
            14,
        ),
        (
            Error::UnknownService { service: "users".into(), namespace: ns() },
            StatusCode::SERVICE_UNAVAILABLE,
            "unknown-service",
            14,
        ),
        (
            Error::NoInstances { service: "users".into(), namespace: ns(), listed: 0 },
            StatusCode::SERVICE_UNAVAILABLE,
            "no-instances",
            14,
        ),
        (
            Error::NoSymbolInstances { service: "users".into(), namespace: ns(), symbol: "blue".into() },
            StatusCode::SERVICE_UNAVAILABLE,
            "no-symbol-instances",
            14,
        ),
        (
            Error::Exhausted {
                service: "users".into(),
                tried: vec![addr()],
                last: Box::new(Error::Connect { addr: addr(), detail: "refused".into() }),
                why: "no other instance to try",
                symbol: None,
            },
            StatusCode::SERVICE_UNAVAILABLE,
            "connect-failed",
            14,
        ),
        (
            Error::Exhausted {
                service: "users".into(),
                tried: vec![addr()],
                last: Box::new(Error::Reset { addr: addr(), detail: "reset".into() }),
                why: "not retried: the request is not idempotent",
                symbol: None,
            },
            StatusCode::BAD_GATEWAY,
            "upstream-reset",
            14,
        ),
        (
            Error::AttemptTimeout { addr: addr(), after: Duration::from_secs(2) },
            StatusCode::GATEWAY_TIMEOUT,
            "timeout",
            4,
        ),
        (
            Error::RequestTimeout { service: "users".into(), after: Duration::from_secs(30) },
            StatusCode::GATEWAY_TIMEOUT,
            "timeout",
            4,
        ),
    ]
}

#[tokio::test]
async fn every_error_has_its_documented_http_answer() {
    for (error, status, code, _) in cases() {
        let message = error.to_string();
        let resp = respond(error, false);
        assert_eq!(resp.status(), status, "{code}");
        assert_eq!(resp.headers()[body::ERROR_HEADER], code);
        assert_eq!(resp.headers()["content-type"], "text/plain; charset=utf-8");
        assert_eq!(text(resp).await, format!("berth: {message}\n"));
    }
}

#[tokio::test]
async fn a_grpc_client_gets_every_error_as_a_grpc_status() {
    for (error, _, code, grpc) in cases() {
        let resp = respond(error, true);
        assert_eq!(resp.status(), StatusCode::OK, "{code}");
        assert_eq!(resp.headers()["content-type"], "application/grpc");
        assert_eq!(resp.headers()["grpc-status"], grpc.to_string().as_str(), "{code}");
        assert!(resp.headers()["grpc-message"].to_str().unwrap().starts_with("berth: "), "{code}");
        assert_eq!(resp.headers()[body::ERROR_HEADER], code);
        assert_eq!(text(resp).await, "");
    }
}

#[tokio::test]
async fn an_instances_own_answer_is_passed_on_or_turned_into_a_grpc_status() {
    let answered = || Error::Exhausted {
        service: "users".into(),
        tried: vec![addr()],
        last: Box::new(Error::Answered {
            addr: addr(),
            class: RetryClass::Unsent,
            response: Box::new(body::error(
                StatusCode::SERVICE_UNAVAILABLE,
                "app-unavailable",
                "the app is down",
            )),
        }),
        why: "no other instance to try",
        symbol: None,
    };
    let resp = respond(answered(), false);
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(resp.headers()[body::ERROR_HEADER], "app-unavailable");
    assert_eq!(text(resp).await, "berth: the app is down\n");
    let resp = respond(answered(), true);
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()["grpc-status"], "14");
    assert_eq!(resp.headers()[body::ERROR_HEADER], "app-unavailable");
}
