//! Secrets at rest, sealed by envelope encryption: each secret is encrypted under its own random
//! data key (AES-256-GCM, bound to its row by associated data), and the data key is wrapped under
//! a key-encryption key (KEK) that lives only in the deployment's Secret, never in the database.
//!
//! The keyring setting lists KEKs as `id:base64(32 bytes)`, comma separated, current first: new
//! secrets are wrapped under the first, older ones still open. Rotating the KEK is adding a new one
//! in front; [`Keyring::rewrap`] then re-wraps each stored data key under it (the sealed secret
//! itself is untouched), after which the old KEK can be dropped from the list.
//!
//! A sealed value is one self-describing blob: `version (1) | id length (1) | KEK id |
//! wrapped data key (nonce 12 + key 32 + tag 16) | nonce (12) | ciphertext + tag (16)`.

use std::collections::HashMap;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};
use secrecy::{ExposeSecret, SecretString};

const VERSION: u8 = 1;
const KEY_LEN: usize = 32;
const TAG_LEN: usize = 16;
const WRAPPED_LEN: usize = NONCE_LEN + KEY_LEN + TAG_LEN;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KeyringError {
    #[error("is empty: list at least one key as id:base64")]
    Empty,
    #[error("key {0}: write it as id:base64")]
    Malformed(usize),
    #[error("key {0}: the id must be 1 to 64 letters, digits, '-' or '_'")]
    BadId(usize),
    #[error("key {0}: must be 32 bytes of base64")]
    BadKey(usize),
    #[error("key id {0} is listed twice")]
    Duplicate(String),
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SealError {
    #[error("the sealed value is malformed")]
    Malformed,
    #[error("sealed under key {0}, which the keyring does not hold")]
    UnknownKey(String),
    #[error("the sealed value does not open: wrong key, another row's value, or tampered")]
    Forged,
    #[error("no randomness available")]
    Random,
}

/// What a forwarded admin-consent link is sealed to: the scanner seals it into
/// ConsentRequestForwarded under the consent-link keys, and only the notifier, which e-mails it,
/// opens it; bound to the event's partner and tenant so it opens in no other event.
pub fn consent_link_context(partner_id: &str, tenant_id: &str) -> Vec<u8> {
    format!("picket-consent-link:{partner_id}:{tenant_id}").into_bytes()
}

/// The key-encryption keys, current first.
pub struct Keyring {
    current: String,
    keys: HashMap<String, LessSafeKey>,
    random: SystemRandom,
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The key ids only: the keys never leave this type.
        let mut ids: Vec<&String> = self.keys.keys().collect();
        ids.sort();
        formatter
            .debug_struct("Keyring")
            .field("current", &self.current)
            .field("ids", &ids)
            .finish()
    }
}

fn aead_key(bytes: &[u8]) -> Option<LessSafeKey> {
    UnboundKey::new(&AES_256_GCM, bytes)
        .ok()
        .map(LessSafeKey::new)
}

/// What the wrapped data key is bound to: the KEK that wrapped it.
fn wrap_aad(kek_id: &str) -> Vec<u8> {
    [b"picket-data-key:".as_slice(), kek_id.as_bytes()].concat()
}

impl Keyring {
    /// The keyring a setting describes (`id:base64,id:base64`, current first).
    pub fn parse(setting: &SecretString) -> Result<Keyring, KeyringError> {
        let mut current = None;
        let mut keys = HashMap::new();
        for (position, entry) in setting
            .expose_secret()
            .split(',')
            .map(str::trim)
            .filter(|entry| !entry.is_empty())
            .enumerate()
        {
            let number = position + 1;
            let (id, encoded) = entry
                .split_once(':')
                .ok_or(KeyringError::Malformed(number))?;
            let valid_id = !id.is_empty()
                && id.len() <= 64
                && id
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
            if !valid_id {
                return Err(KeyringError::BadId(number));
            }
            let bytes = STANDARD
                .decode(encoded)
                .ok()
                .filter(|bytes| bytes.len() == KEY_LEN)
                .ok_or(KeyringError::BadKey(number))?;
            let key = aead_key(&bytes).ok_or(KeyringError::BadKey(number))?;
            if keys.insert(id.to_owned(), key).is_some() {
                return Err(KeyringError::Duplicate(id.to_owned()));
            }
            current.get_or_insert_with(|| id.to_owned());
        }
        Ok(Keyring {
            current: current.ok_or(KeyringError::Empty)?,
            keys,
            random: SystemRandom::new(),
        })
    }

