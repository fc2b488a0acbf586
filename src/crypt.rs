//! Encryption at rest with age: the recipients artifacts are sealed to, the identities that open
//! them, and the stream adapters in between. Knows nothing of runs, files on disk or settings.
//!
//! Sealed artifacts are standard age v1 files (X25519, ssh-ed25519 or ssh-rsa stanzas, 64 KiB
//! authenticated chunks), so `age -d -i key.txt FILE` opens them without stackback. The format
//! authenticates every chunk and the end of the stream: a flipped byte or a cut file fails while
//! reading, never later. A file can therefore be proven intact at two levels:
//! - stored: the ciphertext's size and SHA-256 match the record and its age header parses (what any
//!   host can check, without the identity);
//! - full: decrypted with the identity, decompressed, and its content checked (needs the key).

use std::io::{self, BufRead, BufReader, Read, Write};
use std::path::Path;

/// The suffix of a sealed file: `db_app_<id>.sql.gz.age`.
pub const SUFFIX: &str = ".age";

/// The public keys every new artifact is sealed to.
pub struct Recipients {
    keys: Vec<Box<dyn age::Recipient + Send + Sync>>,
}

impl std::fmt::Debug for Recipients {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Recipients({} keys)", self.keys.len())
    }
}

impl Recipients {
    /// Parses a comma list of recipients and the lines of an `age -R` recipients file (blank
    /// lines and `#` comments skipped). `None` when neither holds any recipient.
    ///
    /// # Errors
    /// The first malformed recipient, by its position (never its text, which may be long).
    pub fn parse(list: Option<&str>, file: Option<(&Path, &str)>) -> Result<Option<Self>, String> {
        let mut keys = Vec::new();
        for (i, item) in list.unwrap_or_default().split(',').enumerate() {
            let item = item.trim();
            if !item.is_empty() {
                keys.push(parse_recipient(item).map_err(|e| format!("recipient {}: {e}", i + 1))?);
            }
        }
        if let Some((path, text)) = file {
            for (n, line) in text.lines().enumerate() {
                let line = line.trim();
                if line.is_empty() || line.starts_with('#') {
                    continue;
                }
                keys.push(
                    parse_recipient(line)
                        .map_err(|e| format!("{} line {}: {e}", path.display(), n + 1))?,
                );
            }
        }
        Ok((!keys.is_empty()).then_some(Recipients { keys }))
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Starts sealing into `out`: writes the age header now, then encrypts what is written.
    pub fn seal<W: Write>(&self, out: W) -> io::Result<age::stream::StreamWriter<W>> {
        let enc = age::Encryptor::with_recipients(self.keys.iter().map(|k| k.as_ref() as _))
            .map_err(|e| io::Error::other(format!("cannot encrypt: {e}")))?;
        enc.wrap_output(out)
    }
}

impl Recipients {
    /// Like [`Recipients::seal`], with one more recipient: a key made now and returned, so this
    /// process can read back what it sealed (an archive's index, appended to the archive after it
    /// was written) without any plaintext on disk. The key lives in memory only.
    pub fn seal_with_scratch_key<W: Write>(
        &self,
        out: W,
    ) -> io::Result<(age::stream::StreamWriter<W>, Identities)> {
        let scratch = age::x25519::Identity::generate();
        let public = scratch.to_public();
        let all = self
            .keys
            .iter()
            .map(|k| k.as_ref() as &dyn age::Recipient)
            .chain(std::iter::once(&public as &dyn age::Recipient));
        let enc = age::Encryptor::with_recipients(all)
            .map_err(|e| io::Error::other(format!("cannot encrypt: {e}")))?;
        let ids = Identities {
            keys: vec![Box::new(scratch)],
        };
        Ok((enc.wrap_output(out)?, ids))
    }
}

fn parse_recipient(s: &str) -> Result<Box<dyn age::Recipient + Send + Sync>, String> {
    if s.starts_with("age1") {
        return s
            .parse::<age::x25519::Recipient>()
            .map(|r| Box::new(r) as _)
            .map_err(|e| format!("not a valid age public key ({e})"));
    }
    if s.starts_with("ssh-") {
        use age::ssh::ParseRecipientKeyError as P;
        return s
            .parse::<age::ssh::Recipient>()
            .map(|r| Box::new(r) as _)
            .map_err(|e| match e {
                P::Ignore | P::Unsupported(_) => {
                    "an ssh key type age cannot encrypt to (use ssh-ed25519 or ssh-rsa)".to_string()
                }
                P::Invalid(why) => format!("not a valid ssh public key ({why})"),
                P::RsaModulusTooLarge => "an ssh-rsa key larger than age supports".into(),
                P::RsaModulusTooSmall => "an ssh-rsa key under 2048 bits, too weak".into(),
                _ => "not a usable ssh public key".into(),
            });
    }
    Err(
        "expected an age public key (age1...) or an ssh public key (ssh-ed25519 ..., ssh-rsa ...)"
            .into(),
    )
}

/// The private keys that open sealed artifacts: an age identity file (`age-keygen`'s output,
/// several keys allowed) or an unencrypted OpenSSH private key.
pub struct Identities {
    keys: Vec<Box<dyn age::Identity + Send + Sync>>,
}

impl std::fmt::Debug for Identities {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Identities({} keys)", self.keys.len())
    }
}

