//! Checks of tar archives (bucket and volume artifacts) during verification.

use std::io::Read;

use crate::catalog::ArtifactKind;

/// Reads every entry of a tar stream to its end; a truncated or corrupt archive fails.
pub fn check_archive(_kind: ArtifactKind, r: &mut dyn Read) -> Result<String, String> {
    let mut archive = tar::Archive::new(r);
    let mut entries = 0u64;
    let mut bytes = 0u64;
    for entry in archive
        .entries()
        .map_err(|e| format!("not a tar archive: {e}"))?
    {
        let mut entry = entry.map_err(|e| format!("tar entry {} unreadable: {e}", entries + 1))?;
        bytes += std::io::copy(&mut entry, &mut std::io::sink())
            .map_err(|e| format!("tar entry {} unreadable: {e}", entries + 1))?;
        entries += 1;
    }
    Ok(format!("{entries} tar entries, {bytes} bytes of content"))
}
