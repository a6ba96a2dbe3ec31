//! A registry without a server: a directory of small files.
//!
//! Layout under the root: `<namespace>/naming/<group>/<service>/<ip>_<port>.json`, one file per
//! instance, and `<namespace>/config/BERTH/<data id>` per config document. Files are written
//! atomically (temporary file, then rename). A registering process touches its instance files
//! every [`HEARTBEAT`]; readers skip files not touched for [`STALE_AFTER`], and files whose
//! owner process on this host has died, so a crashed instance disappears like a Nacos ephemeral
//! instance does. Watchers poll every [`POLL`].

use std::collections::HashMap;
use std::fs;
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::url::DirUrl;
use super::{CONFIG_GROUP, ConfigEntry, InstanceSet, Registry, RegistryError, RegistryUrl};
use crate::Instance;

/// How often a registered instance's file is touched.
pub const HEARTBEAT: Duration = Duration::from_secs(2);
/// How long an untouched instance file stays valid.
pub const STALE_AFTER: Duration = Duration::from_secs(10);
/// How often watchers look for changes.
pub const POLL: Duration = Duration::from_millis(200);

/// An instance file: the instance and who registered it.
#[derive(Serialize, Deserialize)]
struct Record {
    #[serde(flatten)]
    instance: Instance,
    host: String,
    pid: u32,
}

/// A registry in a local directory.
#[derive(Debug)]
pub struct DirRegistry {
    url: DirUrl,
    naming_dir: PathBuf,
    config_dir: PathBuf,
    host: String,
    heartbeats: Mutex<HashMap<PathBuf, JoinHandle<()>>>,
    watches: Mutex<HashMap<String, watch::Receiver<InstanceSet>>>,
    config_watches: Mutex<HashMap<String, watch::Receiver<Option<Arc<str>>>>>,
    pollers: Mutex<Vec<JoinHandle<()>>>,
}

impl DirRegistry {
    /// Opens (creating if needed) the registry directory of `url`.
    pub fn open(url: DirUrl) -> Result<Self, RegistryError> {
        let ns = url.root.join(&url.namespace);
        let naming_dir = ns.join("naming").join(&url.group);
        let config_dir = ns.join("config").join(CONFIG_GROUP);
        for d in [&naming_dir, &config_dir] {
            fs::create_dir_all(d).map_err(|source| RegistryError::Io { path: d.clone(), source })?;
        }
        Ok(DirRegistry {
            url,
            naming_dir,
            config_dir,
            host: this_host(),
            heartbeats: Mutex::default(),
            watches: Mutex::default(),
            config_watches: Mutex::default(),
            pollers: Mutex::default(),
        })
    }

    fn service_dir(&self, service: &str) -> Result<PathBuf, RegistryError> {
        Ok(self.naming_dir.join(safe_name(service, "service")?))
    }

    fn instance_file(&self, service: &str, addr: SocketAddr) -> Result<PathBuf, RegistryError> {
        Ok(self.service_dir(service)?.join(format!("{}_{}.json", addr.ip(), addr.port())))
    }

    fn config_file(&self, data_id: &str) -> Result<PathBuf, RegistryError> {
        Ok(self.config_dir.join(safe_name(data_id, "data id")?))
    }
}

impl Drop for DirRegistry {
    fn drop(&mut self) {
        let heartbeats = self.heartbeats.get_mut().unwrap_or_else(|e| e.into_inner());
        let pollers = self.pollers.get_mut().unwrap_or_else(|e| e.into_inner());
        for task in heartbeats.values().chain(pollers.iter()) {
            task.abort();
        }
    }
}

/// Refuses names that would escape the directory.
fn safe_name<'a>(name: &'a str, what: &str) -> Result<&'a str, RegistryError> {
    if name.is_empty() || name.starts_with('.') || name.contains(['/', '\\', '\0']) {
        return Err(RegistryError::Failed {
            registry: "dir".into(),
            op: format!("use {what} `{name}`"),
            detail: format!("a {what} must be non-empty, must not start with `.` and must not contain `/`"),
        });
    }
    Ok(name)
}

fn this_host() -> String {
    fs::read_to_string("/proc/sys/kernel/hostname")
        .map_or_else(|_| "localhost".into(), |h| h.trim().to_owned())
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> RegistryError + '_ {
    move |source| RegistryError::Io { path: path.to_owned(), source }
}

/// Writes `content` to `path` atomically: readers see the old file or the new one, never half.
fn write_atomic(path: &Path, content: &[u8]) -> Result<(), RegistryError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(dir).map_err(io(dir))?;
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let mut f = fs::File::create(&tmp).map_err(io(&tmp))?;
    f.write_all(content).map_err(io(&tmp))?;
    f.sync_data().map_err(io(&tmp))?;
    fs::rename(&tmp, path).map_err(io(path))
}

fn owner_alive(record: &Record, host: &str) -> bool {
    record.host != host || Path::new(&format!("/proc/{}", record.pid)).exists()
}

