//! The encryption section: the age recipients new artifacts are sealed to, and the identity file
//! that opens them (read only by the commands that decrypt).

use std::path::PathBuf;
use std::sync::Arc;

use super::settings::Key;
use super::Settings;
use crate::crypt::{Identities, Recipients};
use crate::error::Result;

/// What encryption the configuration asks for.
#[derive(Debug, Clone)]
pub struct EncryptionConfig {
    /// Set: every new artifact is sealed to these keys.
    pub recipients: Option<Arc<Recipients>>,
    /// Where the identity is, when this host may decrypt.
    pub identity_file: Option<PathBuf>,
}

impl EncryptionConfig {
    pub fn build(s: &Settings) -> Result<Self> {
        let file = s
            .get(Key::AgeRecipientsFile)
            .map(|p| PathBuf::from(p.trim()));
        let file_text = match &file {
            Some(p) => Some(std::fs::read_to_string(p).map_err(|e| {
                Key::AgeRecipientsFile.error(format!("cannot read {}: {e}", p.display()))
            })?),
            None => None,
        };
        let recipients = Recipients::parse(
            s.get(Key::AgeRecipients),
            file.as_deref().zip(file_text.as_deref()),
        )
        .map_err(|e| {
            let key = if e.starts_with("recipient ") {
                Key::AgeRecipients
            } else {
                Key::AgeRecipientsFile
            };
            key.error(e)
        })?;
        if recipients.is_none() && file.is_some() {
            return Err(Key::AgeRecipientsFile.error(
                "the file holds no recipient: add an age1... or ssh-ed25519 public key, or unset it",
            ));
        }
        Ok(EncryptionConfig {
            recipients: recipients.map(Arc::new),
            identity_file: s.get(Key::AgeIdentityFile).map(|p| PathBuf::from(p.trim())),
        })
    }
}

/// Loads the identity file, if one is configured.
pub(super) fn load_identities(s: &Settings) -> Result<Option<Arc<Identities>>> {
    let Some(path) = s.get(Key::AgeIdentityFile) else {
        return Ok(None);
    };
    Identities::load(std::path::Path::new(path.trim()))
        .map(|i| Some(Arc::new(i)))
        .map_err(|e| Key::AgeIdentityFile.error(e))
}
