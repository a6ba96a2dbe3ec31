//! Policies through the API: what is written is what `Policy::parse` accepts and what Nacos
//! holds; versions and `If-Match`; invalid changes; promote, rollback and the history.

use berth_core::policy::Policy;
use reqwest::Method;
use serde_json::{Value, json};

use crate::support::Rnacos;
use crate::support::admin::{ALICE, Admin, Answer, BOB, VIEWER};

const POLICY: &str = "/api/v1/services/users/policy";
const DATA_ID: &str = "berth.traffic.users";

/// The policy as Nacos's HTTP API holds it, parsed by the sidecars' validator.
async fn in_nacos(nacos: &Rnacos) -> Policy {
    let text = nacos.config(DATA_ID).await.expect("a policy in Nacos");
    Policy::parse(&text).expect("what admin writes, the sidecars accept").policy
}

fn policy_of(a: &Answer) -> Policy {
    serde_json::from_value(a.body["policy"].clone()).unwrap()
}

async fn history(admin: &Admin) -> Vec<Value> {
    admin.get("/api/v1/services/users/history", VIEWER).await.body["entries"].as_array().unwrap().clone()
}

#[tokio::test]
async fn written_policies_are_what_nacos_holds_and_the_validator_accepts() {
    let nacos = Rnacos::start().await;
    let admin = Admin::start(&nacos.url(), &[]).await;

    let none = admin.get(POLICY, VIEWER).await;
    assert_eq!((none.status, none.etag()), (200, 0));
    assert_eq!(none.headers["x-berth-policy-source"], "default", "says it is the default");
    assert_eq!(serde_json::from_value::<Policy>(none.body).unwrap(), Policy::default());

    let full = json!({
        "schema": 1, "default": "stable", "strict": true,
        "weights": {"stable": 90, "canary": 10}, "sticky": {"cookie": "session"},
        "rules": [{"name": "beta", "match": [{"header": "x-beta", "exact": "1"}], "symbol": "canary"},
                  {"match": [{"cookie": "group", "prefix": "qa-"}, {"header": "x-env", "present": true}], "symbol": "canary"}],
        "overrides": {"127.0.0.1:15006": "canary"}
    });
    let first = admin.call(Method::PUT, POLICY, Some(ALICE), Some(full.clone()), Some("\"0\"")).await;
    assert_eq!((first.status, first.etag()), (200, 1), "{first:?}");
    let stored = in_nacos(&nacos).await;
    assert_eq!(stored, policy_of(&first));
    let mut expected: Policy = serde_json::from_value(full).unwrap();
    expected.version = 1;
    assert_eq!(stored, expected);

    let read = admin.get(POLICY, VIEWER).await;
    assert_eq!(
        (read.etag(), &read.headers["x-berth-policy-source"]),
        (1, &"registry".parse::<reqwest::header::HeaderValue>().unwrap())
    );
    assert_eq!(serde_json::from_value::<Policy>(read.body).unwrap(), stored);

    // Without If-Match the change applies to the latest version; with a stale one, 412.
    let second = admin.put("/api/v1/services/users/weights", BOB, json!({"stable": 50, "canary": 50})).await;
    assert_eq!((second.status, second.etag()), (200, 2));
    assert_eq!(in_nacos(&nacos).await.weights.values().copied().collect::<Vec<_>>(), [50, 50]);
    let stale = admin.call(Method::PUT, POLICY, Some(ALICE), Some(json!({"schema": 1})), Some("\"1\"")).await;
    assert_eq!((stale.status, stale.body["current_version"].as_u64()), (412, Some(2)), "{stale:?}");
    assert_eq!(in_nacos(&nacos).await.version, 2);
    let bad = admin.call(Method::PUT, POLICY, Some(ALICE), Some(json!({"schema": 1})), Some("two")).await;
    assert_eq!(bad.status, 400);
}

