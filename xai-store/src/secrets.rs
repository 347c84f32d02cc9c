//! The master key and the encryption at rest of upstream credentials.
//!
//! Upstream keys (the provider API keys xai spends) are stored only sealed: AES-256-GCM under a 32-byte master key,
//! with a random 96-bit nonce and the credential's identity (provider and key id) as associated data, so a sealed
//! value copied onto another row does not open. The master key comes from `XAI_MASTER_KEY` (64 hex digits or the
//! base64 of 32 bytes), else from `<data_dir>/master.key`, else it is generated into that file (mode 0600).

use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Key, Nonce};

/// The environment variable that holds the master key.
pub const MASTER_KEY_ENV: &str = "XAI_MASTER_KEY";

/// The file name of the master key under the data directory.
pub const MASTER_KEY_FILE: &str = "master.key";

const SEALED_PREFIX: &str = "v1:";
const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;

/// Why a master key could not be had, or a sealed value not opened. Never carries key material or plaintext.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SecretError {
    /// The master key text is malformed (the message names the source, never the value).
    #[error("invalid master key from {source_name}: expected 64 hex digits or the base64 of 32 bytes")]
    BadMasterKey {
        /// Where it came from (`XAI_MASTER_KEY` or a file path).
        source_name: String,
    },
    /// Reading or writing the key file failed.
    #[error("master key file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A sealed value is malformed, was tampered with, or belongs to another key or context.
    #[error("sealed secret cannot be opened (wrong master key, wrong context, or tampered)")]
    Open,
}