impl Identities {
    /// Reads an identity file. The error never quotes the file's content.
    pub fn load(path: &Path) -> Result<Self, String> {
        let bytes =
            std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let text = String::from_utf8_lossy(&bytes);
        let keys: Vec<Box<dyn age::Identity + Send + Sync>> = if text.contains("-----BEGIN") {
            vec![ssh_identity(path, &bytes)?]
        } else {
            age::IdentityFile::from_buffer(&bytes[..])
                .and_then(|f| f.into_identities().map_err(io::Error::other))
                .map_err(|e| format!("{}: not an age identity file ({e})", path.display()))?
        };
        if keys.is_empty() {
            return Err(format!("{} holds no identity", path.display()));
        }
        Ok(Identities { keys })
    }

    fn iter(&self) -> impl Iterator<Item = &dyn age::Identity> {
        self.keys.iter().map(|k| k.as_ref() as &dyn age::Identity)
    }
}

fn ssh_identity(path: &Path, bytes: &[u8]) -> Result<Box<dyn age::Identity + Send + Sync>, String> {
    let id = age::ssh::Identity::from_buffer(bytes, Some(path.display().to_string()))
        .map_err(|e| format!("{}: not an ssh private key ({e})", path.display()))?;
    match id {
        age::ssh::Identity::Unencrypted(_) => Ok(Box::new(id)),
        // Nobody can type a passphrase for a nightly job: it would only ever "not match".
        age::ssh::Identity::Encrypted(_) => Err(format!(
            "{} is protected by a passphrase: use an age identity (age-keygen) or an unencrypted key",
            path.display()
        )),
        age::ssh::Identity::Unsupported(_) => Err(format!(
            "{}: an ssh key type age cannot decrypt with (use ed25519 or rsa)",
            path.display()
        )),
    }
}

/// Why a sealed stream could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum UnsealError {
    /// None of the identities was a recipient of this file: a settings problem, not damage.
    #[error("none of the identities in BACKUP_AGE_IDENTITY_FILE can open it (it was encrypted to other recipients)")]
    NoMatchingKey,
    /// The header is not an age header, or fails its MAC: the file is damaged or forged.
    #[error("the age header is damaged: {0}")]
    Corrupt(String),
    #[error("{0}")]
    Io(#[from] io::Error),
}

impl From<age::DecryptError> for UnsealError {
    fn from(e: age::DecryptError) -> Self {
        match e {
            age::DecryptError::NoMatchingKeys => UnsealError::NoMatchingKey,
            age::DecryptError::Io(io) => UnsealError::Io(io),
            other => UnsealError::Corrupt(other.to_string()),
        }
    }
}

/// Opens a sealed stream; payload damage then fails a later `read` with `InvalidData`.
pub fn unseal<R: Read>(
    input: R,
    ids: &Identities,
) -> Result<age::stream::StreamReader<BufReader<R>>, UnsealError> {
    let dec = age::Decryptor::new_buffered(BufReader::with_capacity(64 * 1024, input))?;
    Ok(dec.decrypt(ids.iter())?)
}

