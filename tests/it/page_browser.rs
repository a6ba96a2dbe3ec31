//! A real headless Chromium driven through chromedriver's W3C WebDriver protocol: enough of
//! it to open a page, find elements, click, type, read text and properties, run a script in
//! the page and take a screenshot. chromedriver and the browser are killed when the test ends.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::Proc;

/// The key WebDriver sends for Enter.
pub const ENTER: &str = "\u{E007}";

/// `$VAR`, else the program on `PATH`, else a panic saying how to install it.
fn tool(var: &str, name: &str) -> PathBuf {
    if let Some(p) = std::env::var_os(var) {
        return p.into();
    }
    let found = Command::new("sh").args(["-c", &format!("command -v {name}")]).output().ok();
    match found.filter(|o| o.status.success()) {
        Some(o) => String::from_utf8_lossy(&o.stdout).trim().into(),
        None => {
            panic!("{name} is not installed: run scripts/test.sh, which installs chromium and chromedriver")
        }
    }
}

/// A browser session.
#[derive(Debug)]
pub struct Browser {
    base: String,
    http: reqwest::Client,
    _driver: Proc,
    _profile: tempfile::TempDir,
}

/// An element of the page.
#[derive(Debug, Clone)]
pub struct Element(String);

impl Browser {
    /// Starts chromedriver on a port it picks and a headless Chromium with a fresh profile.
    pub async fn start() -> Browser {
        let mut cmd = Command::new(tool("BERTH_CHROMEDRIVER", "chromedriver"));
        cmd.args(["--port=0", "--allowed-ips=127.0.0.1"]);
        let driver = Proc::spawn("chromedriver", cmd);
        let line = driver.wait_line("was started successfully on port ", Duration::from_secs(20)).await;
        let port: u16 = line.rsplit(' ').next().unwrap().trim_end_matches('.').parse().unwrap();
        let profile = tempfile::tempdir().unwrap();
        let mut options = json!({"args": [
            "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage",
            "--window-size=1366,1000", format!("--user-data-dir={}", profile.path().display()),
        ]});
        if let Some(binary) = std::env::var_os("BERTH_CHROMIUM") {
            options["binary"] = json!(binary.to_string_lossy());
        }
        let http = reqwest::Client::builder().no_proxy().timeout(Duration::from_secs(60)).build().unwrap();
        let base = format!("http://127.0.0.1:{port}");
        let caps = json!({"capabilities": {"alwaysMatch": {"browserName": "chrome", "goog:chromeOptions": options}}});
        let resp: Value =
            http.post(format!("{base}/session")).json(&caps).send().await.unwrap().json().await.unwrap();
        let id = resp["value"]["sessionId"].as_str().unwrap_or_else(|| panic!("no browser session: {resp}"));
        Browser { base: format!("{base}/session/{id}"), http, _driver: driver, _profile: profile }
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(b) = body {
            req = req.json(&b);
        }
        let v: Value = req.send().await.unwrap().json().await.unwrap();
        v["value"].clone()
    }

    async fn post(&self, path: &str, body: Value) -> Value {
        self.call(reqwest::Method::POST, path, Some(body)).await
    }

    pub async fn go(&self, url: &str) {
        self.post("/url", json!({"url": url})).await;
    }

    /// The first element `css` selects, if any.
    pub async fn find(&self, css: &str) -> Option<Element> {
        let v = self.post("/element", json!({"using": "css selector", "value": css})).await;
        v.as_object()?.values().next()?.as_str().map(|id| Element(id.to_owned()))
    }

    /// Waits up to 20 s for `css` to select an element.
    pub async fn wait(&self, css: &str) -> Element {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(e) = self.find(css).await {
                return e;
            }
            assert!(
                Instant::now() < deadline,
                "no `{css}` on the page within 20s:\n{}",
                self.text("body").await
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits up to 20 s until the text of `css` contains `needle`; returns the text.
    pub async fn wait_text(&self, css: &str, needle: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let text = self.text(css).await;
            if text.contains(needle) {
                return text;
            }
            assert!(Instant::now() < deadline, "`{css}` never said {needle:?}; it says {text:?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The visible text of the first element `css` selects ("" when none).
    pub async fn text(&self, css: &str) -> String {
        let Some(e) = self.find(css).await else { return String::new() };
        self.call(reqwest::Method::GET, &format!("/element/{}/text", e.0), None)
            .await
            .as_str()
            .unwrap_or("")
            .to_owned()
    }

    /// Clicks the element; again when the page replaced it between finding and clicking (it
    /// re-renders its cards on every refresh).
    pub async fn click(&self, css: &str) {
        for _ in 0..20 {
            let e = self.wait(css).await;
            let v = self.post(&format!("/element/{}/click", e.0), json!({})).await;
            match v["error"].as_str() {
                None => return,
                Some("stale element reference") => tokio::time::sleep(Duration::from_millis(50)).await,
                Some(other) => panic!("clicking `{css}`: {other}: {}", v["message"]),
            }
        }
        panic!("`{css}` kept being replaced before it could be clicked");
    }

    /// Replaces the value of a field by typing `text` into it.
    pub async fn type_into(&self, css: &str, text: &str) {
        let e = self.wait(css).await;
        for (what, body) in [("clear", json!({})), ("value", json!({"text": text}))] {
            let v = self.post(&format!("/element/{}/{what}", e.0), body).await;
            assert!(v["error"].is_null(), "typing into `{css}`: {v}");
        }
    }

    /// Whether the element is enabled, as the browser judges it (a disabled fieldset counts).
    pub async fn enabled(&self, css: &str) -> bool {
        let e = self.wait(css).await;
        self.call(reqwest::Method::GET, &format!("/element/{}/enabled", e.0), None).await == json!(true)
    }

    /// Runs `script` (a function body; `arguments` are `args`) in the page, awaiting a promise.
    pub async fn run(&self, script: &str, args: Value) -> Value {
        self.post("/execute/async", json!({"script": format!(
            "const done = arguments[arguments.length - 1]; Promise.resolve((async () => {{ {script} }})(...arguments)).then(done, (e) => done('error: ' + e));"
        ), "args": args})).await
    }

    /// Resizes the window.
    pub async fn window(&self, width: u32, height: u32) {
        self.post("/window/rect", json!({"width": width, "height": height})).await;
    }

    /// A PNG of the window.
    pub async fn screenshot(&self) -> Vec<u8> {
        use base64::Engine;
        let b64 = self.call(reqwest::Method::GET, "/screenshot", None).await;
        base64::engine::general_purpose::STANDARD.decode(b64.as_str().unwrap()).unwrap()
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // Ends the session (and the browser) politely; chromedriver is killed after it.
        let url = self.base.clone();
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async {
                let c =
                    reqwest::Client::builder().no_proxy().timeout(Duration::from_secs(5)).build().unwrap();
                let _ = c.delete(url).send().await;
            });
        })
        .join();
    }
}
