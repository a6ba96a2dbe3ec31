//! One version, Cargo's workspace version (`[workspace.package]` in Cargo.toml): `berth
//! --version` answers it, the chart deploys the image of it, the injector injects the image of
//! it, and the docs name it. scripts/image.sh labels the image with it (tests/it/image).

use std::process::Command;

use serde_json::Value;

use crate::injector::inject;
use crate::support::berth;

/// What Cargo compiled into the binary: the workspace version (`version.workspace = true`).
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
/// The image every default points at.
pub const REPOSITORY: &str = "ghcr.io/berth-io/berth";
const ROOT: &str = env!("CARGO_MANIFEST_DIR");

fn image() -> String {
    format!("{REPOSITORY}:{VERSION}")
}

fn read(path: &str) -> String {
    std::fs::read_to_string(format!("{ROOT}/{path}")).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn yaml(text: &str) -> Value {
    serde_norway::from_str(text).unwrap()
}

#[test]
fn berth_version_answers_the_workspace_version() {
    let manifest = read("Cargo.toml");
    let workspace = manifest.split("[workspace.package]").nth(1).expect("a [workspace.package] table");
    let version = workspace
        .lines()
        .find_map(|l| l.strip_prefix("version = "))
        .expect("[workspace.package] sets version")
        .trim_matches('"');
    assert_eq!(version, VERSION, "the berth package takes its version from the workspace");

    let out = berth().arg("--version").output().unwrap();
    assert!(out.status.success());
    assert_eq!(String::from_utf8(out.stdout).unwrap().trim(), format!("berth {VERSION}"));
}

#[test]
fn the_chart_deploys_the_image_of_this_version() {
    let chart = yaml(&read("charts/berth/Chart.yaml"));
    assert_eq!(chart["appVersion"], VERSION, "Chart.yaml's appVersion");
    let values = yaml(&read("charts/berth/values.yaml"));
    assert_eq!(values["image"]["repository"], REPOSITORY);
    assert_eq!(values["image"]["tag"], "", "an empty tag means the chart's appVersion");
    assert_eq!(values["sidecar"]["image"]["tag"], "", "an empty tag means the chart's appVersion");

    let rendered = helm_template();
    let mut images = Vec::new();
    for doc in rendered.split("\n---").map(yaml) {
        let containers = doc.pointer("/spec/template/spec/containers").and_then(Value::as_array);
        images.extend(containers.into_iter().flatten().map(|c| c["image"].clone()));
        if let Some(config) = doc.pointer("/data/injector.yaml").and_then(Value::as_str) {
            images.push(yaml(config)["image"].clone());
        }
    }
    // The injector's and admin's containers, and the sidecar image in the injector's config.
    assert!(images.len() >= 3, "found only {images:?} in the rendered chart");
    for found in images {
        assert_eq!(found, image(), "an image the chart renders by default");
    }
}

#[test]
fn the_injector_injects_the_image_of_this_version() {
    let pod = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: shop\n  annotations: {berth.io/inject: enabled, \
               berth.io/service: shop}\nspec:\n  containers: [{name: app, image: shop, ports: [{containerPort: 8080}]}]\n";
    let (out, _) = inject("-", Some(pod), None);
    let pod = yaml(&out);
    let sidecar = pod["spec"]["initContainers"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["name"] == "berth-proxy"))
        .unwrap_or_else(|| panic!("no berth-proxy sidecar in {out}"));
    assert_eq!(sidecar["image"], image(), "the injector's default sidecar image");
}

#[test]
fn the_docs_name_the_image_of_this_version() {
    let mut named = 0;
    for doc in ["README.md", "charts/berth/README.md", "docs/kubernetes.md", "Dockerfile"] {
        let text = read(doc);
        for (at, _) in text.match_indices(&format!("{REPOSITORY}:")) {
            let tag: String = text[at + REPOSITORY.len() + 1..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || ".-_".contains(*c))
                .collect();
            if tag.starts_with(|c: char| c.is_ascii_digit()) {
                assert_eq!(tag, VERSION, "{doc} names {REPOSITORY}:{tag}");
                named += 1;
            }
        }
    }
    assert!(named > 0, "no doc names the image with its version");
}

/// The chart rendered with its default values.
fn helm_template() -> String {
    let helm = std::env::var_os("BERTH_HELM").map_or_else(
        || {
            let home = std::env::var_os("HOME").unwrap_or_default();
            std::path::Path::new(&home).join(".cache/berth/tools/helm/helm")
        },
        Into::into,
    );
    let out = Command::new(&helm)
        .args(["template", "berth", &format!("{ROOT}/charts/berth"), "--namespace", "berth-system"])
        .output()
        .unwrap_or_else(|e| panic!("{}: {e} (scripts/test.sh installs helm)", helm.display()));
    assert!(out.status.success(), "helm template: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}
