//! A passphrase typed at a client's terminal for one run, verify, restore or ls of an archive
//! encrypted with one (age's scrypt recipient). It travels only in that request and is never
//! printed: its `Debug` hides it, and no response or event carries it.

use serde::{Deserialize, Serialize};

#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Passphrase(String);

impl Passphrase {
    pub fn new(text: impl Into<String>) -> Self {
        Self(text.into())
    }

    /// The text, for the one place that derives a key from it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

impl std::fmt::Debug for Passphrase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Passphrase(…)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_and_errors_never_show_it() {
        let secret = Passphrase::new("correct horse");
        assert_eq!(format!("{secret:?}"), "Passphrase(…)");
        let json = serde_json::to_string(&secret).unwrap();
        assert_eq!(json, "\"correct horse\"");
        let back: Passphrase = serde_json::from_str(&json).unwrap();
        assert_eq!(back.expose(), "correct horse");
    }
}