/// Checks that `input` starts with a well-formed age v1 header: the most anyone without the
/// identity can check beyond the ciphertext's checksum.
pub fn check_header<R: BufRead>(input: R) -> Result<(), UnsealError> {
    age::Decryptor::new_buffered(input)?;
    Ok(())
}

/// A writer that seals what passes through it, or passes it on unchanged.
pub enum SealWriter<W: Write> {
    Plain(W),
    Age(age::stream::StreamWriter<W>),
}

impl<W: Write> SealWriter<W> {
    pub fn new(out: W, recipients: Option<&Recipients>) -> io::Result<Self> {
        Ok(match recipients {
            Some(r) => SealWriter::Age(r.seal(out)?),
            None => SealWriter::Plain(out),
        })
    }

    /// Writes the last authenticated chunk (age's end-of-stream mark) and returns the inner writer.
    pub fn finish(self) -> io::Result<W> {
        match self {
            SealWriter::Plain(w) => Ok(w),
            SealWriter::Age(w) => w.finish(),
        }
    }
}

impl<W: Write> Write for SealWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            SealWriter::Plain(w) => w.write(buf),
            SealWriter::Age(w) => w.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            SealWriter::Plain(w) => w.flush(),
            SealWriter::Age(w) => w.flush(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keypair() -> (String, tempfile::NamedTempFile) {
        use age::secrecy::ExposeSecret;
        let id = age::x25519::Identity::generate();
        let mut f = tempfile::NamedTempFile::new().unwrap();
        writeln!(f, "# test key\n{}", id.to_string().expose_secret()).unwrap();
        (id.to_public().to_string(), f)
    }

    fn seal(r: &Recipients, data: &[u8]) -> Vec<u8> {
        let mut w = SealWriter::new(Vec::new(), Some(r)).unwrap();
        w.write_all(data).unwrap();
        w.finish().unwrap()
    }

    #[test]
    fn sealed_streams_open_with_the_identity_and_fail_on_damage() {
        let (public, file) = keypair();
        let r = Recipients::parse(Some(&format!(" {public} ,")), None)
            .unwrap()
            .unwrap();
        let ids = Identities::load(file.path()).unwrap();
        let data = vec![42u8; 200_000];
        let sealed = seal(&r, &data);
        let mut back = Vec::new();
        unseal(&sealed[..], &ids)
            .unwrap()
            .read_to_end(&mut back)
            .unwrap();
        assert_eq!(back, data);

        let mut flipped = sealed.clone();
        let n = flipped.len() / 2;
        flipped[n] ^= 1;
        let mut out = Vec::new();
        let err = unseal(&flipped[..], &ids)
            .unwrap()
            .read_to_end(&mut out)
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);

        let cut = &sealed[..sealed.len() - 10];
        assert!(unseal(cut, &ids)
            .unwrap()
            .read_to_end(&mut Vec::new())
            .is_err());
        assert!(matches!(
            unseal(&b"garbage\n"[..], &ids),
            Err(UnsealError::Corrupt(_))
        ));
        check_header(&sealed[..]).unwrap();
    }

    #[test]
    fn another_key_is_no_matching_key() {
        let other = age::x25519::Identity::generate().to_public().to_string();
        let r = Recipients::parse(Some(&other), None).unwrap().unwrap();
        let (_, file) = keypair();
        let ids = Identities::load(file.path()).unwrap();
        let sealed = seal(&r, b"x");
        assert!(matches!(
            unseal(&sealed[..], &ids),
            Err(UnsealError::NoMatchingKey)
        ));
    }

    #[test]
    fn malformed_recipients_are_named_by_position_and_line() {
        let e = Recipients::parse(Some("age1qqq"), None).unwrap_err();
        assert!(e.starts_with("recipient 1:"), "{e}");
        let e = Recipients::parse(None, Some((Path::new("r.txt"), "# c\n\nnope\n"))).unwrap_err();
        assert!(e.starts_with("r.txt line 3:"), "{e}");
        assert!(Recipients::parse(Some(" , "), None).unwrap().is_none());
        let ssh = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHsKLqeplhpW+uObz5dvMgjz1OxfM/XXUB+VHtZ6isGN alice@rust";
        assert_eq!(
            Recipients::parse(Some(ssh), None).unwrap().unwrap().len(),
            1
        );
    }
}
