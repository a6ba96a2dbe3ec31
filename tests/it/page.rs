//! The page at `/` of `berth admin`, in a real headless Chromium: a read token from the URL
//! fragment shows the service, its symbols, instances and states with its controls disabled
//! (and the API refuses a write forged from the page); a write token typed into the form moves
//! the canary weight, meets a conflict, promotes and rolls back, each checked through the API.
//! `BERTH_PAGE_SCREENSHOT=FILE` saves a screenshot (the one in `docs/`).

use std::time::Duration;

use serde_json::{Value, json};

use crate::page_browser::{Browser, ENTER};
use crate::support::admin::{ALICE, Admin, BOB, VIEWER};
use crate::support::{App, Rnacos, Sidecar, eventually};

const T: Duration = Duration::from_secs(30);

async fn policy(admin: &Admin) -> Value {
    admin.get("/api/v1/services/users/policy", VIEWER).await.body
}

/// Requests from the consumer to users, every 20 ms while the test runs (at most 3 minutes).
fn traffic(consumer: &Sidecar) -> tokio::task::JoinHandle<()> {
    let client = consumer.outbound_client();
    tokio::spawn(async move {
        for _ in 0..9000 {
            let _ = client.get("http://users/").send().await;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
}

/// Every visible form field has a label; every button says what it does.
const LABELS: &str = "
    const unlabeled = [...document.querySelectorAll('input, select, textarea')]
        .filter((e) => e.offsetParent !== null && e.labels.length === 0 && !e.getAttribute('aria-label'))
        .map((e) => e.id || e.outerHTML);
    const mute = [...document.querySelectorAll('button')].filter((b) => !b.textContent.trim()).map((b) => b.outerHTML);
    return unlabeled.concat(mute);";

/// The lowest WCAG contrast ratio among text of these kinds on the page.
const CONTRAST: &str = "
    const lum = (c) => { const [r, g, b] = c.match(/[\\d.]+/g).slice(0, 3).map((v) => { v /= 255;
        return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4; }); return 0.2126 * r + 0.7152 * g + 0.0722 * b; };
    const bg = (e) => { for (; e; e = e.parentElement) { const c = getComputedStyle(e).backgroundColor;
        if (!c.startsWith('rgba(0, 0, 0, 0)') && c !== 'transparent') return c; } return 'rgb(255, 255, 255)'; };
    let worst = 21, where = '';
    for (const e of document.querySelectorAll('h1, h2, h3, p, td, th, label, button, .note, .state, .badge, legend, li')) {
        if (e.offsetParent === null || !e.textContent.trim()) continue;
        const a = lum(getComputedStyle(e).color), b = lum(bg(e));
        const ratio = (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05);
        if (ratio < worst) { worst = ratio; where = e.outerHTML.slice(0, 80); }
    }
    return [worst, where];";

#[tokio::test]
async fn the_page_shows_a_rollout_and_drives_it_with_the_right_token() {
    let nacos = Rnacos::start().await;
    let (users, web) = (App::start("users").await, App::start("web").await);
    let stable = Sidecar::start("users", users.addr.port(), &nacos.url(), &["--warmup", "1s"]).await;
    let canary = Sidecar::start(
        "users",
        users.addr.port(),
        &nacos.url(),
        &["--symbol", "canary", "--warmup", "90s", "--drain-min", "5s"],
    )
    .await;
    let consumer = Sidecar::start("web", web.addr.port(), &nacos.url(), &["--services", "users"]).await;
    for s in [&stable, &canary, &consumer] {
        s.wait_ready(T).await;
    }
    let load = traffic(&consumer);
    let admin = Admin::start(&nacos.url(), &["--scan-interval", "300ms"]).await;
    let browser = Browser::start().await;

    // A read token in the fragment: taken, kept in sessionStorage, gone from the address bar.
    browser.go(&admin.url(&format!("/#token={VIEWER}"))).await;
    browser.wait_text("#who-name", "viewer").await;
    let (href, kept) = {
        let v = browser
            .run("return [location.href, sessionStorage.getItem('berth.token'), document.cookie];", json!([]))
            .await;
        (v[0].as_str().unwrap().to_owned(), v[1].clone())
    };
    assert!(!href.contains(VIEWER) && !href.contains("token"), "{href}");
    assert_eq!(kept, json!(VIEWER));
    let stable_row = format!("[data-symbol=stable] tr[data-address='{}']", stable.inbound);
    let canary_row = format!("[data-symbol=canary] tr[data-address='{}']", canary.inbound);
    browser.wait_text(&stable_row, "serving").await;
    browser.wait_text(&canary_row, "warming").await;
    browser.wait_text("#policy-line", "applied by 1 of 1 consumer sidecars").await;
    browser.wait_text("[data-symbol=stable] .numbers", "success 100.0%").await;
    assert!(browser.text("#services").await.contains("users"));
    assert!(!browser.enabled("#apply-weights").await, "a read token's controls are disabled");
    assert!(!browser.enabled("#promote-canary").await);
    assert!(!browser.enabled("#rollback").await);
    assert!(browser.text("#read-only").await.contains("may only read"));
    // A write forged from the page with the read token: refused, nothing written.
    let forged = browser
        .run(
            "const r = await fetch('/api/v1/services/users/weights', {method: 'PUT', headers: {Authorization: 'Bearer ' + sessionStorage.getItem('berth.token'), 'Content-Type': 'application/json'}, body: '{\"canary\": 100}'}); return r.status;",
            json!([]),
        )
        .await;
    assert_eq!(forged, json!(403));
    assert_eq!(policy(&admin).await["version"], 0);
    assert_eq!(browser.run(LABELS, json!([])).await, json!([]), "fields without labels");
    let contrast = browser.run(CONTRAST, json!([])).await;
    assert!(contrast[0].as_f64().unwrap() >= 4.5, "text below WCAG AA contrast: {contrast}");

    // Sign out, and in with a write token typed into the form (Enter submits it).
    browser.click("#sign-out").await;
    browser.wait("#sign-in-form").await;
    browser.type_into("#token", &format!("{ALICE}{ENTER}")).await;
    browser.wait_text("#who-name", "alice").await;
    browser.wait(&canary_row).await;
    assert!(browser.enabled("#apply-weights").await);
    eventually(T, "the cards' buttons follow the write token", || async {
        browser.enabled("#promote-canary").await
    })
    .await;
    // Keyboard focus on a card's button survives the refresh that draws the cards anew.
    let marked = browser
        .run("document.getElementById('promote-canary').focus(); document.querySelector('[data-symbol=canary]').dataset.old = '1'; return document.activeElement.id;", json!([]))
        .await;
    assert_eq!(marked, json!("promote-canary"));
    eventually(T, "the cards are drawn anew", || async {
        browser.run("return !document.querySelector('[data-symbol=canary]').dataset.old;", json!([])).await
            == json!(true)
    })
    .await;
    assert_eq!(browser.run("return document.activeElement.id;", json!([])).await, json!("promote-canary"));

    // Move the canary weight.
    browser.type_into("#weight-stable", "80").await;
    browser.type_into("#weight-canary", "20").await;
    browser.click("#apply-weights").await;
    browser.wait_text("#status", "version 1 written").await;
    let p = policy(&admin).await;
    assert_eq!((p["version"].clone(), p["weights"].clone()), (json!(1), json!({"canary": 20, "stable": 80})));
    browser.wait_text("[data-symbol=canary] .share", "target 20.0%").await;

    // Another writer got in first while the page still showed version 1: the conflict shows.
    assert_eq!(
        admin.put("/api/v1/services/users/weights", BOB, json!({"stable": 70, "canary": 30})).await.status,
        200
    );
    // (In one script, so that no refresh of the page comes between.)
    let raced = browser
        .run(
            "state.view.version = 1; document.getElementById('promote-canary').click(); return 'clicked';",
            json!([]),
        )
        .await;
    assert_eq!(raced, json!("clicked"));
    browser.wait_text("#alert", "Conflict: the policy changed to version 2").await;
    assert_eq!(policy(&admin).await["default"], "stable", "the conflicting promote wrote nothing");

    // Promote, then roll back.
    browser.wait_text("#policy-line", "Policy version 2").await;
    browser.click("#promote-canary").await;
    browser.wait_text("#status", "version 3 written").await;
    let p = policy(&admin).await;
    assert_eq!((p["default"].clone(), p["weights"].clone()), (json!("canary"), json!({"canary": 100})));
    browser.wait_text("#policy-line", "Policy version 3").await;
    browser.click("#rollback").await;
    browser.wait_text("#status", "version 4 written").await;
    let p = policy(&admin).await;
    assert_eq!(
        (p["version"].clone(), p["default"].clone(), p["weights"].clone()),
        (json!(4), json!("stable"), json!({"canary": 30, "stable": 70}))
    );
    browser.wait_text("#history", "rollback to version 2").await;
    browser.wait_text("#events", "policy.changed").await;
    eventually(T, "the consumer routes by version 4", || async {
        browser.text("#policy-line").await.contains("applied by 1 of 1")
            && browser.text("#policy-line").await.contains("version 4")
    })
    .await;

    // Rules and an override through their forms.
    browser
        .type_into("#rules", r#"[{"match": [{"header": "x-beta", "present": true}], "symbol": "canary"}]"#)
        .await;
    browser.click("#apply-rules").await;
    browser.wait_text("#status", "version 5 written").await;
    assert_eq!(policy(&admin).await["rules"][0]["symbol"], "canary");
    browser.type_into("#override-symbol", "blue").await;
    browser.click("#apply-override").await;
    browser.wait_text("#status", "version 6 written").await;
    let first = browser.run("return document.getElementById('override-address').value;", json!([])).await;
    assert_eq!(policy(&admin).await["overrides"][first.as_str().unwrap()], "blue");
    browser.wait(&format!("[data-symbol=blue] tr[data-address='{}']", first.as_str().unwrap())).await;
    let undo = format!("/api/v1/services/users/symbols/{}", first.as_str().unwrap());
    assert_eq!(admin.put(&undo, ALICE, json!({"symbol": null})).await.status, 200);

    if let Some(path) = std::env::var_os("BERTH_PAGE_SCREENSHOT") {
        browser.window(1366, 1500).await;
        tokio::time::sleep(Duration::from_secs(3)).await;
        std::fs::write(path, browser.screenshot().await).unwrap();
    }
    // A drain shows: the canary leaves the registry and its row says so.
    let drain = crate::support::client().post(canary.admin_url("/drain")).send().await.unwrap();
    assert_eq!(drain.status(), 202);
    eventually(T, "the page shows the canary leaving", || async {
        let state = browser.text(&format!("{canary_row} .state")).await;
        state == "draining" || state == "deregistered"
    })
    .await;
    let png = browser.screenshot().await;
    assert!(png.starts_with(b"\x89PNG") && png.len() > 10_000, "a screenshot of the page");
    load.abort();
    for t in [ALICE, BOB, VIEWER] {
        assert!(!admin.proc.output().contains(t), "admin logged a token");
    }
}
