//! The age layer, outermost of the codec layers: tar → compress → age → hash → file.
//!
//! Archives are encrypted to X25519 recipients (`age1…` public keys) in age's STREAM format,
//! 64 KiB chunks each authenticated on its own, so memory stays small and the Debian `age`
//! CLI opens them. Only public keys are ever held here for writing; identities (secret keys)
//! are parsed from text a caller read and dropped with the request that needed them.
//!
//! A one-off run may instead encrypt to a passphrase (age's scrypt recipient, alone: age
//! allows no other recipient beside it) at the work factor the `age` CLI uses, so `age -d`
//! opens it in about a second and a quarter GiB of memory, on any machine.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::str::FromStr;

use std::sync::Arc;

use age::secrecy::SecretString;
use age::stream::StreamWriter;
use age::{scrypt, x25519};
use serde::{Deserialize, Serialize};

use super::write_from::{WriteFrom, copy_from};

/// The file-name suffix an encrypted archive adds after its codec's (`.tar.gz.age`).
pub const EXTENSION: &str = ".age";

/// How an archive's bytes are encrypted, as its manifest records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Encryption {
    Age,
}

/// Why keys could not be used. Messages never hold key material: a bad recipient is a
/// public key the user typed, a bad identity is only named by its file and line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("not an age X25519 recipient (age1…): {0:?}")]
    BadRecipient(String),
    /// Never echoed: it would put the secret in the log and the answer. Nor is its prefix
    /// named, which scanners look for to find leaked keys.
    #[error(
        "a secret key where a recipient goes: give its public key (age1…, from `age-keygen -y`)"
    )]
    SecretKeyAsRecipient,
    #[error("{source_name}, line {line}: not an age X25519 recipient (age1…)")]
    BadRecipientLine { source_name: String, line: usize },
    #[error("no recipients in {0}")]
    NoRecipients(String),
    #[error("{0}: not an age identity file (AGE-SECRET-KEY-1… lines)")]
    BadIdentity(String),
    #[error("no identities in {0}")]
    NoIdentities(String),
    #[error("the passphrase is empty")]
    EmptyPassphrase,
}

/// The scrypt work factor (log2 of N) archives are sealed with: the `age` CLI's own, about
/// a second and 256 MiB to derive the key. The crate's default tunes itself to the machine
/// (526 MB and 3.8 s per archive where it was measured).
pub const PASSPHRASE_WORK_FACTOR: u8 = 18;

/// The largest work factor accepted when opening: a crafted header cannot make the daemon
/// spend more than about 1 GiB and a few seconds on one key derivation.
pub const MAX_PASSPHRASE_WORK_FACTOR: u8 = 20;

/// A passphrase for one request, held only in memory; `Debug` never shows it.
#[derive(Clone)]
pub struct Passphrase(Arc<SecretString>);

impl Passphrase {
    /// Refuses an empty passphrase, as the `age` CLI does.
    pub fn new(text: String) -> Result<Self, KeyError> {
        if text.is_empty() {
            return Err(KeyError::EmptyPassphrase);
        }
        Ok(Self(Arc::new(SecretString::from(text))))
    }
}

impl std::fmt::Debug for Passphrase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Passphrase(…)")
    }
}

/// The same passphrase value handed around, never a comparison of secrets.
impl PartialEq for Passphrase {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for Passphrase {}

/// Who can open an archive: public keys, checked, or a passphrase.
#[derive(Clone)]
pub struct Recipients {
    keys: Vec<x25519::Recipient>,
    passphrase: Option<Passphrase>,
}

impl std::fmt::Debug for Recipients {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.passphrase {
            Some(passphrase) => passphrase.fmt(f),
            None => f.debug_list().entries(self.public_keys()).finish(),
        }
    }
}

impl PartialEq for Recipients {
    fn eq(&self, other: &Self) -> bool {
        self.passphrase == other.passphrase && self.public_keys() == other.public_keys()
    }
}

impl Eq for Recipients {}

