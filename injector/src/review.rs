//! One admission review, from the API server's JSON to the answer: the request is read with
//! kube's `AdmissionReview` types, the pod handed to [`mutate`](crate::mutate::mutate), and the
//! outcome turned into an `AdmissionResponse` that echoes the request's uid.
//!
//! A body that is not an AdmissionReview gets 400 and a response saying why (with the uid when
//! one could be found); an internal failure admits the pod unchanged with a warning, or denies
//! it when the configuration says fail-closed.

use http::StatusCode;
use kube::core::DynamicObject;
use kube::core::admission::{AdmissionRequest, AdmissionResponse, AdmissionReview, Operation};

use crate::mutate::{Context, Outcome, Scope, mutate};
use crate::sidecar::DrainToken;

/// The answer to one review.
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub review: AdmissionReview<DynamicObject>,
    /// The `result` label of `berth_injector_injections_total`.
    pub result: &'static str,
}

/// Reads `body` (an `admission.k8s.io/v1` AdmissionReview) and answers it.
pub fn review(ctx: Context<'_>, body: &[u8], scope: Scope) -> Answer {
    let parsed: Result<AdmissionReview<DynamicObject>, _> = serde_json::from_slice(body);
    let request: AdmissionRequest<DynamicObject> = match parsed.map(|r| r.try_into()) {
        Ok(Ok(req)) => req,
        Ok(Err(_)) => return invalid(body, "the AdmissionReview has no request".into()),
        Err(e) => {
            return invalid(body, format!("the body is not an admission.k8s.io/v1 AdmissionReview: {e}"));
        }
    };
    let response = AdmissionResponse::from(&request);
    let is_pod = request.kind.group.is_empty() && request.kind.kind == "Pod";
    let Some(object) = request.object.as_ref().filter(|_| is_pod && request.operation == Operation::Create)
    else {
        // The webhook configuration sends only pod creations; anything else passes untouched.
        return answer(response, "ignored");
    };
    let outcome = match (serde_json::to_value(object), DrainToken::random()) {
        (Ok(pod), Ok(token)) => mutate(ctx, &pod, request.namespace.as_deref(), scope, &token),
        (Err(e), _) => Outcome::Failed { error: format!("cannot read the pod: {e}") },
        (_, Err(e)) => Outcome::Failed { error: format!("cannot make a drain token: {e}") },
    };
    let label = outcome.label();
    let pod_name = object.metadata.name.as_deref().or(object.metadata.generate_name.as_deref()).unwrap_or("");
    tracing::info!(
        uid = %request.uid, namespace = request.namespace.as_deref().unwrap_or(""), pod = pod_name,
        result = label, "review"
    );
    answer(respond(ctx, response, outcome), label)
}

fn answer(response: AdmissionResponse, result: &'static str) -> Answer {
    Answer { status: StatusCode::OK, review: response.into_review(), result }
}

/// Turns the outcome into the response.
fn respond(ctx: Context<'_>, mut response: AdmissionResponse, outcome: Outcome) -> AdmissionResponse {
    let failed = |mut response: AdmissionResponse, error: String| {
        tracing::error!(error = %error, fail_closed = ctx.config.fail_closed, "injection failed");
        if ctx.config.fail_closed {
            return response
                .deny(format!("berth injector failed ({error}); the pod was refused (fail-closed)"));
        }
        response.warnings = Some(vec![format!(
            "berth: the injector failed ({error}); the pod was admitted without the sidecar"
        )]);
        response
    };
    match outcome {
        Outcome::Injected { patch, warnings } => {
            match response.clone().with_patch(json_patch::Patch(patch)) {
                Ok(mut r) => {
                    r.warnings = Some(warnings).filter(|w| !w.is_empty());
                    r
                }
                Err(e) => failed(response, format!("cannot write the patch: {e}")),
            }
        }
        Outcome::Skipped { warnings, .. } => {
            response.warnings = Some(warnings).filter(|w| !w.is_empty());
            response
        }
        Outcome::Denied { message } => {
            let mut r = response.deny(message);
            r.result.code = 403;
            r.result.reason = "Forbidden".into();
            r
        }
        Outcome::Failed { error } => failed(response, error),
    }
}

/// 400 for a body that is not a review, echoing the request's uid when there is one.
fn invalid(body: &[u8], why: String) -> Answer {
    let uid = serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v.pointer("/request/uid").and_then(|u| u.as_str()).map(str::to_owned));
    tracing::warn!(uid = uid.as_deref().unwrap_or(""), reason = %why, "invalid admission review");
    let mut response = AdmissionResponse::invalid(format!("berth injector: {why}"));
    response.uid = uid.unwrap_or_default();
    response.result.code = 400;
    Answer { status: StatusCode::BAD_REQUEST, review: response.into_review(), result: "invalid" }
}
