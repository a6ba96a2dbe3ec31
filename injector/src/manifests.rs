//! `berth inject`: the webhook's mutation applied offline to multi-document YAML.
//!
//! Documents are split on their `---` lines and each is looked at alone. Pods, and the pod
//! templates of Deployments, StatefulSets, DaemonSets, ReplicaSets, Jobs and CronJobs, go
//! through [`mutate`] as if their namespace had opted in (so only `berth.io/inject: disabled`
//! keeps one out) and are written back as YAML; every other document, and every pod left
//! unchanged, is copied byte for byte.

use serde_json::{Value, json};

use crate::config::InjectConfig;
use crate::mutate::{Context, Outcome, Scope, mutate};
use crate::sidecar::DrainToken;

/// A manifest `berth inject` could not inject.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("document {doc}: not YAML: {detail}")]
    Yaml { doc: usize, detail: String },
    #[error("document {doc} ({what}): {message}")]
    Refused { doc: usize, what: String, message: String },
}

/// The injected manifests and what happened to each workload.
#[derive(Debug, Default)]
pub struct Injected {
    pub yaml: String,
    /// One line per workload: injected, skipped and why, warnings.
    pub notes: Vec<String>,
}

/// Where the pod template of a workload of `kind` is.
fn template_path(kind: &str) -> Option<&'static str> {
    match kind {
        "Pod" => Some(""),
        "Deployment" | "StatefulSet" | "DaemonSet" | "ReplicaSet" | "ReplicationController" | "Job" => {
            Some("/spec/template")
        }
        "CronJob" => Some("/spec/jobTemplate/spec/template"),
        _ => None,
    }
}

/// Splits `input` into documents, each with the `---` line that opened it (if any).
fn documents(input: &str) -> Vec<(&str, &str)> {
    let mut docs = Vec::new();
    let (mut sep_start, mut body_start, mut offset) = (0, 0, 0);
    for line in input.split_inclusive('\n') {
        let bare = line.trim_end_matches(['\n', '\r']);
        if bare == "---" || bare.starts_with("--- ") || bare.starts_with("---\t") {
            docs.push((&input[sep_start..body_start], &input[body_start..offset]));
            (sep_start, body_start) = (offset, offset + line.len());
        }
        offset += line.len();
    }
    docs.push((&input[sep_start..body_start], &input[body_start..]));
    docs.retain(|(sep, body)| !(sep.is_empty() && body.is_empty()));
    docs
}

/// Injects every workload in `input`; `token` makes each pod template's drain token.
pub fn inject(
    input: &str,
    config: &InjectConfig,
    mut token: impl FnMut() -> DrainToken,
) -> Result<Injected, ManifestError> {
    let mut out = Injected::default();
    for (n, (separator, body)) in documents(input).into_iter().enumerate() {
        out.yaml.push_str(separator);
        match inject_document(n + 1, body, config, token(), &mut out.notes)? {
            Some(yaml) => {
                out.yaml.push_str(&yaml);
                if !yaml.ends_with('\n') {
                    out.yaml.push('\n');
                }
            }
            None => out.yaml.push_str(body),
        }
    }
    Ok(out)
}