impl Recipients {
    /// Parses `age1…` keys; duplicates are kept once, in the order first given.
    pub fn parse<'a>(keys: impl IntoIterator<Item = &'a str>) -> Result<Self, KeyError> {
        let mut parsed: Vec<x25519::Recipient> = Vec::new();
        for key in keys {
            let key = key.trim();
            if key.to_ascii_uppercase().starts_with("AGE-SECRET-KEY-") {
                return Err(KeyError::SecretKeyAsRecipient);
            }
            let recipient = x25519::Recipient::from_str(key)
                .map_err(|_| KeyError::BadRecipient(key.to_owned()))?;
            if !parsed
                .iter()
                .any(|r| r.to_string() == recipient.to_string())
            {
                parsed.push(recipient);
            }
        }
        Ok(Self {
            keys: parsed,
            passphrase: None,
        })
    }

    /// A passphrase as the only recipient.
    pub fn passphrase(passphrase: Passphrase) -> Self {
        Self {
            keys: Vec::new(),
            passphrase: Some(passphrase),
        }
    }

    pub fn is_passphrase(&self) -> bool {
        self.passphrase.is_some()
    }

    /// The keys of a recipients file as `age -R` reads it: one per line, `#` comments and
    /// blank lines skipped. `source_name` names the file in errors.
    pub fn lines_of_file(text: &str, source_name: &str) -> Result<Vec<String>, KeyError> {
        let mut keys = Vec::new();
        for (index, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            if x25519::Recipient::from_str(line).is_err() {
                return Err(KeyError::BadRecipientLine {
                    source_name: source_name.to_owned(),
                    line: index + 1,
                });
            }
            keys.push(line.to_owned());
        }
        if keys.is_empty() {
            return Err(KeyError::NoRecipients(source_name.to_owned()));
        }
        Ok(keys)
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty() && self.passphrase.is_none()
    }

    /// The `age1…` text of each key, as the manifest records them.
    pub fn public_keys(&self) -> Vec<String> {
        self.keys.iter().map(ToString::to_string).collect()
    }
}

/// The secret keys of one identity file, held only while a request needs them.
pub struct Identities(Vec<Box<dyn age::Identity + Send + Sync>>);

impl std::fmt::Debug for Identities {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Identities({} keys)", self.0.len())
    }
}

impl Identities {
    /// Parses an identity file's text as `age -i` reads it (`AGE-SECRET-KEY-1…` lines,
    /// `#` comments). `source_name` names the file in errors, which never quote the text.
    pub fn parse(text: &str, source_name: &str) -> Result<Self, KeyError> {
        let file = age::IdentityFile::from_buffer(text.as_bytes())
            .map_err(|_| KeyError::BadIdentity(source_name.to_owned()))?;
        let keys = file
            .into_identities()
            .map_err(|_| KeyError::BadIdentity(source_name.to_owned()))?;
        if keys.is_empty() {
            return Err(KeyError::NoIdentities(source_name.to_owned()));
        }
        Ok(Self(keys))
    }

    /// The key a passphrase derives, for archives sealed with one (up to
    /// [`MAX_PASSPHRASE_WORK_FACTOR`]).
    pub fn passphrase(passphrase: &Passphrase) -> Self {
        let mut identity = scrypt::Identity::new(SecretString::clone(&passphrase.0));
        identity.set_max_work_factor(MAX_PASSPHRASE_WORK_FACTOR);
        Self(vec![Box::new(identity)])
    }

    /// One freshly generated identity (for tests).
    #[cfg(test)]
    pub fn generate() -> (Self, String) {
        let key = x25519::Identity::generate();
        let public = key.to_public().to_string();
        (Self(vec![Box::new(key)]), public)
    }
}

/// The writer under the compressor: the bytes as they are, or age-encrypted.
pub enum Sealer<W: Write> {
    Plain(W),
    Age(StreamWriter<W>),
}

impl<W: Write> std::fmt::Debug for Sealer<W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match self {
            Sealer::Plain(_) => "plain",
            Sealer::Age(_) => "age",
        };
        f.debug_tuple("Sealer").field(&kind).finish()
    }
}

impl<W: Write> Sealer<W> {
    /// Encrypts to `recipients` when there are any; writes the age header at once.
    pub fn new(recipients: Option<&Recipients>, inner: W) -> io::Result<Self> {
        match recipients.filter(|r| !r.is_empty()) {
            None => Ok(Sealer::Plain(inner)),
            Some(recipients) => {
                let encryptor = match &recipients.passphrase {
                    Some(passphrase) => {
                        let mut key = scrypt::Recipient::new(SecretString::clone(&passphrase.0));
                        key.set_work_factor(PASSPHRASE_WORK_FACTOR);
                        age::Encryptor::with_recipients(std::iter::once(&key as _))
                    }
                    None => {
                        let keys = recipients.keys.iter().map(|k| k as &dyn age::Recipient);
                        age::Encryptor::with_recipients(keys)
                    }
                }
                .map_err(|e| io::Error::other(format!("age: {e}")))?;
                Ok(Sealer::Age(encryptor.wrap_output(inner)?))
            }
        }
    }

