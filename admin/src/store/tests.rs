use std::collections::BTreeMap;

use berth_core::registry::RegistryUrl;

use super::*;

fn registry(dir: &tempfile::TempDir) -> Arc<dyn Registry> {
    let url: RegistryUrl = format!("dir://{}", dir.path().display()).parse().unwrap();
    berth_core::registry::open(&url).unwrap()
}

fn change(if_match: Option<u64>) -> Change<'static> {
    Change { service: "users", if_match, author: "ci", action: "set weights" }
}

fn weights(stable: u32, canary: u32) -> impl Fn(&Current) -> Result<Policy, ApiError> {
    move |c| {
        let mut p = c.editable()?;
        p.weights =
            BTreeMap::from([("stable".parse().unwrap(), stable), ("canary".parse().unwrap(), canary)]);
        Ok(p)
    }
}

#[tokio::test]
async fn two_replicas_racing_on_one_version_one_wins_by_the_conditional_write() {
    let dir = tempfile::tempdir().unwrap();
    // Two stores are two admin replicas: no lock in common, only the registry.
    let (a, b) = (Store::new(registry(&dir), Metrics::new()), Store::new(registry(&dir), Metrics::new()));
    a.change(change(None), weights(100, 0)).await.unwrap();
    for round in 0..20 {
        let v = a.read("users").await.unwrap().version;
        // Splits no round had before: a change that changes nothing would write nothing.
        let (x, y) = tokio::join!(
            a.change(change(Some(v)), weights(round + 1, 99 - round)),
            b.change(change(Some(v)), weights(round + 50, 50 - round))
        );
        let lost = match (x, y) {
            (Ok(_), Err(e)) | (Err(e), Ok(_)) => e,
            other => panic!("round {round}: not one winner: {other:?}"),
        };
        assert_eq!(lost.status, StatusCode::PRECONDITION_FAILED);
    }
    let history = a.history("users").await.unwrap();
    assert_eq!(history.entries.iter().map(|e| e.version).collect::<Vec<_>>(), (1..=21).collect::<Vec<_>>());
}

#[tokio::test]
async fn without_if_match_a_racing_change_is_applied_to_the_winners_version() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (Store::new(registry(&dir), Metrics::new()), Store::new(registry(&dir), Metrics::new()));
    let (x, y) =
        tokio::join!(a.change(change(None), weights(90, 10)), b.change(change(None), weights(80, 20)));
    let (x, y) = (x.unwrap(), y.unwrap());
    let mut versions = [x.policy.version, y.policy.version];
    versions.sort();
    assert_eq!(versions, [1, 2]);
    assert_eq!(a.read("users").await.unwrap().version, 2);
    assert_eq!(a.history("users").await.unwrap().entries.len(), 2);
}

#[tokio::test]
async fn an_unusable_stored_policy_is_409_for_edits_but_can_be_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let r = registry(&dir);
    r.publish_config("berth.traffic.users", r#"{"schema": 1, "version": 4, "weights": {"stable": 5}}"#, None)
        .await
        .unwrap();
    let store = Store::new(r.clone(), Metrics::new());
    let current = store.read("users").await.unwrap();
    assert_eq!((current.version, current.source), (4, Source::Registry));
    let err = store.change(change(None), weights(90, 10)).await.unwrap_err();
    assert_eq!(err.status, StatusCode::CONFLICT);
    assert!(
        err.detail.contains("sum to 100, not 5") && err.detail.contains("PUT a whole policy"),
        "{}",
        err.detail
    );
    let replaced = store.change(change(Some(4)), |_| Ok(Policy::default())).await.unwrap();
    assert_eq!(replaced.policy.version, 5);
    assert_eq!(store.read("users").await.unwrap().policy.unwrap(), replaced.policy);
}

#[tokio::test]
async fn an_invalid_change_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::new(registry(&dir), Metrics::new());
    let err = store.change(change(None), weights(50, 20)).await.unwrap_err();
    assert_eq!(err.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(err.problems[0].path, "weights");
    assert_eq!(store.read("users").await.unwrap().source, Source::Default);
    assert!(store.history("users").await.unwrap().entries.is_empty());
}

#[tokio::test]
async fn a_change_that_changes_nothing_writes_no_version() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::new(registry(&dir), Metrics::new());
    let none = store.change(change(None), |c| c.editable()).await.unwrap();
    assert!(!none.changed && none.policy.version == 0, "the default policy again: {none:?}");
    assert_eq!(store.read("users").await.unwrap().source, Source::Default, "nothing stored");
    let first = store.change(change(None), weights(90, 10)).await.unwrap();
    assert!(first.changed && first.policy.version == 1);
    let again = store.change(change(Some(1)), weights(90, 10)).await.unwrap();
    assert!(!again.changed, "{again:?}");
    assert_eq!((again.policy.version, again.summary.as_str()), (1, "set weights: no change"));
    assert_eq!(store.read("users").await.unwrap().version, 1);
    assert_eq!(store.history("users").await.unwrap().entries.len(), 1);
    let stale = store.change(change(Some(0)), weights(90, 10)).await.unwrap_err();
    assert_eq!(stale.status, StatusCode::PRECONDITION_FAILED, "If-Match is checked first");
}
