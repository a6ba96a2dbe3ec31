use berth_core::policy::Policy;

use super::*;

/// Headers as the route layer sees them, for rules too.
struct View<'a>(&'a HeaderMap);

impl RequestView for View<'_> {
    fn header(&self, name: &str) -> Option<&str> {
        self.0.get(name).and_then(|v| v.to_str().ok())
    }
    fn cookie(&self, _: &str) -> Option<&str> {
        None
    }
}

fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in pairs {
        h.append(*k, HeaderValue::from_str(v).unwrap());
    }
    h
}

fn sym(s: &str) -> Symbol {
    s.parse().unwrap()
}

fn lanes(own: Option<&str>) -> Lanes {
    Lanes::new(vec![HeaderName::from_static("x-mse-tag"), HeaderName::from_static("dubbo-tag")], own.map(sym))
}

/// What a request wants from a service with `policy`, as (symbol, source).
fn wanted(lanes: &Lanes, h: &HeaderMap, policy: &CompiledPolicy) -> Option<(String, Source)> {
    let carried = lanes.carried(h).unwrap();
    lanes.resolve(carried, policy, &View(h)).map(|w| (w.symbol.to_string(), w.source))
}

const RULES: &str = r#"{"schema":1,"rules":[
  {"match":[{"header":"x-beta","present":true}],"symbol":"canary","lane":true},
  {"match":[{"header":"x-debug","present":true}],"symbol":"debug"}]}"#;

#[test]
fn precedence_header_baggage_alias_then_rule_then_own() {
    let policy = Policy::parse(RULES).unwrap();
    let l = lanes(Some("feature-x"));
    let all = [
        ("x-berth-symbol", "a"),
        ("baggage", "k=v,berth.symbol=b"),
        ("dubbo-tag", "d"),
        ("x-mse-tag", "c"),
        ("x-beta", "1"),
    ];
    let want = |n: usize| wanted(&l, &headers(&all[n..]), &policy);
    assert_eq!(want(0), Some(("a".into(), Source::Header)));
    assert_eq!(want(1), Some(("b".into(), Source::Baggage)));
    assert_eq!(want(2), Some(("c".into(), Source::Alias)), "aliases in their configured order");
    assert_eq!(want(4), Some(("canary".into(), Source::Rule)));
    assert_eq!(
        wanted(&l, &headers(&[("x-debug", "1")]), &policy),
        Some(("debug".into(), Source::HopRule)),
        "a hop-only rule beats the own symbol and is no lane"
    );
    assert_eq!(wanted(&l, &HeaderMap::new(), &policy), Some(("feature-x".into(), Source::Own)));
}

#[test]
fn a_carried_lane_beats_the_path_prefix_which_beats_rules() {
    let policy = Policy::parse(RULES).unwrap();
    let l = lanes(None);
    let prefix = || Some(Wanted { symbol: sym("blue"), source: Source::Prefix });
    let h = headers(&[("x-beta", "1")]);
    let asked = l.carried(&h).unwrap().or_else(prefix);
    assert_eq!(l.resolve(asked, &policy, &View(&h)).unwrap().source, Source::Prefix);
    let h = headers(&[("baggage", "berth.symbol=green")]);
    let asked = l.carried(&h).unwrap().or_else(prefix);
    assert_eq!(l.resolve(asked, &policy, &View(&h)).unwrap().symbol.as_str(), "green");
}

#[test]
fn the_own_symbol_is_no_lane_when_it_is_stable_the_default_or_turned_off() {
    let none = CompiledPolicy::fallback();
    let promoted = Policy::parse(r#"{"schema":1,"default":"canary"}"#).unwrap();
    assert_eq!(wanted(&lanes(Some("canary")), &HeaderMap::new(), &none).unwrap().0, "canary");
    assert_eq!(wanted(&lanes(Some("canary")), &HeaderMap::new(), &promoted), None, "the callee's default");
    assert_eq!(wanted(&lanes(Some("stable")), &HeaderMap::new(), &promoted), None, "stable is no lane");
    assert_eq!(wanted(&lanes(None), &HeaderMap::new(), &none), None);
}

#[test]
fn bad_values_fail_only_in_x_berth_symbol() {
    let l = lanes(None);
    assert!(l.carried(&headers(&[("x-berth-symbol", "Not A Symbol")])).is_err());
    let h = headers(&[("baggage", "berth.symbol=Bad"), ("x-mse-tag", "BAD TAG"), ("dubbo-tag", " gray ")]);
    let got = l.carried(&h).unwrap().unwrap();
    assert_eq!((got.symbol.as_str(), got.source), ("gray", Source::Alias), "bad ones are skipped");
    assert_eq!(l.carried(&headers(&[("service-lane", "x")])).unwrap(), None, "not a configured alias");
}

#[test]
fn stamping_sets_header_and_baggage_and_keeps_the_rest() {
    let mut h = headers(&[("baggage", "userId=7;p,berth.symbol=old"), ("x-berth-symbol", "old")]);
    let l = lanes(None);
    l.stamp(&mut h, &sym("feature-x"));
    assert_eq!(h["x-berth-symbol"], "feature-x");
    assert_eq!(h["baggage"], "userId=7;p,berth.symbol=feature-x");
    // The cached values of one lane are not another's.
    for lane in ["feature-x", "canary", "feature-x", "blue"] {
        let mut h = HeaderMap::new();
        l.stamp(&mut h, &sym(lane));
        assert_eq!(
            (h["x-berth-symbol"].to_str().unwrap(), h["baggage"].to_str().unwrap()),
            (lane, format!("berth.symbol={lane}").as_str())
        );
    }
}

#[test]
fn the_app_gets_the_lane_in_both_forms_from_any_source() {
    let l = lanes(None);
    for (k, v) in
        [("x-berth-symbol", "feature-x"), ("baggage", "berth.symbol=feature-x"), ("dubbo-tag", "feature-x")]
    {
        let mut h = headers(&[(k, v)]);
        hand_to_app(&mut h, &l);
        assert_eq!(h["x-berth-symbol"], "feature-x", "from {k}");
        assert_eq!(baggage::find(&h, BAGGAGE_KEY).as_deref(), Some("feature-x"), "from {k}");
    }
    let mut h = headers(&[("x-berth-symbol", "Bad")]);
    hand_to_app(&mut h, &l);
    assert_eq!(h.len(), 1, "a bad pin passes as it came");
    let mut h = HeaderMap::new();
    hand_to_app(&mut h, &l);
    assert!(h.is_empty(), "no lane, nothing added");
}
