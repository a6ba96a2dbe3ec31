use std::collections::HashMap;

use super::*;

struct Req(HashMap<&'static str, &'static str>, HashMap<&'static str, &'static str>);

impl RequestView for Req {
    fn header(&self, name: &str) -> Option<&str> {
        self.0.get(name).copied()
    }
    fn cookie(&self, name: &str) -> Option<&str> {
        self.1.get(name).copied()
    }
}

fn req(headers: &[(&'static str, &'static str)], cookies: &[(&'static str, &'static str)]) -> Req {
    Req(headers.iter().copied().collect(), cookies.iter().copied().collect())
}

const FULL: &str = r#"{
  "schema": 1, "version": 3, "default": "stable",
  "weights": {"stable": 90, "canary": 10},
  "sticky": {"header": "x-user"},
  "rules": [
    {"name": "beta", "match": [{"header": "X-Beta", "exact": "1"}], "symbol": "canary"},
    {"match": [{"cookie": "group", "prefix": "qa-"}, {"header": "x-env", "present": true}], "symbol": "feature-x"},
    {"match": [{"header": "x-tenant", "regex": "^(acme|globex)$"}], "symbol": "blue"}
  ],
  "overrides": {"10.0.0.7:15006": "canary"}
}"#;

#[test]
fn parses_and_round_trips() {
    let p = Policy::parse(FULL).unwrap();
    assert_eq!(p.policy.version, 3);
    let again = Policy::parse(&serde_json::to_string(&p.policy).unwrap()).unwrap();
    assert_eq!(again.policy, p.policy);
}

#[test]
fn rules_match_in_order() {
    let p = Policy::parse(FULL).unwrap();
    let sym = |r: &Req| p.rule_symbol(r).map(|s| s.to_string());
    assert_eq!(sym(&req(&[("x-beta", "1")], &[])).as_deref(), Some("canary"));
    assert_eq!(sym(&req(&[("x-beta", "2")], &[])), None);
    assert_eq!(sym(&req(&[("x-env", "")], &[("group", "qa-7")])).as_deref(), Some("feature-x"));
    assert_eq!(sym(&req(&[], &[("group", "qa-7")])), None, "all conditions must hold");
    assert_eq!(sym(&req(&[("x-tenant", "acme")], &[])).as_deref(), Some("blue"));
    assert_eq!(sym(&req(&[("x-tenant", "acmes")], &[])), None);
}

#[test]
fn present_false_means_absent() {
    let p = Policy::parse(
        r#"{"schema":1,"rules":[{"match":[{"header":"x-internal","present":false}],"symbol":"canary"}]}"#,
    )
    .unwrap();
    assert!(p.rule_symbol(&req(&[], &[])).is_some());
    assert!(p.rule_symbol(&req(&[("x-internal", "1")], &[])).is_none());
}

#[test]
fn weights_split_by_roll() {
    let p = Policy::parse(FULL).unwrap();
    let canary = (0..100).filter(|r| p.weighted_symbol(*r).as_str() == "canary").count();
    assert_eq!(canary, 10);
    let unweighted = Policy::parse(r#"{"schema":1,"default":"blue"}"#).unwrap();
    assert!(!unweighted.is_weighted());
    assert_eq!(unweighted.weighted_symbol(42).as_str(), "blue");
}

#[test]
fn overrides_by_address() {
    let p = Policy::parse(FULL).unwrap();
    assert_eq!(p.override_for("10.0.0.7:15006".parse().unwrap()).unwrap().as_str(), "canary");
    assert!(p.override_for("10.0.0.8:15006".parse().unwrap()).is_none());
}

#[test]
fn every_problem_is_reported_with_its_path() {
    let bad = r#"{
      "schema": 1,
      "weights": {"stable": 50, "canary": 20},
      "rules": [
        {"match": [], "symbol": "canary"},
        {"match": [{"header": "x", "cookie": "y", "exact": "1"}], "symbol": "canary"},
        {"match": [{"header": "x", "exact": "1", "prefix": "2"}], "symbol": "canary"},
        {"match": [{"header": "x", "regex": "("}], "symbol": "canary"},
        {"match": [{"header": "bad name", "exact": "1"}], "symbol": "canary"}
      ],
      "overrides": {"not-an-address": "canary"}
    }"#;
    let InvalidPolicy(problems) = Policy::parse(bad).unwrap_err();
    let paths: Vec<&str> = problems.iter().map(|p| p.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "weights",
            "rules[0].match",
            "rules[1].match[0]",
            "rules[2].match[0]",
            "rules[3].match[0]",
            "rules[4].match[0]",
            "overrides[\"not-an-address\"]"
        ]
    );
    assert!(problems[0].message.contains("sum to 100, not 70"));
    assert!(problems[4].message.contains("invalid regex"));
}