/// The injected document as YAML, or `None` to copy it unchanged.
fn inject_document(
    doc: usize,
    body: &str,
    config: &InjectConfig,
    token: DrainToken,
    notes: &mut Vec<String>,
) -> Result<Option<String>, ManifestError> {
    let yaml_err = |e: serde_norway::Error| ManifestError::Yaml { doc, detail: e.to_string() };
    let mut value: Value = match serde_norway::from_str::<Option<Value>>(body).map_err(yaml_err)? {
        Some(v @ Value::Object(_)) => v,
        _ => return Ok(None),
    };
    let kind = value["kind"].as_str().unwrap_or_default().to_owned();
    let Some(path) = template_path(&kind) else { return Ok(None) };
    let namespace = value.pointer("/metadata/namespace").and_then(Value::as_str).map(str::to_owned);
    let name = value.pointer("/metadata/name").and_then(Value::as_str).unwrap_or("(unnamed)");
    let what =
        format!("{kind} {}{name}", namespace.as_deref().map(|ns| format!("{ns}/")).unwrap_or_default());
    let Some(template) = value.pointer_mut(path) else {
        notes.push(format!("{what}: no pod template at {path}, left as is"));
        return Ok(None);
    };
    let mut pod = json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": template.get("metadata").cloned().unwrap_or_else(|| json!({})),
        "spec": template.get("spec").cloned().unwrap_or(Value::Null),
    });
    let ctx = Context { config, own_namespace: None };
    let refused = |message: String| ManifestError::Refused { doc, what: what.clone(), message };
    match mutate(ctx, &pod, namespace.as_deref(), Scope::Namespace, &token) {
        Outcome::Injected { patch, warnings } => {
            json_patch::patch(&mut pod, &patch)
                .map_err(|e| refused(format!("cannot apply the patch: {e}")))?;
            notes.push(format!("{what}: injected"));
            notes.extend(warnings.into_iter().map(|w| format!("{what}: {w}")));
        }
        Outcome::Skipped { why, warnings } => {
            notes.push(format!("{what}: left as is ({why})"));
            notes.extend(warnings.into_iter().map(|w| format!("{what}: {w}")));
            return Ok(None);
        }
        Outcome::Denied { message } => return Err(refused(message)),
        Outcome::Failed { error } => return Err(refused(error)),
    }
    if path.is_empty() {
        value = pod;
    } else if let (Some(t), Value::Object(mut p)) = (template.as_object_mut(), pod) {
        for key in ["metadata", "spec"] {
            if let Some(v) = p.remove(key) {
                t.insert(key.to_owned(), v);
            }
        }
    }
    serde_norway::to_string(&value)
        .map(Some)
        .map_err(|e| refused(format!("cannot write the result as YAML: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documents_keep_their_separators() {
        let input = "a: 1\n---\nb: 2\n--- # c\nc: 3\n";
        let docs = documents(input);
        assert_eq!(docs, [("", "a: 1\n"), ("---\n", "b: 2\n"), ("--- # c\n", "c: 3\n")]);
        assert_eq!(documents("---\na: 1\n"), [("---\n", "a: 1\n")]);
        assert_eq!(documents(""), []);
    }

    #[test]
    fn other_documents_pass_through_byte_for_byte() {
        let input = "# a comment\napiVersion: v1\nkind: Service\nmetadata: {name: s}   # trailing\n---\n\n---\nkind: Pod\n\
                     metadata: {name: p, annotations: {berth.io/inject: disabled}}\nspec: {containers: [{name: a}]}\n";
        let out = inject(input, &InjectConfig::default(), || DrainToken::fixed("t")).unwrap();
        assert_eq!(out.yaml, input);
        assert!(
            out.notes[0].contains("Pod p: left as is (annotated berth.io/inject: disabled)"),
            "{:?}",
            out.notes
        );
    }

    #[test]
    fn bad_yaml_and_bad_annotations_name_the_document() {
        let err =
            inject("a: 1\n---\nkind: [\n", &InjectConfig::default(), || DrainToken::fixed("t")).unwrap_err();
        assert!(err.to_string().starts_with("document 2: not YAML"), "{err}");
        let pod = "kind: Pod\nmetadata: {name: p, labels: {app: a}, annotations: {berth.io/warmup: soon}}\n\
                   spec: {containers: [{name: a, ports: [{containerPort: 80}]}]}\n";
        let err = inject(pod, &InjectConfig::default(), || DrainToken::fixed("t")).unwrap_err().to_string();
        assert!(err.contains("document 1 (Pod p)") && err.contains("berth.io/warmup"), "{err}");
    }
}