/// Reads the live instances of a service directory, removing files of dead owners.
fn read_instances(dir: &Path, host: &str) -> Vec<Instance> {
    let Ok(entries) = fs::read_dir(dir) else { return Vec::new() };
    let now = SystemTime::now();
    let mut out = Vec::new();
    for entry in entries.flatten() {
        let path = entry.path();
        if path.extension().is_none_or(|e| e != "json")
            || entry.file_name().to_string_lossy().starts_with('.')
        {
            continue;
        }
        let age = entry
            .metadata()
            .and_then(|m| m.modified())
            .map_or(Duration::MAX, |t| now.duration_since(t).unwrap_or_default());
        let Some(record) = fs::read(&path).ok().and_then(|b| serde_json::from_slice::<Record>(&b).ok())
        else {
            continue;
        };
        if !owner_alive(&record, host) || age > STALE_AFTER * 6 {
            let _ = fs::remove_file(&path);
        } else if age <= STALE_AFTER {
            out.push(record.instance);
        }
    }
    out.sort_by_key(|i| i.addr);
    out
}

#[async_trait]
impl Registry for DirRegistry {
    fn describe(&self) -> String {
        RegistryUrl::Dir(self.url.clone()).to_string()
    }

    fn namespace(&self) -> &str {
        &self.url.namespace
    }

    async fn register(&self, service: &str, instance: &Instance) -> Result<(), RegistryError> {
        let path = self.instance_file(service, instance.addr)?;
        let record = Record { instance: instance.clone(), host: self.host.clone(), pid: std::process::id() };
        let bytes = serde_json::to_vec_pretty(&record).unwrap_or_default();
        write_atomic(&path, &bytes)?;
        let touch = path.clone();
        let heartbeat = tokio::spawn(async move {
            let mut tick = tokio::time::interval(HEARTBEAT);
            loop {
                tick.tick().await;
                // Re-create the file if someone removed it, as Nacos's redo would.
                let ok = fs::File::options()
                    .write(true)
                    .open(&touch)
                    .and_then(|f| f.set_modified(SystemTime::now()));
                if ok.is_err() {
                    let _ = write_atomic(&touch, &bytes);
                }
            }
        });
        if let Some(old) = self.heartbeats.lock().unwrap_or_else(|e| e.into_inner()).insert(path, heartbeat) {
            old.abort();
        }
        Ok(())
    }