#[tokio::test]
async fn invalid_changes_are_422_and_nothing_is_written() {
    let nacos = Rnacos::start().await;
    let admin = Admin::start(&nacos.url(), &[]).await;
    let ok = admin.put("/api/v1/services/users/weights", ALICE, json!({"stable": 100})).await;
    assert_eq!(ok.status, 200);
    let before = nacos.config(DATA_ID).await.unwrap();
    let s = "/api/v1/services/users";
    let cases: Vec<(Method, String, Value, &str)> = vec![
        (Method::PUT, format!("{s}/weights"), json!({"stable": 90}), "sum to 100, not 90"),
        (Method::PUT, format!("{s}/weights"), json!({"stable": 110, "canary": -10}), "invalid"),
        (Method::PUT, format!("{s}/weights"), json!({"Canary": 100}), "lower-case"),
        (
            Method::PUT,
            format!("{s}/rules"),
            json!([{"match": [{"header": "x", "suffix": "1"}], "symbol": "canary"}]),
            "suffix",
        ),
        (
            Method::PUT,
            format!("{s}/rules"),
            json!([{"match": [{"header": "x", "regex": "("}], "symbol": "canary"}]),
            "invalid regex",
        ),
        (
            Method::PUT,
            format!("{s}/rules"),
            json!([{"match": [], "symbol": "canary"}]),
            "at least one condition",
        ),
        (Method::PUT, format!("{s}/symbols/not-an-address"), json!({"symbol": "canary"}), "ip:port"),
        (Method::PUT, format!("{s}/symbols/10.0.0.1:80"), json!({"symbol": "Bad Symbol"}), "lower-case"),
        (Method::PUT, format!("{s}/policy"), json!({"schema": 1, "colour": "red"}), "colour"),
        (Method::PUT, format!("{s}/policy"), json!({"schema": 2}), "unsupported schema"),
        (Method::POST, format!("{s}/promote"), json!({"symbol": ""}), "empty"),
    ];
    for (method, path, body, why) in cases {
        let a = admin.call(method.clone(), &path, Some(ALICE), Some(body.clone()), None).await;
        assert_eq!(a.status, 422, "{method} {path} {body}: {a:?}");
        assert!(a.body["detail"].as_str().unwrap().contains(why), "{method} {path} {body}: {a:?}");
    }
    let not_json = admin
        .call(Method::PUT, &format!("{s}/weights"), Some(ALICE), Some(Value::String("{".into())), None)
        .await;
    assert_eq!(not_json.status, 422, "a JSON string is JSON, of the wrong shape");
    let raw = crate::support::client()
        .put(admin.url(&format!("{s}/weights")))
        .bearer_auth(ALICE)
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(raw.status(), 400);
    assert_eq!(nacos.config(DATA_ID).await.unwrap(), before, "nothing was written");
    assert_eq!(history(&admin).await.len(), 1, "nothing was recorded");
    let regex = admin
        .put(&format!("{s}/rules"), ALICE, json!([{"match": [{"header": "x", "regex": "("}], "symbol": "c"}]))
        .await;
    assert_eq!(regex.body["problems"][0]["path"], "rules[0].match[0]", "{regex:?}");
    let bad_name = admin.get("/api/v1/services/bad%2Fname/policy", VIEWER).await;
    assert_eq!(bad_name.status, 400, "{bad_name:?}");
}

#[tokio::test]
async fn of_two_concurrent_puts_on_one_version_exactly_one_wins() {
    let nacos = Rnacos::start().await;
    let admin = Admin::start(&nacos.url(), &[]).await;
    let mut version = admin.put("/api/v1/services/users/weights", ALICE, json!({"stable": 100})).await.etag();
    for round in 0..5 {
        let if_match = format!("\"{version}\"");
        let put = |token, weights: Value| {
            admin.call(
                Method::PUT,
                "/api/v1/services/users/weights",
                Some(token),
                Some(weights),
                Some(&if_match),
            )
        };
        // Splits no round had before: a change that changes nothing would write nothing.
        let (a, b) = tokio::join!(
            put(ALICE, json!({"stable": 90 - round, "canary": 10 + round})),
            put(BOB, json!({"stable": 60 - round, "canary": 40 + round}))
        );
        let mut statuses = [a.status, b.status];
        statuses.sort();
        assert_eq!(statuses, [200, 412], "round {round}: {a:?} {b:?}");
        let winner = if a.status == 200 { &a } else { &b };
        version = winner.etag();
        assert_eq!(
            in_nacos(&nacos).await,
            policy_of(winner),
            "round {round}: Nacos holds the winner's policy"
        );
    }
    assert_eq!(history(&admin).await.len(), 6, "one entry per written version");
}

