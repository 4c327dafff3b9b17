//! The configured apps, checked once at build.

use std::collections::HashMap;

use omnigate_config::{App, ExposeSecret, SecretString};
use subtle::ConstantTimeEq;

use super::identity::{IdentityVerifier, KeyError};

/// One configured app.
#[derive(Debug, Clone)]
pub struct AppEntry {
    key: SecretString,
    /// Queue of its new conversations, if it names one.
    pub queue: Option<String>,
    /// Its identity token verifier.
    pub verifier: IdentityVerifier,
}

/// Every configured app by `app_id`.
#[derive(Debug, Clone, Default)]
pub struct AppRegistry {
    apps: HashMap<String, AppEntry>,
}

impl AppRegistry {
    /// Builds from `[[channels.app]]`.
    ///
    /// # Errors
    /// [`KeyError`] when an app's RS256 key is not an RSA public key.
    pub fn from_config(apps: &[App]) -> Result<AppRegistry, KeyError> {
        let apps = apps
            .iter()
            .map(|app| {
                let entry = AppEntry {
                    key: app.app_key.clone(),
                    queue: (!app.queue.is_empty()).then(|| app.queue.clone()),
                    verifier: IdentityVerifier::from_config(app)?,
                };
                Ok((app.app_id.clone(), entry))
            })
            .collect::<Result<_, KeyError>>()?;
        Ok(AppRegistry { apps })
    }

    /// The app with this id, if `key` is its credential (compared in constant time). Unknown app and wrong
    /// key are not told apart.
    pub fn authenticate(&self, app_id: &str, key: &str) -> Option<&AppEntry> {
        let entry = self.apps.get(app_id)?;
        let expected = entry.key.expose_secret().as_bytes();
        bool::from(expected.ct_eq(key.as_bytes())).then_some(entry)
    }

    /// The app with this id.
    pub fn get(&self, app_id: &str) -> Option<&AppEntry> {
        self.apps.get(app_id)
    }

    /// Whether any app is configured.
    pub fn is_empty(&self) -> bool {
        self.apps.is_empty()
    }
}
