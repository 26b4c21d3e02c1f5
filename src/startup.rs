//! Why the gateway could not start, in the two kinds a service manager must tell apart.

/// A start-up failure. `fapigate run` exits 78 for the first kind (do not restart into it)
/// and 1 for the second (a restart may succeed).
#[derive(Debug)]
pub enum StartError {
    /// The configuration cannot run as written (a key, a certificate, an HSM login): what
    /// `fapigate check` reports too.
    Configuration(String),
    /// Something outside the file: a port in use, Redis down, an audit file another process
    /// holds.
    Unavailable(String),
}

impl From<String> for StartError {
    fn from(message: String) -> Self {
        StartError::Configuration(message)
    }
}

impl std::fmt::Display for StartError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StartError::Configuration(e) | StartError::Unavailable(e) => f.write_str(e),
        }
    }
}