    async fn deregister(&self, service: &str, instance: &Instance) -> Result<(), RegistryError> {
        let path = self.instance_file(service, instance.addr)?;
        if let Some(hb) = self.heartbeats.lock().unwrap_or_else(|e| e.into_inner()).remove(&path) {
            hb.abort();
        }
        match fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io(&path)(e)),
            _ => Ok(()),
        }
    }

    async fn instances(&self, service: &str) -> Result<Vec<Instance>, RegistryError> {
        Ok(read_instances(&self.service_dir(service)?, &self.host))
    }

    async fn watch(&self, service: &str) -> Result<watch::Receiver<InstanceSet>, RegistryError> {
        let dir = self.service_dir(service)?;
        let mut watches = self.watches.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(rx) = watches.get(service) {
            return Ok(rx.clone());
        }
        let host = self.host.clone();
        let (tx, rx) = watch::channel(InstanceSet::from(read_instances(&dir, &host)));
        let poller = tokio::spawn(async move {
            loop {
                tokio::time::sleep(POLL).await;
                let now = read_instances(&dir, &host);
                tx.send_if_modified(|old| {
                    let changed = **old != *now;
                    if changed {
                        *old = now.into();
                    }
                    changed
                });
            }
        });
        self.pollers.lock().unwrap_or_else(|e| e.into_inner()).push(poller);
        watches.insert(service.to_owned(), rx.clone());
        Ok(rx)
    }

    async fn services(&self) -> Result<Vec<String>, RegistryError> {
        let entries = fs::read_dir(&self.naming_dir).map_err(io(&self.naming_dir))?;
        let mut names: Vec<String> = entries
            .flatten()
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| !n.starts_with('.'))
            .collect();
        names.sort();
        Ok(names)
    }

    async fn get_config(&self, data_id: &str) -> Result<Option<ConfigEntry>, RegistryError> {
        let path = self.config_file(data_id)?;
        match fs::read_to_string(&path) {
            Ok(content) if content.is_empty() => Ok(None),
            Ok(content) => Ok(Some(ConfigEntry::new(content))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io(&path)(e)),
        }
    }

    async fn publish_config(
        &self,
        data_id: &str,
        content: &str,
        expected_md5: Option<&str>,
    ) -> Result<(), RegistryError> {
        let path = self.config_file(data_id)?;
        // One writer at a time, across processes, so a conditional write is atomic.
        let lock_path = self.config_dir.join(".lock");
        let lock = fs::File::create(&lock_path).map_err(io(&lock_path))?;
        lock.lock().map_err(io(&lock_path))?;
        if let Some(expected) = expected_md5 {
            let current = self.get_config(data_id).await?;
            if current.as_ref().map(|c| c.md5.as_str()) != Some(expected) {
                return Err(RegistryError::Conflict {
                    data_id: data_id.to_owned(),
                    expected: expected.to_owned(),
                });
            }
        }
        write_atomic(&path, content.as_bytes())
    }

    async fn watch_config(&self, data_id: &str) -> Result<watch::Receiver<Option<Arc<str>>>, RegistryError> {
        let path = self.config_file(data_id)?;
        let mut watches = self.config_watches.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(rx) = watches.get(data_id) {
            return Ok(rx.clone());
        }
        let read = move || fs::read_to_string(&path).ok().filter(|c| !c.is_empty()).map(Arc::<str>::from);
        let (tx, rx) = watch::channel(read());
        let poller = tokio::spawn(async move {
            loop {
                tokio::time::sleep(POLL).await;
                let now = read();
                tx.send_if_modified(|old| {
                    let changed = *old != now;
                    if changed {
                        old.clone_from(&now);
                    }
                    changed
                });
            }
        });
        self.pollers.lock().unwrap_or_else(|e| e.into_inner()).push(poller);
        watches.insert(data_id.to_owned(), rx.clone());
        Ok(rx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn registry(root: &Path) -> DirRegistry {
        DirRegistry::open(DirUrl { root: root.into(), namespace: "public".into(), group: "G".into() })
            .unwrap()
    }

    fn instance(port: u16) -> Instance {
        let mut i = Instance::new(SocketAddr::from(([127, 0, 0, 1], port)));
        i.metadata.insert(crate::metadata::SYMBOL.into(), "canary".into());
        i
    }

    #[tokio::test]
    async fn register_list_deregister() {
        let dir = tempfile::tempdir().unwrap();
        let r = registry(dir.path());
        r.register("users", &instance(1)).await.unwrap();
        r.register("users", &instance(2)).await.unwrap();
        let got = r.instances("users").await.unwrap();
        assert_eq!(got, [instance(1), instance(2)]);
        assert_eq!(got[0].symbol().unwrap().as_str(), "canary");
        assert_eq!(r.services().await.unwrap(), ["users"]);
        r.deregister("users", &instance(1)).await.unwrap();
        r.deregister("users", &instance(1)).await.unwrap();
        assert_eq!(r.instances("users").await.unwrap(), [instance(2)]);
    }

    #[tokio::test]
    async fn a_dead_owner_is_not_listed_and_its_file_is_removed() {
        let dir = tempfile::tempdir().unwrap();
        let r = registry(dir.path());
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let dead_pid = child.id();
        child.wait().unwrap();
        let record = Record { instance: instance(3), host: this_host(), pid: dead_pid };
        let path = r.instance_file("users", instance(3).addr).unwrap();
        write_atomic(&path, &serde_json::to_vec(&record).unwrap()).unwrap();
        assert!(r.instances("users").await.unwrap().is_empty());
        assert!(!path.exists());
    }

    #[tokio::test]
    async fn stale_files_are_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let r = registry(dir.path());
        r.register("users", &instance(4)).await.unwrap();
        let path = r.instance_file("users", instance(4).addr).unwrap();
        let old = SystemTime::now() - STALE_AFTER - Duration::from_secs(1);
        fs::File::options().write(true).open(&path).unwrap().set_modified(old).unwrap();
        assert!(r.instances("users").await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn watch_sees_changes() {
        let dir = tempfile::tempdir().unwrap();
        let r = registry(dir.path());
        let mut rx = r.watch("users").await.unwrap();
        assert!(rx.borrow().is_empty());
        r.register("users", &instance(5)).await.unwrap();
        tokio::time::timeout(Duration::from_secs(5), rx.changed()).await.unwrap().unwrap();
        assert_eq!(&**rx.borrow(), [instance(5)]);
    }

    #[tokio::test]
    async fn config_conditional_writes() {
        let dir = tempfile::tempdir().unwrap();
        let r = registry(dir.path());
        assert_eq!(r.get_config("berth.traffic.users").await.unwrap(), None);
        r.publish_config("berth.traffic.users", "{\"a\":1}", None).await.unwrap();
        let v1 = r.get_config("berth.traffic.users").await.unwrap().unwrap();
        assert_eq!(v1.md5, format!("{:x}", md5::compute("{\"a\":1}")));
        r.publish_config("berth.traffic.users", "{\"a\":2}", Some(&v1.md5)).await.unwrap();
        let err = r.publish_config("berth.traffic.users", "{\"a\":3}", Some(&v1.md5)).await.unwrap_err();
        assert!(matches!(err, RegistryError::Conflict { .. }), "{err}");
        assert_eq!(r.get_config("berth.traffic.users").await.unwrap().unwrap().content, "{\"a\":2}");
    }

    #[tokio::test]
    async fn names_cannot_escape_the_directory() {
        let dir = tempfile::tempdir().unwrap();
        let r = registry(dir.path());
        assert!(r.register("../x", &instance(6)).await.is_err());
        assert!(r.get_config("a/b").await.is_err());
    }
}
