//! One object's sums, as its index entry keeps them and as readers check them.

use super::IndexEntry;
use crate::pipeline::sha::Sha256;

/// Hashes one object's content the way its index entry can be checked: by BLAKE3 when the entry
/// keeps one, by SHA-256 when it does not (indexes written before the field), or by both when the
/// entry is not known yet (the writer; a check that meets the in-archive index only at the end).
pub struct ObjectHasher {
    sha256: Option<Sha256>,
    blake3: Option<Box<blake3::Hasher>>,
}

/// What an [`ObjectHasher`] computed; `None` where it was not asked to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectDigest {
    pub sha256: Option<String>,
    pub blake3: Option<String>,
}

/// One object's content differs from its index entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectMismatch {
    /// `"blake3"` or `"sha256"`: the sum that was compared.
    pub algorithm: &'static str,
    pub actual: String,
    pub recorded: String,
}

impl ObjectHasher {
    /// Both sums: for the writer, and for a reader that does not know the entry yet.
    pub fn both() -> Self {
        ObjectHasher {
            sha256: Some(Sha256::new()),
            blake3: Some(Box::default()),
        }
    }

    /// Only the sum `want` will be checked by.
    pub fn for_entry(want: &IndexEntry) -> Self {
        match want.blake3 {
            Some(_) => ObjectHasher {
                sha256: None,
                blake3: Some(Box::default()),
            },
            None => ObjectHasher {
                sha256: Some(Sha256::new()),
                blake3: None,
            },
        }
    }

    pub fn update(&mut self, data: &[u8]) {
        if let Some(h) = &mut self.sha256 {
            h.update(data);
        }
        if let Some(h) = &mut self.blake3 {
            h.update(data);
        }
    }

    pub fn finish(self) -> ObjectDigest {
        ObjectDigest {
            sha256: self.sha256.map(Sha256::finish_hex),
            blake3: self.blake3.map(|h| h.finalize().to_hex().to_string()),
        }
    }
}

impl ObjectDigest {
    /// Checks the content against `want`: by BLAKE3 when the entry keeps one, else by SHA-256.
    /// A sum the entry asks for and that was not computed is a mismatch, never a pass.
    pub fn check(&self, want: &IndexEntry) -> Result<(), ObjectMismatch> {
        let (algorithm, actual, recorded) = match &want.blake3 {
            Some(b) => ("blake3", self.blake3.as_deref(), b.as_str()),
            None => ("sha256", self.sha256.as_deref(), want.sha256.as_str()),
        };
        if actual == Some(recorded) {
            return Ok(());
        }
        Err(ObjectMismatch {
            algorithm,
            actual: actual.unwrap_or("not computed").to_string(),
            recorded: recorded.to_string(),
        })
    }
}

impl std::fmt::Display for ObjectMismatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {}, the index says {}",
            self.algorithm, self.actual, self.recorded
        )
    }
}
