//! Parsing values that may carry a password without ever printing it.

/// A value parser that never echoes a URL's password. clap's own errors print the raw value,
/// and `--registry` and `--dependency` may carry `user:password@`.
#[derive(Debug)]
pub struct NoEcho<T>(std::marker::PhantomData<fn() -> T>);

impl<T> NoEcho<T> {
    pub fn new() -> Self {
        NoEcho(std::marker::PhantomData)
    }
}

impl<T> Default for NoEcho<T> {
    fn default() -> Self {
        NoEcho::new()
    }
}

impl<T> Clone for NoEcho<T> {
    fn clone(&self) -> Self {
        NoEcho::new()
    }
}

impl<T> clap::builder::TypedValueParser for NoEcho<T>
where
    T: std::str::FromStr + Clone + Send + Sync + 'static,
    T::Err: std::fmt::Display,
{
    type Value = T;

    fn parse_ref(
        &self,
        cmd: &clap::Command,
        arg: Option<&clap::Arg>,
        value: &std::ffi::OsStr,
    ) -> Result<T, clap::Error> {
        let raw = value.to_string_lossy();
        raw.parse().map_err(|e: T::Err| {
            let name = arg.map_or_else(|| "value".to_owned(), ToString::to_string);
            let message = format!("invalid value '{raw}' for '{name}': {e}\n");
            let message = match password_of(&raw) {
                Some(password) => message.replace(password, "***"),
                None => message,
            };
            clap::Error::raw(clap::error::ErrorKind::ValueValidation, message).with_cmd(cmd)
        })
    }
}

/// The password of `scheme://user:password@host…`, if it has one.
pub fn password_of(url: &str) -> Option<&str> {
    let rest = url.split_once("://")?.1;
    let authority = rest.split(['/', '?']).next()?;
    let userinfo = authority.rsplit_once('@')?.0;
    userinfo.split_once(':').map(|(_, p)| p).filter(|p| !p.is_empty())
}