/// A 32-byte AES-256-GCM master key. `Debug` prints `[redacted]`; there is no way to read the bytes back out.
#[derive(Clone)]
pub struct MasterKey([u8; 32]);

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl MasterKey {
    /// A key from raw bytes.
    pub const fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// A fresh random key.
    pub fn generate() -> Self {
        Self(rand::random())
    }

    /// Parses 64 hex digits or the base64 (standard or URL-safe, padding optional) of 32 bytes; surrounding
    /// whitespace is ignored. `source_name` names where the text came from, for the error.
    pub fn parse(text: &str, source_name: &str) -> Result<Self, SecretError> {
        let t = text.trim();
        let bad = || SecretError::BadMasterKey { source_name: source_name.to_string() };
        if t.len() == 64 && t.bytes().all(|b| b.is_ascii_hexdigit()) {
            let mut k = [0u8; 32];
            hex::decode_to_slice(t, &mut k).map_err(|_| bad())?;
            return Ok(Self(k));
        }
        let bytes = base64_decode(t).ok_or_else(bad)?;
        <[u8; 32]>::try_from(bytes.as_slice()).map(Self).map_err(|_| bad())
    }

    /// The master key of a deployment: `XAI_MASTER_KEY` when set, else `<data_dir>/master.key`, created when absent.
    pub fn load(data_dir: &Path) -> Result<Self, SecretError> {
        Self::resolve(std::env::var(MASTER_KEY_ENV).ok(), data_dir)
    }

    /// [`MasterKey::load`] with the environment value given (`None`: unset).
    pub fn resolve(env_value: Option<String>, data_dir: &Path) -> Result<Self, SecretError> {
        match env_value {
            Some(v) if !v.trim().is_empty() => Self::parse(&v, MASTER_KEY_ENV),
            _ => Self::load_or_create_file(&data_dir.join(MASTER_KEY_FILE)),
        }
    }

    /// Reads the key file, or generates it with mode 0600. Two processes racing agree on one key: the new key is
    /// written in full to a private temporary file, then linked into place only if no file is there yet; the loser
    /// reads the winner's file.
    pub fn load_or_create_file(path: &Path) -> Result<Self, SecretError> {
        let io = |source| SecretError::Io { path: path.to_path_buf(), source };
        match std::fs::read_to_string(path) {
            Ok(text) => {
                warn_if_readable_by_others(path);
                return Self::parse(&text, &path.display().to_string());
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io(e)),
        }
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        let key = Self::generate();
        let tmp = path.with_extension(format!("tmp-{}", hex::encode(rand::random::<[u8; 6]>())));
        let written = (|| {
            let mut f = private_create_new(&tmp)?;
            f.write_all(format!("{}\n", hex::encode(key.0)).as_bytes())?;
            f.sync_all()
        })();
        if let Err(e) = written {
            let _ = std::fs::remove_file(&tmp);
            return Err(SecretError::Io { path: tmp, source: e });
        }
        let linked = std::fs::hard_link(&tmp, path);
        let _ = std::fs::remove_file(&tmp);
        match linked {
            Ok(()) => {
                tracing::info!(path = %path.display(), "generated a new master key; back it up");
                Ok(key)
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                let text = std::fs::read_to_string(path).map_err(io)?;
                Self::parse(&text, &path.display().to_string())
            }
            Err(e) => Err(io(e)),
        }
    }

    fn cipher(&self) -> Aes256Gcm {
        Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(&self.0))
    }

    /// Encrypts `plaintext`, binding it to `context` (e.g. provider and key id): `v1:` + hex(nonce ‖ ciphertext).
    pub fn seal(&self, plaintext: &str, context: &[u8]) -> String {
        format!("{SEALED_PREFIX}{}", hex::encode(self.seal_bytes(plaintext.as_bytes(), context)))
    }

    /// Decrypts what [`MasterKey::seal`] produced with the same key and context.
    pub fn open(&self, sealed: &str, context: &[u8]) -> Result<String, SecretError> {
        let raw = sealed.strip_prefix(SEALED_PREFIX).ok_or(SecretError::Open)?;
        let bytes = hex::decode(raw).map_err(|_| SecretError::Open)?;
        String::from_utf8(self.open_bytes(&bytes, context)?).map_err(|_| SecretError::Open)
    }

    /// [`MasterKey::seal`] for binary stores (Redis): nonce ‖ ciphertext, without the text envelope.
    pub fn seal_bytes(&self, plaintext: &[u8], context: &[u8]) -> Vec<u8> {
        let nonce: [u8; NONCE_LEN] = rand::random();
        let ct = self
            .cipher()
            .encrypt(Nonce::from_slice(&nonce), Payload { msg: plaintext, aad: context })
            // AES-GCM only fails past 64 GiB of plaintext.
            .unwrap_or_else(|_| panic!("AES-GCM refused a {}-byte plaintext", plaintext.len()));
        let mut out = Vec::with_capacity(NONCE_LEN + ct.len());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&ct);
        out
    }

    /// Decrypts what [`MasterKey::seal_bytes`] produced with the same key and context.
    pub fn open_bytes(&self, sealed: &[u8], context: &[u8]) -> Result<Vec<u8>, SecretError> {
        if sealed.len() < NONCE_LEN + TAG_LEN {
            return Err(SecretError::Open);
        }
        let (nonce, ct) = sealed.split_at(NONCE_LEN);
        self.cipher()
            .decrypt(Nonce::from_slice(nonce), Payload { msg: ct, aad: context })
            .map_err(|_| SecretError::Open)
    }
}

#[cfg(unix)]
fn warn_if_readable_by_others(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(m) = std::fs::metadata(path)
        && m.permissions().mode() & 0o077 != 0
    {
        tracing::warn!(path = %path.display(), "the master key file is accessible to other users; chmod 600 it");
    }
}

#[cfg(not(unix))]
fn warn_if_readable_by_others(_path: &Path) {}

#[cfg(unix)]
fn private_create_new(path: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path)
}

#[cfg(not(unix))]
fn private_create_new(path: &Path) -> std::io::Result<std::fs::File> {
    std::fs::OpenOptions::new().write(true).create_new(true).open(path)
}