#[test]
fn shape_errors_are_rejected() {
    for bad in [
        "not json",
        r#"{"schema": 2}"#,
        r#"{"schema": 1, "weights": {"stable": -1}}"#,
        r#"{"schema": 1, "default": "Not A Symbol"}"#,
        r#"{"schema": 1, "colour": "red"}"#,
        r#"{"schema": 1, "rules": [{"match": [{"header": "x", "exact": "1", "kind": "x"}], "symbol": "c"}]}"#,
    ] {
        assert!(Policy::parse(bad).is_err(), "{bad}");
    }
}

#[test]
fn fallback_sends_everything_to_stable() {
    let p = CompiledPolicy::fallback();
    assert_eq!(p.weighted_symbol(99).as_str(), "stable");
    assert!(p.rule_symbol(&req(&[("x-beta", "1")], &[])).is_none());
}

#[test]
fn a_rule_is_for_this_hop_unless_it_says_lane() {
    let p = Policy::parse(
        r#"{"schema":1,"rules":[
          {"match":[{"header":"x-a","present":true}],"symbol":"canary","lane":true},
          {"match":[{"header":"x-b","present":true}],"symbol":"blue"}]}"#,
    )
    .unwrap();
    assert_eq!(
        p.matching_rule(&req(&[("x-a", "1")], &[])).map(|(s, l)| (s.as_str(), l)),
        Some(("canary", true))
    );
    assert_eq!(
        p.matching_rule(&req(&[("x-b", "1")], &[])).map(|(s, l)| (s.as_str(), l)),
        Some(("blue", false))
    );
    let written = serde_json::to_value(&p.policy).unwrap();
    assert_eq!(written["rules"][0]["lane"], true);
    assert!(written["rules"][1].get("lane").is_none(), "the default is not written");
    assert!(
        Policy::parse(
            r#"{"schema":1,"rules":[{"match":[{"header":"x","present":true}],"symbol":"a","lane":"yes"}]}"#
        )
        .is_err()
    );
}

#[test]
fn the_documented_example_parses_with_its_lane_rule() {
    let doc = include_str!("../../../docs/traffic-policy.md");
    let example = doc.split("```json\n").nth(1).and_then(|rest| rest.split("```").next()).unwrap();
    let p = Policy::parse(example).unwrap();
    assert_eq!(
        p.matching_rule(&req(&[("x-beta", "1")], &[])).map(|(s, l)| (s.as_str(), l)),
        Some(("canary", true))
    );
}

/// A request that counts how often each header and cookie is read.
struct Counting(Req, std::cell::RefCell<HashMap<String, usize>>);

impl RequestView for Counting {
    fn header(&self, name: &str) -> Option<&str> {
        *self.1.borrow_mut().entry(format!("h:{name}")).or_default() += 1;
        self.0.header(name)
    }
    fn cookie(&self, name: &str) -> Option<&str> {
        *self.1.borrow_mut().entry(format!("c:{name}")).or_default() += 1;
        self.0.cookie(name)
    }
}

#[test]
fn each_header_and_cookie_is_read_once_per_request_however_many_rules_name_it() {
    // 40 rules, none matching: exact, prefix and regex on one header, exact on one cookie;
    // the last rule matches on both.
    let mut rules: Vec<String> = (0..40)
        .map(|i| match i % 4 {
            0 => format!(r#"{{"match": [{{"header": "X-User", "exact": "u-{i}"}}], "symbol": "canary"}}"#),
            1 => format!(r#"{{"match": [{{"header": "x-user", "prefix": "p-{i}-"}}], "symbol": "canary"}}"#),
            2 => format!(r#"{{"match": [{{"cookie": "group", "exact": "g-{i}"}}], "symbol": "canary"}}"#),
            _ => format!(r#"{{"match": [{{"header": "x-user", "regex": "^t-{i}$"}}], "symbol": "canary"}}"#),
        })
        .collect();
    rules.push(r#"{"match": [{"header": "x-user", "exact": "me"}, {"cookie": "group", "exact": "qa"}], "symbol": "blue"}"#.into());
    let doc =
        format!(r#"{{"schema": 1, "version": 1, "default": "stable", "rules": [{}]}}"#, rules.join(","));
    let p = Policy::parse(&doc).unwrap();
    let r = Counting(req(&[("x-user", "me")], &[("group", "qa")]), Default::default());
    assert_eq!(p.rule_symbol(&r).map(Symbol::as_str), Some("blue"));
    let reads = r.1.into_inner();
    assert_eq!(reads, HashMap::from([("h:x-user".to_owned(), 1), ("c:group".to_owned(), 1)]));
    // And the answer is the one rule-by-rule reading gives: no match falls through.
    let other = Counting(req(&[("x-user", "u-4")], &[]), Default::default());
    assert_eq!(p.rule_symbol(&other).map(Symbol::as_str), Some("canary"));
    assert_eq!(p.rule_symbol(&req(&[("x-user", "nobody")], &[("group", "x")])), None);
}
