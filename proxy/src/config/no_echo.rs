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
            let message = berth_core::registry::without_password(
                &raw,
                &format!("invalid value '{raw}' for '{name}': {e}\n"),
            );
            clap::Error::raw(clap::error::ErrorKind::ValueValidation, message).with_cmd(cmd)
        })
    }
}

pub use berth_core::registry::password_of;
