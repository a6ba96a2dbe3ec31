//! Bearer tokens: who may read and who may change.
//!
//! The token file has one token per line, `NAME ROLE TOKEN` separated by whitespace, ROLE
//! `write` or `read`; `#` starts a comment and blank lines are ignored. A presented token is
//! compared with every known token in constant time. Tokens are never logged or printed: a
//! caller is known by its NAME, which is what the history records as the author.

use std::fmt;
use std::path::{Path, PathBuf};

use axum::extract::FromRequestParts;
use http::header::AUTHORIZATION;
use http::request::Parts;
use subtle::ConstantTimeEq;

use crate::api::{ApiError, AppState};

/// The shortest token accepted, so a token cannot be guessed.
pub const MIN_TOKEN_LEN: usize = 16;

/// What a token may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Read services, policies, history and zombies.
    Read,
    /// Read, and change policies.
    Write,
}

/// Who is calling: the name of the token presented, and its role.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Caller {
    pub name: String,
    pub role: Role,
}

struct Token {
    caller: Caller,
    secret: Vec<u8>,
}

/// The known tokens.
pub struct Tokens(Vec<Token>);

impl fmt::Debug for Tokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.0.iter().map(|t| t.caller.name.as_str()).collect();
        f.debug_struct("Tokens").field("names", &names).finish_non_exhaustive()
    }
}

/// A token file that cannot be used: which file, which line, what is wrong.
#[derive(Debug, thiserror::Error)]
#[error("token file {}{}: {detail}", path.display(), line.map(|l| format!(", line {l}")).unwrap_or_default())]
pub struct TokenFileError {
    pub path: PathBuf,
    pub line: Option<usize>,
    pub detail: String,
}

impl Tokens {
    /// Reads and checks a token file.
    pub fn load(path: &Path) -> Result<Tokens, TokenFileError> {
        let err = |line, detail: String| TokenFileError { path: path.to_owned(), line, detail };
        let text = std::fs::read_to_string(path).map_err(|e| err(None, format!("cannot read it: {e}")))?;
        Tokens::parse(&text).map_err(|(line, detail)| err(line, detail))
    }

    /// Parses the token file format; an error gives the line (1-based) and what is wrong.
    pub fn parse(text: &str) -> Result<Tokens, (Option<usize>, String)> {
        let mut tokens: Vec<Token> = Vec::new();
        for (i, raw) in text.lines().enumerate() {
            let n = i + 1;
            let line = raw.split_once('#').map_or(raw, |(before, _)| before);
            let fields: Vec<&str> = line.split_whitespace().collect();
            let [name, role, secret] = match fields[..] {
                [] => continue,
                [a, b, c] => [a, b, c],
                _ => {
                    return Err((
                        Some(n),
                        format!("expected `NAME ROLE TOKEN`, found {} field(s)", fields.len()),
                    ));
                }
            };
            if !name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.@".contains(c)) {
                return Err((Some(n), format!("name `{name}` may contain only letters, digits, `-_.@`")));
            }
            let role = match role {
                "write" => Role::Write,
                "read" => Role::Read,
                other => return Err((Some(n), format!("role `{other}` is neither `write` nor `read`"))),
            };
            if secret.len() < MIN_TOKEN_LEN {
                return Err((
                    Some(n),
                    format!("the token of `{name}` is shorter than {MIN_TOKEN_LEN} characters"),
                ));
            }
            if tokens.iter().any(|t| t.caller.name == name) {
                return Err((Some(n), format!("name `{name}` is given twice")));
            }
            if tokens.iter().any(|t| bool::from(t.secret.ct_eq(secret.as_bytes()))) {
                return Err((Some(n), format!("the token of `{name}` is also another name's token")));
            }
            tokens.push(Token { caller: Caller { name: name.to_owned(), role }, secret: secret.into() });
        }
        if tokens.is_empty() {
            return Err((None, "has no tokens; add a line `NAME write TOKEN`".into()));
        }
        Ok(Tokens(tokens))
    }

    /// The caller a presented token belongs to. Every token is compared, in constant time.
    pub fn identify(&self, presented: &[u8]) -> Option<&Caller> {
        let mut found = None;
        for token in &self.0 {
            if bool::from(token.secret.ct_eq(presented)) {
                found = Some(&token.caller);
            }
        }
        found
    }

    /// The caller of a request, from its `Authorization: Bearer` header.
    pub fn authenticate(&self, parts: &Parts) -> Result<Caller, ApiError> {
        let header = parts
            .headers
            .get(AUTHORIZATION)
            .ok_or_else(|| ApiError::unauthorized("no token: send `Authorization: Bearer <token>`"))?;
        let presented = header
            .as_bytes()
            .strip_prefix(b"Bearer ")
            .or_else(|| header.as_bytes().strip_prefix(b"bearer "))
            .ok_or_else(|| ApiError::unauthorized("the Authorization header is not `Bearer <token>`"))?;
        self.identify(presented.trim_ascii()).cloned().ok_or_else(|| ApiError::unauthorized("unknown token"))
    }
}

