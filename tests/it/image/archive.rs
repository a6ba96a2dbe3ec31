//! An OCI image archive (a tar of an OCI image layout), read with the system's tar: its
//! manifest, its configuration and the files of its layers.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;
use tempfile::TempDir;

#[derive(Debug)]
pub struct Archive {
    dir: TempDir,
    pub manifest: Value,
    pub config: Value,
}

/// One file of a layer, as `tar --list --verbose --numeric-owner` shows it.
#[derive(Debug)]
pub struct Entry {
    /// `-` a file, `d` a directory, `l` a symbolic link, `h` a hard link…
    pub kind: char,
    pub mode: String,
    pub owner: String,
    pub path: String,
}

impl Archive {
    pub fn open(path: &Path) -> Archive {
        let dir = tempfile::tempdir().unwrap();
        tar(&["-xf", path.to_str().unwrap(), "-C", dir.path().to_str().unwrap()]);
        let json = |p: PathBuf| -> Value { serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap() };
        let index = json(dir.path().join("index.json"));
        let manifests = index["manifests"].as_array().unwrap();
        assert_eq!(manifests.len(), 1, "one image in the archive: {index}");
        let manifest = json(blob(dir.path(), &manifests[0]["digest"]));
        let config = json(blob(dir.path(), &manifest["config"]["digest"]));
        Archive { dir, manifest, config }
    }

    /// The layers' descriptors.
    pub fn layers(&self) -> &[Value] {
        self.manifest["layers"].as_array().unwrap()
    }

    /// What a registry stores and a node pulls: the configuration and the compressed layers,
    /// as the manifest records them (each checked against the blob's size on disk).
    pub fn compressed_size(&self) -> u64 {
        let descriptors = std::iter::once(&self.manifest["config"]).chain(self.layers());
        descriptors
            .map(|d| {
                let size = d["size"].as_u64().unwrap();
                let on_disk = std::fs::metadata(blob(self.dir.path(), &d["digest"])).unwrap().len();
                assert_eq!(size, on_disk, "the manifest's size of {}", d["digest"]);
                size
            })
            .sum()
    }

    /// Every file of every layer, paths without the leading `./` or `/`.
    pub fn files(&self) -> Vec<Entry> {
        let mut all = Vec::new();
        for layer in self.layers() {
            let path = blob(self.dir.path(), &layer["digest"]);
            let list = tar(&["--list", "--verbose", "--numeric-owner", "-f", path.to_str().unwrap()]);
            all.extend(list.lines().map(entry));
        }
        all
    }

    /// A file of the image, read from the (last) layer that holds it.
    pub fn read(&self, file: &str) -> String {
        for layer in self.layers().iter().rev() {
            let path = blob(self.dir.path(), &layer["digest"]);
            let out = Command::new("tar").args(["-xOf", path.to_str().unwrap(), file]).output().unwrap();
            if out.status.success() {
                return String::from_utf8(out.stdout).unwrap();
            }
        }
        panic!("no {file} in the image")
    }
}

fn blob(dir: &Path, digest: &Value) -> PathBuf {
    let (algorithm, hex) = digest.as_str().unwrap().split_once(':').unwrap();
    dir.join("blobs").join(algorithm).join(hex)
}

fn tar(args: &[&str]) -> String {
    let out = Command::new("tar").args(args).output().unwrap();
    assert!(out.status.success(), "tar {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

/// `drwxr-xr-x 0/0 0 2026-12-01 19:00 ./usr/local/bin/` → an entry (no path here has a space).
fn entry(line: &str) -> Entry {
    let fields: Vec<&str> = line.split_whitespace().collect();
    assert!(fields.len() >= 6, "a tar listing line: {line}");
    let path = fields[5].trim_start_matches("./").trim_start_matches('/').trim_end_matches('/');
    Entry {
        kind: fields[0].chars().next().unwrap(),
        mode: fields[0].to_owned(),
        owner: fields[1].to_owned(),
        path: path.to_owned(),
    }
}
