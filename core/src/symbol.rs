//! Symbols: the deployment an instance belongs to.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A deployment qualifier such as `stable`, `canary`, `feature-x`, `blue`.
///
/// Lower-case letters, digits, `-`, `_` and `.`; it starts with a letter or digit and is at
/// most 63 characters, so it fits a Kubernetes label value and a Nacos metadata value.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Symbol(Arc<str>);

impl Symbol {
    /// The symbol an instance has when none is given.
    pub const DEFAULT: &'static str = "stable";

    /// The symbol's name.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// `stable` (one shared allocation: the default symbol is on every request's path).
    pub fn stable() -> Self {
        static STABLE: std::sync::LazyLock<Symbol> =
            std::sync::LazyLock::new(|| Symbol(Arc::from(Symbol::DEFAULT)));
        STABLE.clone()
    }
}

impl Default for Symbol {
    fn default() -> Self {
        Self::stable()
    }
}

/// Why a string is not a valid symbol.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum InvalidSymbol {
    #[error("a symbol cannot be empty")]
    Empty,
    #[error("symbol `{0}` is longer than 63 characters")]
    TooLong(String),
    #[error(
        "symbol `{0}` may contain only lower-case letters, digits, `-`, `_` and `.`, and must start with a letter or digit"
    )]
    BadCharacter(String),
}

impl FromStr for Symbol {
    type Err = InvalidSymbol;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s == Self::DEFAULT {
            return Ok(Self::stable());
        }
        let first_ok = s.chars().next().ok_or(InvalidSymbol::Empty)?.is_ascii_alphanumeric();
        if s.len() > 63 {
            return Err(InvalidSymbol::TooLong(s.to_owned()));
        }
        let rest_ok =
            s.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '_' | '.'));
        if !first_ok || !rest_ok {
            return Err(InvalidSymbol::BadCharacter(s.to_owned()));
        }
        Ok(Symbol(Arc::from(s)))
    }
}

impl fmt::Display for Symbol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Symbol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl Serialize for Symbol {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Symbol {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_deployment_names() {
        for s in ["stable", "canary", "feature-x", "v2.1", "blue_green", "0day"] {
            assert_eq!(s.parse::<Symbol>().unwrap().as_str(), s);
        }
    }

    #[test]
    fn rejects_what_cannot_be_a_label() {
        assert_eq!("".parse::<Symbol>(), Err(InvalidSymbol::Empty));
        for s in ["Canary", "-x", "a b", "a/b", "é"] {
            assert!(matches!(s.parse::<Symbol>(), Err(InvalidSymbol::BadCharacter(_))), "{s}");
        }
        assert!(matches!("a".repeat(64).parse::<Symbol>(), Err(InvalidSymbol::TooLong(_))));
    }

    #[test]
    fn serde_validates() {
        assert!(serde_json::from_str::<Symbol>("\"Bad\"").is_err());
        let s: Symbol = serde_json::from_str("\"canary\"").unwrap();
        assert_eq!(serde_json::to_string(&s).unwrap(), "\"canary\"");
    }
}