/// Decodes standard or URL-safe base64, padding optional; `None` when malformed.
fn base64_decode(s: &str) -> Option<Vec<u8>> {
    let s = s.trim_end_matches('=');
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in s.bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' | b'-' => 62,
            b'/' | b'_' => 63,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    // Leftover bits must be zero padding of the last character (and a lone character is never valid).
    (acc == 0 && bits < 6).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const CTX: &[u8] = b"upstream:openai:1";

    #[test]
    fn seal_open_round_trip() {
        let k = MasterKey::generate();
        let s = k.seal("sk-live-SECRET123", CTX);
        assert!(s.starts_with("v1:"));
        assert!(!s.contains("SECRET"));
        assert_eq!(k.open(&s, CTX).unwrap(), "sk-live-SECRET123");
        // A random nonce: sealing twice differs.
        assert_ne!(s, k.seal("sk-live-SECRET123", CTX));
        assert_eq!(k.open(&k.seal("", CTX), CTX).unwrap(), "");
    }

    #[test]
    fn wrong_key_context_or_tampering_fail() {
        let k = MasterKey::generate();
        let s = k.seal("sk-live-SECRET123", CTX);
        let no_leak = |e: SecretError| assert!(!format!("{e} {e:?}").contains("SECRET"));
        no_leak(MasterKey::generate().open(&s, CTX).unwrap_err());
        no_leak(k.open(&s, b"upstream:openai:2").unwrap_err());
        // Flip one hex digit anywhere (nonce, ciphertext, tag).
        for i in [3, 10, 30, s.len() - 1] {
            let mut b = s.clone().into_bytes();
            b[i] = if b[i] == b'0' { b'1' } else { b'0' };
            no_leak(k.open(&String::from_utf8(b).unwrap(), CTX).unwrap_err());
        }
        for bad in ["", "v1:", "v1:zz", "v2:00", &s[3..], &s[..s.len() - 2]] {
            assert!(matches!(k.open(bad, CTX), Err(SecretError::Open)), "{bad}");
        }
    }

    #[test]
    fn key_file_is_created_private_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let k1 = MasterKey::resolve(None, &data).unwrap();
        let path = data.join(MASTER_KEY_FILE);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        }
        let k2 = MasterKey::resolve(Some(String::new()), &data).unwrap();
        assert_eq!(k1.0, k2.0);
        let sealed = k1.seal("x", CTX);
        assert_eq!(k2.open(&sealed, CTX).unwrap(), "x");
        // Only the key file is left behind.
        assert_eq!(std::fs::read_dir(&data).unwrap().count(), 1);
    }

    #[test]
    fn racing_creators_agree() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(MASTER_KEY_FILE);
        let keys: Vec<MasterKey> = std::thread::scope(|s| {
            let hs: Vec<_> = (0..8).map(|_| s.spawn(|| MasterKey::load_or_create_file(&path).unwrap())).collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert!(keys.iter().all(|k| k.0 == keys[0].0));
    }

    #[test]
    fn env_form_hex_and_base64() {
        let dir = tempfile::tempdir().unwrap();
        let bytes: [u8; 32] = core::array::from_fn(|i| (i * 7 + 1) as u8);
        let hexed = hex::encode(bytes);
        let k = MasterKey::resolve(Some(format!(" {hexed}\n")), dir.path()).unwrap();
        assert_eq!(k.0, bytes);
        // base64 of the same bytes (standard alphabet, with padding), computed independently of the decoder.
        let b64 = "AQgPFh0kKzI5QEdOVVxjanF4f4aNlJuiqbC3vsXM09o=";
        assert_eq!(MasterKey::resolve(Some(b64.into()), dir.path()).unwrap().0, bytes);
        assert_eq!(MasterKey::parse(b64.trim_end_matches('='), "t").unwrap().0, bytes);
        assert_eq!(MasterKey::parse(&b64.replace('+', "-").replace('/', "_"), "t").unwrap().0, bytes);
        // The environment wins: no file is created.
        assert!(!dir.path().join(MASTER_KEY_FILE).exists());
        for bad in [
            "short",
            &hexed[..62],
            "not base64 at all!!",
            "AQgPFh0kKzI5QEdOVVxjanF4f4aNlJuiqbC3vsXM",
            "zz".repeat(32).as_str(),
        ] {
            let e = MasterKey::resolve(Some(bad.into()), dir.path()).unwrap_err();
            let msg = e.to_string();
            assert!(msg.contains(MASTER_KEY_ENV), "{msg}");
            assert!(!msg.contains(bad), "the error must not echo the value: {msg}");
        }
        // A malformed key file is an error naming the file, not a silent regeneration.
        std::fs::write(dir.path().join(MASTER_KEY_FILE), "garbage").unwrap();
        let e = MasterKey::resolve(None, dir.path()).unwrap_err();
        assert!(e.to_string().contains(MASTER_KEY_FILE) && !e.to_string().contains("garbage"));
    }

    #[test]
    fn debug_redacts() {
        let k = MasterKey::from_bytes([0xab; 32]);
        assert_eq!(format!("{k:?}"), "[redacted]");
        assert!(!format!("{k:?}").contains("ab"));
    }
}
