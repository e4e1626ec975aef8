//! Config errors that name the key, its path and the reason, collected so a file reports every
//! problem at once instead of one per edit-run cycle.

use std::fmt;

/// One problem at one place in the config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// Where, in YAML path form: `routes[2].prefx`. Empty for whole-file problems.
    pub path: String,
    pub message: String,
    /// Where the key is in the file, when it is there (not set by an environment variable).
    pub at: Option<Location>,
}

/// A position in the config file, written as editors and compilers write it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    pub file: Option<String>,
    pub line: usize,
    pub column: usize,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.file {
            Some(file) => write!(f, "{file}:{}:{}", self.line, self.column),
            None => write!(f, "line {}, column {}", self.line, self.column),
        }
    }
}

impl ConfigError {
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            message: message.into(),
            at: None,
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(at) = &self.at {
            write!(f, "{at}: ")?;
        }
        if self.path.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

/// Every problem found in one config, in file order.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl ConfigErrors {
    /// Puts each error's position in `text` on it and lists them in file order (those with no
    /// place in the file first).
    pub fn locate(mut self, text: &str, file: Option<&std::path::Path>) -> ConfigErrors {
        let positions = super::locate::Positions::of(text);
        for e in &mut self.0 {
            if e.path.is_empty() || e.path.starts_with('$') {
                continue;
            }
            e.at = positions.find(&e.path).map(|(line, column)| Location {
                file: file.map(|f| f.display().to_string()),
                line,
                column,
            });
        }
        self.0
            .sort_by_key(|e| e.at.as_ref().map(|a| (a.line, a.column)));
        self
    }
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.0.len();
        writeln!(f, "{n} error{} in config:", if n == 1 { "" } else { "s" })?;
        for e in &self.0 {
            writeln!(f, "  - {e}")?;
        }
        Ok(())
    }
}

/// Accumulates errors under a path prefix while a config is checked, and the warnings met on
/// the way (things worth saying that do not stop the config from loading).
#[derive(Debug, Default)]
pub struct Errors {
    list: Vec<ConfigError>,
    warnings: Vec<String>,
    /// Problems of the sign-in settings: errors once a route needs a signed-in user, warnings
    /// while none does (Pomerium starts without a usable IdP until someone signs in).
    sign_in: Vec<ConfigError>,
}

impl Errors {
    /// Holds `other`'s errors until [`Errors::settle_sign_in`] knows whether sign-in is needed.
    pub fn defer_for_sign_in(&mut self, other: Errors) {
        self.sign_in.extend(other.list);
        self.warnings.extend(other.warnings);
    }

    /// Held sign-in problems become errors when some route needs a signed-in user, else
    /// warnings.
    pub fn settle_sign_in(&mut self, needed: bool) {
        let held = std::mem::take(&mut self.sign_in);
        if needed {
            self.list.extend(held);
        } else {
            self.warnings.extend(
                held.into_iter()
                    .map(|e| format!("{e} (sign-in is off: no route needs a signed-in user)")),
            );
        }
    }

    pub fn warn(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.warnings
            .push(ConfigError::new(path, message).to_string());
    }

    /// The warnings so far, taken out.
    pub fn take_warnings(&mut self) -> Vec<String> {
        std::mem::take(&mut self.warnings)
    }

    pub fn push(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.list.push(ConfigError::new(path, message));
    }

    pub fn extend(&mut self, other: Errors) {
        self.list.extend(other.list);
        self.warnings.extend(other.warnings);
        self.sign_in.extend(other.sign_in);
    }

    pub fn paths(&self) -> impl Iterator<Item = &str> {
        self.list.iter().map(|e| e.path.as_str())
    }

    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    pub fn into_result<T>(self, value: T) -> Result<T, ConfigErrors> {
        if self.list.is_empty() {
            Ok(value)
        } else {
            Err(ConfigErrors(self.list))
        }
    }

    pub fn into_errors(self) -> ConfigErrors {
        ConfigErrors(self.list)
    }

    /// Runs a fallible step, recording its error and yielding `None` so checking can go on.
    pub fn check<T>(&mut self, path: impl Into<String>, r: Result<T, String>) -> Option<T> {
        match r {
            Ok(v) => Some(v),
            Err(e) => {
                self.push(path, e);
                None
            }
        }
    }
}