/// A caller whose token may read (any known token). An extractor: a handler that takes it
/// answers 401 to requests without a known token.
#[derive(Debug)]
pub struct Reader(pub Caller);

/// A caller whose token may change policies. An extractor: 401 without a known token, 403 for
/// a read-only one.
#[derive(Debug)]
pub struct Writer(pub Caller);

impl FromRequestParts<AppState> for Reader {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        state.tokens.authenticate(parts).map(Reader).inspect_err(|e| state.metrics.auth_failure(e))
    }
}

impl FromRequestParts<AppState> for Writer {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let caller = Reader::from_request_parts(parts, state).await?.0;
        if caller.role != Role::Write {
            let e = ApiError::forbidden(format!(
                "token `{}` is read-only; changes need a write token",
                caller.name
            ));
            state.metrics.auth_failure(&e);
            return Err(e);
        }
        Ok(Writer(caller))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "# who  role  token\nci write 0123456789abcdef0123  # the release platform\n\n  ops read  fedcba9876543210fedc\n";

    #[test]
    fn parses_names_roles_and_comments() {
        let t = Tokens::parse(GOOD).unwrap();
        let ci = t.identify(b"0123456789abcdef0123").unwrap();
        assert_eq!((ci.name.as_str(), ci.role), ("ci", Role::Write));
        assert_eq!(t.identify(b"fedcba9876543210fedc").unwrap().role, Role::Read);
        assert!(t.identify(b"0123456789abcdef012").is_none());
        assert!(t.identify(b"").is_none());
        assert!(!format!("{t:?}").contains("0123456789"), "Debug must not show tokens");
    }

    #[test]
    fn bad_lines_name_their_line() {
        for (text, line, why) in [
            ("a write 0123456789abcdef\nb admin 0123456789abcdeX\n", Some(2), "neither `write` nor `read`"),
            ("a write\n", Some(1), "found 2 field(s)"),
            ("\n\na write short\n", Some(3), "shorter than 16"),
            ("a write 0123456789abcdef\na read 0123456789abcdeX\n", Some(2), "given twice"),
            ("a write 0123456789abcdef\nb read 0123456789abcdef\n", Some(2), "another name's token"),
            ("a/b write 0123456789abcdef\n", Some(1), "letters, digits"),
            ("# nothing\n", None, "no tokens"),
        ] {
            let (l, detail) = Tokens::parse(text).err().unwrap();
            assert_eq!(l, line, "{text:?}");
            assert!(detail.contains(why), "{text:?}: {detail}");
        }
    }

    #[test]
    fn file_errors_name_file_and_line_but_not_the_token() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens");
        std::fs::write(&path, "a write 0123456789abcdef\nb root 0123456789abcdeX\n").unwrap();
        let msg = Tokens::load(&path).unwrap_err().to_string();
        assert!(msg.contains(&path.display().to_string()) && msg.contains("line 2"), "{msg}");
        assert!(!msg.contains("0123456789"), "{msg}");
    }
}