    /// The id of the KEK new values are wrapped under.
    pub fn current_id(&self) -> &str {
        &self.current
    }

    fn random<const N: usize>(&self) -> Result<[u8; N], SealError> {
        let mut bytes = [0; N];
        self.random
            .fill(&mut bytes)
            .map_err(|_| SealError::Random)?;
        Ok(bytes)
    }

    /// Encrypts `plaintext` with `key`, bound to `aad`: nonce, then ciphertext and tag.
    fn encrypt(
        &self,
        key: &LessSafeKey,
        aad: &[u8],
        plaintext: &[u8],
    ) -> Result<Vec<u8>, SealError> {
        let nonce = self.random::<NONCE_LEN>()?;
        let mut sealed = plaintext.to_vec();
        key.seal_in_place_append_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(aad),
            &mut sealed,
        )
        .map_err(|_| SealError::Random)?;
        Ok([nonce.as_slice(), &sealed].concat())
    }

    fn decrypt(key: &LessSafeKey, aad: &[u8], sealed: &[u8]) -> Result<Vec<u8>, SealError> {
        if sealed.len() < NONCE_LEN + TAG_LEN {
            return Err(SealError::Malformed);
        }
        let (nonce, ciphertext) = sealed.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| SealError::Malformed)?;
        let mut buffer = ciphertext.to_vec();
        let plaintext = key
            .open_in_place(nonce, Aad::from(aad), &mut buffer)
            .map_err(|_| SealError::Forged)?;
        Ok(plaintext.to_vec())
    }

    fn kek(&self, id: &str) -> Result<&LessSafeKey, SealError> {
        self.keys
            .get(id)
            .ok_or_else(|| SealError::UnknownKey(id.to_owned()))
    }

    fn blob(kek_id: &str, wrapped: &[u8], body: &[u8]) -> Vec<u8> {
        let mut blob = Vec::with_capacity(2 + kek_id.len() + wrapped.len() + body.len());
        blob.push(VERSION);
        // Ids are at most 64 bytes (parse), so the length fits one byte.
        blob.push(kek_id.len() as u8);
        blob.extend_from_slice(kek_id.as_bytes());
        blob.extend_from_slice(wrapped);
        blob.extend_from_slice(body);
        blob
    }

    /// Splits a blob into (KEK id, wrapped data key, sealed body).
    fn parts(sealed: &[u8]) -> Result<(&str, &[u8], &[u8]), SealError> {
        let [version, id_length, rest @ ..] = sealed else {
            return Err(SealError::Malformed);
        };
        let id_length = usize::from(*id_length);
        if *version != VERSION || rest.len() < id_length + WRAPPED_LEN {
            return Err(SealError::Malformed);
        }
        let (id, rest) = rest.split_at(id_length);
        let id = std::str::from_utf8(id).map_err(|_| SealError::Malformed)?;
        let (wrapped, body) = rest.split_at(WRAPPED_LEN);
        Ok((id, wrapped, body))
    }

    /// Seals `plaintext` under a fresh data key wrapped by the current KEK; `context` (such as
    /// the row's id) must be given again to open it, so a value copied to another row does not.
    pub fn seal(&self, plaintext: &[u8], context: &[u8]) -> Result<Vec<u8>, SealError> {
        let data_key_bytes = self.random::<KEY_LEN>()?;
        let data_key = aead_key(&data_key_bytes).ok_or(SealError::Random)?;
        let body = self.encrypt(&data_key, context, plaintext)?;
        let wrapped = self.encrypt(
            self.kek(&self.current)?,
            &wrap_aad(&self.current),
            &data_key_bytes,
        )?;
        Ok(Self::blob(&self.current, &wrapped, &body))
    }

    /// Opens a value [`Keyring::seal`] made with the same `context`.
    pub fn open(&self, sealed: &[u8], context: &[u8]) -> Result<Vec<u8>, SealError> {
        let (kek_id, wrapped, body) = Self::parts(sealed)?;
        let data_key_bytes = Self::decrypt(self.kek(kek_id)?, &wrap_aad(kek_id), wrapped)?;
        let data_key = aead_key(&data_key_bytes).ok_or(SealError::Malformed)?;
        Self::decrypt(&data_key, context, body)
    }

    /// The KEK a value is wrapped under.
    pub fn key_id_of(sealed: &[u8]) -> Result<&str, SealError> {
        Self::parts(sealed).map(|(kek_id, _, _)| kek_id)
    }

    /// The value with its data key wrapped under the current KEK instead (the sealed body is
    /// kept); `None` when it is already.
    pub fn rewrap(&self, sealed: &[u8]) -> Result<Option<Vec<u8>>, SealError> {
        let (kek_id, wrapped, body) = Self::parts(sealed)?;
        if kek_id == self.current {
            return Ok(None);
        }
        let data_key_bytes = Self::decrypt(self.kek(kek_id)?, &wrap_aad(kek_id), wrapped)?;
        let rewrapped = self.encrypt(
            self.kek(&self.current)?,
            &wrap_aad(&self.current),
            &data_key_bytes,
        )?;
        Ok(Some(Self::blob(&self.current, &rewrapped, body)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keyring(setting: &str) -> Keyring {
        Keyring::parse(&SecretString::from(setting.to_owned())).expect("valid keyring")
    }

    const OLD: &str = "k1:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
    const NEW: &str = "k2:ICEiIyQlJicoKSorLC0uLzAxMjM0NTY3ODk6Ozw9Pj8=";

    #[test]
    fn a_sealed_value_opens_only_with_its_context_and_a_kek_that_wrapped_it() {
        let old = keyring(OLD);
        let sealed = old.seal(b"whsec_secret", b"endpoint-1").expect("sealed");
        assert!(
            !sealed.windows(12).any(|window| window == b"whsec_secret"),
            "nothing in the clear"
        );
        assert_eq!(
            old.open(&sealed, b"endpoint-1").expect("opens"),
            b"whsec_secret"
        );
        assert_eq!(old.open(&sealed, b"endpoint-2"), Err(SealError::Forged));
        assert_eq!(
            keyring(NEW).open(&sealed, b"endpoint-1"),
            Err(SealError::UnknownKey("k1".into()))
        );
        let mut tampered = sealed.clone();
        let last = tampered.len() - 1;
        tampered[last] ^= 1;
        assert_eq!(old.open(&tampered, b"endpoint-1"), Err(SealError::Forged));
    }

    #[test]
    fn rotation_rewraps_under_the_new_kek_and_the_old_one_can_then_go() {
        let sealed = keyring(OLD)
            .seal(b"whsec_secret", b"endpoint-1")
            .expect("sealed");
        let both = keyring(&format!("{NEW},{OLD}"));
        let rewrapped = both
            .rewrap(&sealed)
            .expect("rewrapped")
            .expect("was under the old key");
        assert_eq!(Keyring::key_id_of(&rewrapped), Ok("k2"));
        assert_eq!(both.rewrap(&rewrapped), Ok(None));
        assert_eq!(
            keyring(NEW).open(&rewrapped, b"endpoint-1").expect("opens"),
            b"whsec_secret"
        );
    }

    #[test]
    fn a_bad_keyring_is_named_and_debug_shows_no_key() {
        let parse = |setting: &str| Keyring::parse(&SecretString::from(setting.to_owned()));
        assert_eq!(parse("").err(), Some(KeyringError::Empty));
        assert_eq!(parse("nokey").err(), Some(KeyringError::Malformed(1)));
        assert_eq!(parse("k1:c2hvcnQ=").err(), Some(KeyringError::BadKey(1)));
        assert_eq!(
            parse(&format!("{OLD},{OLD}")).err(),
            Some(KeyringError::Duplicate("k1".into()))
        );
        let shown = format!("{:?}", keyring(OLD));
        assert!(!shown.contains("AAECAwQF"), "{shown}");
    }
}