    /// The inner writer when nothing is encrypted: only then do the bytes written reach it
    /// as they are.
    pub fn plain_mut(&mut self) -> Option<&mut W> {
        match self {
            Sealer::Plain(w) => Some(w),
            Sealer::Age(_) => None,
        }
    }

    /// Writes the last chunk and returns the inner writer.
    pub fn finish(self) -> io::Result<W> {
        match self {
            Sealer::Plain(w) => Ok(w),
            Sealer::Age(w) => w.finish(),
        }
    }
}

impl<W: WriteFrom> WriteFrom for Sealer<W> {
    fn write_from(&mut self, source: &mut dyn Read, len: u64) -> io::Result<u64> {
        match self {
            Sealer::Plain(w) => w.write_from(source, len),
            Sealer::Age(_) => copy_from(self, source, len),
        }
    }
}

impl<W: Write> Write for Sealer<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Sealer::Plain(w) => w.write(buf),
            Sealer::Age(w) => w.write(buf),
        }
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        match self {
            Sealer::Plain(w) => w.write_all(buf),
            Sealer::Age(w) => w.write_all(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Sealer::Plain(w) => w.flush(),
            Sealer::Age(w) => w.flush(),
        }
    }
}

/// Whether an age file's header holds a passphrase (scrypt) stanza, read from its first
/// bytes; the header is small, the stanza comes right after the version line.
pub fn sealed_with_passphrase(mut input: impl Read) -> io::Result<bool> {
    let mut head = Vec::with_capacity(4096);
    input.by_ref().take(4096).read_to_end(&mut head)?;
    Ok(head
        .split(|b| *b == b'\n')
        .take_while(|line| !line.starts_with(b"---"))
        .any(|line| line.starts_with(b"-> scrypt ")))
}