#[tokio::test]
async fn promote_then_rollback_restores_the_exact_previous_policy_and_history_records_all() {
    let nacos = Rnacos::start().await;
    let admin = Admin::start(&nacos.url(), &[]).await;
    let s = "/api/v1/services/users";
    let none = admin.post(&format!("{s}/rollback"), ALICE, json!({})).await;
    assert_eq!(none.status, 409, "nothing to roll back: {none:?}");

    assert_eq!(
        admin.put(&format!("{s}/weights"), ALICE, json!({"stable": 90, "canary": 10})).await.status,
        200
    );
    let rules = json!([{"name": "beta", "match": [{"header": "x-beta", "exact": "1"}], "symbol": "canary"}]);
    assert_eq!(admin.put(&format!("{s}/rules"), BOB, rules).await.status, 200);
    let set = admin.put(&format!("{s}/symbols/127.0.0.1:15006"), ALICE, json!({"symbol": "canary"})).await;
    assert_eq!(set.status, 200);
    let before = in_nacos(&nacos).await;
    assert_eq!(before.version, 3);

    let promoted = admin.post(&format!("{s}/promote"), BOB, json!({"symbol": "canary"})).await;
    assert_eq!((promoted.status, promoted.etag()), (200, 4), "{promoted:?}");
    let p = in_nacos(&nacos).await;
    assert_eq!(p.default.as_str(), "canary");
    assert_eq!(
        p.weights.iter().map(|(s, w)| (s.to_string(), *w)).collect::<Vec<_>>(),
        [("canary".into(), 100)]
    );
    assert_eq!(p.rules, before.rules, "promote leaves the rules");
    assert!(promoted.body["warning"].as_str().unwrap().contains("no registered instance"), "{promoted:?}");

    let back = admin.post(&format!("{s}/rollback"), ALICE, json!({})).await;
    assert_eq!((back.status, back.etag()), (200, 5), "{back:?}");
    let mut restored = in_nacos(&nacos).await;
    assert_eq!(restored.version, 5, "a rollback is a new version");
    restored.version = before.version;
    assert_eq!(restored, before, "equal to the version before the promotion, except `version`");

    let removed = admin.put(&format!("{s}/symbols/127.0.0.1:15006"), BOB, json!({"symbol": null})).await;
    assert!(in_nacos(&nacos).await.overrides.is_empty(), "{removed:?}");
    let to_one = admin.post(&format!("{s}/rollback"), BOB, json!({"version": 1})).await;
    assert_eq!(to_one.status, 200);
    let one = in_nacos(&nacos).await;
    assert!(one.rules.is_empty() && one.weights.len() == 2, "{one:?}");
    let gone = admin.post(&format!("{s}/rollback"), BOB, json!({"version": 99})).await;
    assert_eq!(gone.status, 409, "{gone:?}");

    let entries = history(&admin).await;
    let got: Vec<(u64, &str)> =
        entries.iter().map(|e| (e["version"].as_u64().unwrap(), e["author"].as_str().unwrap())).collect();
    assert_eq!(
        got,
        [(7, "bob"), (6, "bob"), (5, "alice"), (4, "bob"), (3, "alice"), (2, "bob"), (1, "alice")]
    );
    let summary = |v: usize| entries[entries.len() - v]["summary"].as_str().unwrap().to_owned();
    assert!(summary(1).contains("weights none → canary=10 stable=90"), "{}", summary(1));
    assert!(summary(4).starts_with("promote canary: default stable → canary"), "{}", summary(4));
    assert!(summary(5).starts_with("rollback to version 3"), "{}", summary(5));
    assert!(summary(6).contains("override 127.0.0.1:15006 removed"), "{}", summary(6));
    assert_eq!(serde_json::from_value::<Policy>(entries[0]["policy"].clone()).unwrap().version, 7);
    assert!(entries.iter().all(|e| e["at"].as_str().unwrap().ends_with('Z')), "RFC 3339 times");
    let raw = nacos.config("berth.history.users").await.expect("the history is a config document in BERTH");
    assert_eq!(serde_json::from_str::<Value>(&raw).unwrap()["entries"].as_array().unwrap().len(), 7);
    let mut first: Policy = serde_json::from_value(entries[6]["policy"].clone()).unwrap();
    first.version = one.version;
    assert_eq!(first, one, "rollback to version 1 writes version 1's policy");
}
