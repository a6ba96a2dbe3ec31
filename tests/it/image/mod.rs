//! berth's container image, as scripts/image.sh builds it (`target/image/berth.oci.tar`, or
//! `$BERTH_IMAGE`): what it holds and says about itself, read from the archive, and berth
//! running in it under buildah. scripts/test.sh builds the image first; where buildah cannot
//! be had it says so and sets `BERTH_IMAGE_SKIP` to why, and these tests print that and pass.

mod archive;
mod buildah;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use self::archive::Archive;
use self::buildah::{Container, descendants_named, uid};
use crate::support::{App, client, eventually};
use crate::version::VERSION;

/// The most a node may have to pull for the sidecar, compressed (linkerd2-proxy's is ~20 MB).
const LIMIT_BYTES: u64 = 25_000_000;
/// Who berth runs as in the image: the conventional non-root user of minimal images.
const USER: u32 = 65532;
const T: Duration = Duration::from_secs(30);

/// The image archive under test; `None` (after saying why) when the test command could not
/// build one.
fn archive() -> Option<PathBuf> {
    if let Ok(why) = std::env::var("BERTH_IMAGE_SKIP") {
        eprintln!("skipped: {why}");
        return None;
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target"), PathBuf::from);
    let path =
        std::env::var_os("BERTH_IMAGE").map_or_else(|| target.join("image/berth.oci.tar"), PathBuf::from);
    assert!(path.is_file(), "no image at {}: build it with scripts/image.sh (needs buildah)", path.display());
    Some(path)
}

#[test]
fn the_image_says_its_version_revision_source_and_licence() {
    let Some(path) = archive() else { return };
    let image = Archive::open(&path);
    let config = &image.config["config"];
    let head = std::process::Command::new("git").args(["rev-parse", "HEAD"]).output().unwrap();
    let head = String::from_utf8(head.stdout).unwrap().trim().to_owned();
    assert_eq!(head.len(), 40, "git rev-parse HEAD: {head:?}");
    for (what, found) in [("labels", &config["Labels"]), ("annotations", &image.manifest["annotations"])] {
        let oci =
            |key: &str| found[format!("org.opencontainers.image.{key}")].as_str().unwrap_or("").to_owned();
        assert_eq!(oci("version"), VERSION, "{what}: {found}");
        assert_eq!(oci("source"), env!("CARGO_PKG_REPOSITORY"), "{what}");
        assert_eq!(oci("licenses"), env!("CARGO_PKG_LICENSE"), "{what}");
        // The commit checked out (so also: not an image left from another commit).
        let revision = oci("revision");
        assert_eq!(revision.trim_end_matches("-dirty"), head, "{what}: the revision");
    }
    assert_eq!(config["User"], format!("{USER}:{USER}"));
    assert_eq!(config["Entrypoint"], serde_json::json!(["/usr/local/bin/berth"]));
}

#[test]
fn the_image_is_small_enough_to_pull_on_every_rollout() {
    let Some(path) = archive() else { return };
    let size = Archive::open(&path).compressed_size();
    println!(
        "image {}: {:.1} MB compressed (limit {} MB)",
        path.display(),
        size as f64 / 1e6,
        LIMIT_BYTES / 1_000_000
    );
    assert!(size <= LIMIT_BYTES, "the image is {size} bytes compressed, over the limit of {LIMIT_BYTES}");
}

#[test]
fn the_image_holds_berth_its_libraries_and_a_few_files_only() {
    let Some(path) = archive() else { return };
    let image = Archive::open(&path);
    let files = image.files();
    assert!(files.iter().any(|e| e.path == "usr/local/bin/berth" && e.mode == "-rwxr-xr-x"), "no berth");
    for e in &files {
        let name = e.path.rsplit('/').next().unwrap_or("");
        let library = (e.path.starts_with("lib") || e.path.starts_with("usr/lib")) && name.contains(".so");
        let known = [
            "usr/local/bin/berth",
            "etc/passwd",
            "etc/group",
            "etc/nsswitch.conf",
            "etc/ssl/certs/ca-certificates.crt",
        ];
        match e.kind {
            '-' => assert!(known.contains(&e.path.as_str()) || library, "an unexpected file: {e:?}"),
            'd' => {}
            _ => panic!("only files and directories, not {e:?}"),
        }
        assert_eq!(e.owner, "0/0", "owned by root, so user {USER} cannot change it: {e:?}");
        if e.kind == '-' && !library && e.path != "usr/local/bin/berth" {
            assert_eq!(e.mode, "-rw-r--r--", "data, not a program: {e:?}");
        }
    }
    let passwd = image.read("etc/passwd");
    assert!(passwd.lines().any(|l| l.starts_with(&format!("nonroot:x:{USER}:{USER}:"))), "{passwd}");
    assert!(image.read("etc/group").lines().any(|l| l == format!("nonroot:x:{USER}:")));
}

#[tokio::test]
async fn berth_in_the_image_answers_its_version_and_there_is_no_shell() {
    let Some(path) = archive() else { return };
    let container = Container::from_archive(&path);
    let (code, out) = container.run(&["/usr/local/bin/berth", "--version"]).await;
    assert_eq!(code, Some(0), "{out}");
    assert!(out.lines().any(|l| l == format!("berth {VERSION}")), "berth --version in the image: {out}");
    // By name, as `kubectl exec POD -- berth …` would: PATH is set.
    let (code, out) = container.run(&["berth", "--version"]).await;
    assert_eq!(code, Some(0), "{out}");

    // Each with arguments it would succeed on, were it there (buildah's own message about a
    // missing program is not always printed, so the exit code is the evidence).
    let programs: [&[&str]; 6] = [
        &["/bin/sh", "-c", "exit 0"],
        &["/bin/bash", "-c", "exit 0"],
        &["/bin/busybox", "true"],
        &["/usr/bin/apt-get", "--version"],
        &["/usr/bin/dpkg", "--version"],
        &["/sbin/apk", "--version"],
    ];
    for argv in programs {
        let (code, out) = container.run(argv).await;
        assert_ne!(code, Some(0), "{} ran in the image: {out}", argv[0]);
    }
}

#[tokio::test]
async fn the_sidecar_in_the_image_runs_as_65532_and_answers_live_and_ready() {
    let Some(path) = archive() else { return };
    let container = Container::from_archive(&path);
    let app = App::start("imaged").await;
    let registry = tempfile::tempdir().unwrap();
    // Writable by the image's user: the directory registry writes its instance file here.
    std::fs::set_permissions(registry.path(), std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
    let port = app.addr.port().to_string();
    // By name: `localhost` resolves through the image's C library and the /etc/hosts buildah
    // gives it (as the kubelet does).
    let dependency = format!("tcp://localhost:{port}");
    let mut args: Vec<&str> = "--service imaged --registry dir:///registry --health-interval 100ms \
                               --inbound 127.0.0.1:0 --admin 127.0.0.1:0 --outbound 127.0.0.1:0"
        .split_whitespace()
        .collect();
    args.extend(["--app-port", &port, "--dependency", &dependency]);
    let started = Instant::now();
    let sidecar = container.sidecar(&[(registry.path(), "/registry")], &args).await;
    let live = format!("http://{}/live", sidecar.admin);
    eventually(T, "/live answers 200", || async {
        client().get(&live).send().await.is_ok_and(|r| r.status() == 200)
    })
    .await;
    println!("the sidecar in the image answered /live {:?} after buildah run", started.elapsed());

    let berth = descendants_named(sidecar.proc.0.pid(), "berth");
    assert_eq!(berth.len(), 1, "one berth process below buildah: {berth:?}");
    assert_eq!(uid(berth[0]), USER, "the user berth runs as in the image");

    let ready = format!("http://{}/ready", sidecar.admin);
    eventually(T, "/ready answers 200 (app, dependency by name, registered)", || async {
        client().get(&ready).send().await.is_ok_and(|r| r.status() == 200)
    })
    .await;
    let through = client().get(format!("http://{}/", sidecar.inbound)).send().await.unwrap();
    assert_eq!(through.status(), 200, "a request through the sidecar's inbound port");
    // The instance the sidecar registered from inside the image, in the mounted directory.
    let files = walk(registry.path());
    let instance = files.iter().find(|f| f.to_string_lossy().contains("imaged"));
    let instance =
        std::fs::read_to_string(instance.unwrap_or_else(|| panic!("no imaged in {files:?}"))).unwrap();
    assert!(instance.contains(&format!("\"{}\"", sidecar.inbound)), "not the inbound address: {instance}");
}

/// The files below `dir`, at any depth.
fn walk(dir: &std::path::Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() { files.extend(walk(&path)) } else { files.push(path) }
    }
    files
}