/// The plaintext of an age file. A wrong identity fails here; a truncated or tampered chunk
/// fails the read that reaches it (`InvalidData`), never yielding its bytes.
pub fn open_sealed<'a, R: BufRead + Send + 'a>(
    identities: &Identities,
    input: R,
) -> io::Result<BufReader<Box<dyn Read + Send + 'a>>> {
    let failed = |e: age::DecryptError| {
        let why = match e {
            age::DecryptError::NoMatchingKeys => {
                "the identity does not match any recipient of this archive".to_owned()
            }
            // Only a passphrase's key fails to unwrap; a wrong X25519 key does not match.
            age::DecryptError::DecryptionFailed => {
                "the passphrase is wrong, or the archive was not sealed with one".to_owned()
            }
            age::DecryptError::ExcessiveWork { required, .. } => format!(
                "the archive's passphrase work factor {required} is above the {MAX_PASSPHRASE_WORK_FACTOR} accepted"
            ),
            age::DecryptError::Io(e) => return e,
            other => format!("age: {other}"),
        };
        io::Error::new(io::ErrorKind::InvalidData, why)
    };
    let decryptor = age::Decryptor::new_buffered(input).map_err(failed)?;
    let keys = identities
        .0
        .iter()
        .map(|k| k.as_ref() as &dyn age::Identity);
    let plain: Box<dyn Read + Send + 'a> = Box::new(decryptor.decrypt(keys).map_err(failed)?);
    Ok(BufReader::with_capacity(64 * 1024, plain))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_bytes_open_with_the_identity_only() {
        let (identity, public) = Identities::generate();
        let recipients = Recipients::parse([public.as_str()]).unwrap();
        let data: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        let mut sealer = Sealer::new(Some(&recipients), Vec::new()).unwrap();
        sealer.write_all(&data).unwrap();
        let sealed = sealer.finish().unwrap();
        assert!(sealed.starts_with(b"age-encryption.org/v1\n"));
        let mut back = Vec::new();
        open_sealed(&identity, &sealed[..])
            .unwrap()
            .read_to_end(&mut back)
            .unwrap();
        assert_eq!(back, data);

        let (stranger, _) = Identities::generate();
        let Err(err) = open_sealed(&stranger, &sealed[..]) else {
            panic!("a stranger's identity opened the archive");
        };
        assert!(err.to_string().contains("does not match"), "{err}");

        let mut flipped = sealed.clone();
        let at = flipped.len() - 100;
        flipped[at] ^= 1;
        let mut out = Vec::new();
        let read = open_sealed(&identity, &flipped[..]).and_then(|mut r| r.read_to_end(&mut out));
        assert!(read.is_err());
        let cut = &sealed[..sealed.len() - 70_000];
        let read = open_sealed(&identity, cut).and_then(|mut r| r.read_to_end(&mut out));
        assert!(read.is_err());
    }

    #[test]
    fn a_secret_key_given_as_a_recipient_is_refused_and_never_repeated() {
        use age::secrecy::ExposeSecret;
        let secret = x25519::Identity::generate().to_string();
        let secret = secret.expose_secret();
        for given in [secret.to_owned(), secret.to_ascii_lowercase()] {
            let err = Recipients::parse([given.as_str()]).unwrap_err();
            assert!(matches!(err, KeyError::SecretKeyAsRecipient), "{err}");
            assert!(!err.to_string().contains(&secret[16..]), "{err}");
        }
    }

    #[test]
    fn a_passphrase_seals_at_the_age_cli_work_factor_and_only_it_opens() {
        let passphrase = Passphrase::new("correct horse".into()).unwrap();
        assert_eq!(format!("{passphrase:?}"), "Passphrase(…)");
        assert!(Passphrase::new(String::new()).is_err());
        let recipients = Recipients::passphrase(passphrase.clone());
        assert!(recipients.is_passphrase() && recipients.public_keys().is_empty());
        let mut sealer = Sealer::new(Some(&recipients), Vec::new()).unwrap();
        sealer.write_all(b"plain words").unwrap();
        let sealed = sealer.finish().unwrap();
        let header = String::from_utf8_lossy(&sealed[..120]).into_owned();
        assert!(header.lines().nth(1).unwrap().ends_with(" 18"), "{header}");
        assert!(sealed_with_passphrase(&sealed[..]).unwrap());

        let mut back = Vec::new();
        open_sealed(&Identities::passphrase(&passphrase), &sealed[..])
            .unwrap()
            .read_to_end(&mut back)
            .unwrap();
        assert_eq!(back, b"plain words");
        let wrong = Passphrase::new("wrong horse".into()).unwrap();
        let Err(err) = open_sealed(&Identities::passphrase(&wrong), &sealed[..]) else {
            panic!("a wrong passphrase opened the archive");
        };
        assert!(err.to_string().contains("passphrase is wrong"), "{err}");

        let (_, public) = Identities::generate();
        let keyed = Sealer::new(
            Some(&Recipients::parse([public.as_str()]).unwrap()),
            Vec::new(),
        )
        .unwrap()
        .finish()
        .unwrap();
        assert!(!sealed_with_passphrase(&keyed[..]).unwrap());
    }

    #[test]
    fn recipients_files_read_as_age_does() {
        let (_, a) = Identities::generate();
        let (_, b) = Identities::generate();
        let text = format!("# team keys\n\n{a}\n  {b}  \n# end\n");
        assert_eq!(
            Recipients::lines_of_file(&text, "f").unwrap(),
            [a.clone(), b]
        );
        let err = Recipients::lines_of_file("# x\nage1nope\n", "f").unwrap_err();
        assert_eq!(
            err.to_string(),
            "f, line 2: not an age X25519 recipient (age1…)"
        );
        assert!(Recipients::lines_of_file("# only\n", "f").is_err());
        assert!(Recipients::parse(["AGE-SECRET-KEY-1X"]).is_err());
        assert_eq!(
            Recipients::parse([a.as_str(), a.as_str()])
                .unwrap()
                .public_keys(),
            [a]
        );
    }

    #[test]
    fn identity_errors_never_quote_the_file() {
        let secret = "AGE-SECRET-KEY-1QQQQ";
        let err = Identities::parse(secret, "key.txt").unwrap_err();
        assert!(!err.to_string().contains(secret), "{err}");
        assert!(Identities::parse("# nothing\n", "key.txt").is_err());
    }
}
