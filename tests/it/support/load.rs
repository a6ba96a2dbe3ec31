//! Steady load through a client, bounded in count, stopped on demand: who answered each
//! request (the sample app's `x-app-name`) or how it failed.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// Workers sending `GET url` one request after another until stopped or `max` is reached.
#[derive(Debug)]
pub struct Load {
    stop: Arc<AtomicBool>,
    tally: Arc<Mutex<HashMap<String, usize>>>,
    workers: Vec<tokio::task::JoinHandle<()>>,
}

/// What one request came to: the answering app's name, or the status and body of a failure.
pub async fn outcome(client: &reqwest::Client, url: &str) -> String {
    match client.get(url).send().await {
        Ok(resp) => match resp.headers().get("x-app-name") {
            Some(name) if resp.status() == 200 => name.to_str().unwrap_or("?").to_owned(),
            _ => format!("{} {}", resp.status(), resp.text().await.unwrap_or_default()),
        },
        Err(e) => format!("error {e}"),
    }
}

impl Load {
    /// Starts `workers` loops; together they send at most `max` requests.
    pub fn start(client: &reqwest::Client, url: &str, workers: usize, max: usize) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(AtomicUsize::new(0));
        let tally = Arc::new(Mutex::new(HashMap::new()));
        let workers = (0..workers)
            .map(|_| {
                let (client, url) = (client.clone(), url.to_owned());
                let (stop, sent, tally) = (stop.clone(), sent.clone(), tally.clone());
                tokio::spawn(async move {
                    while !stop.load(Ordering::Relaxed) && sent.fetch_add(1, Ordering::Relaxed) < max {
                        let who = outcome(&client, &url).await;
                        *tally.lock().unwrap().entry(who).or_insert(0) += 1;
                    }
                })
            })
            .collect();
        Load { stop, tally, workers }
    }

    /// Requests answered so far.
    pub fn done(&self) -> usize {
        self.tally.lock().unwrap().values().sum()
    }

    /// Requests answered so far by `name`.
    pub fn by(&self, name: &str) -> usize {
        self.tally.lock().unwrap().get(name).copied().unwrap_or(0)
    }

    /// Waits until `more` requests beyond those answered now have been answered.
    pub async fn wait_for_more(&self, more: usize, what: &str) {
        let target = self.done() + more;
        super::eventually(std::time::Duration::from_secs(60), what, || async { self.done() >= target }).await;
    }

    /// Stops the workers and returns the tally.
    pub async fn stop(self) -> HashMap<String, usize> {
        self.stop.store(true, Ordering::Relaxed);
        for w in self.workers {
            w.await.unwrap();
        }
        Arc::try_unwrap(self.tally).unwrap().into_inner().unwrap()
    }

    /// The failures in a tally: every entry not answered by one of `names`.
    pub fn failures(tally: &HashMap<String, usize>, names: &[&str]) -> usize {
        tally.iter().filter(|(k, _)| !names.contains(&k.as_str())).map(|(_, v)| v).sum()
    }
}
