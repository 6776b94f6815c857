//! Standard Webhooks v1 signing: `webhook-signature` is a space-separated list of
//! `v1,<base64 HMAC-SHA256(key, "{id}.{timestamp}.{body}")>`, one per active secret, and secrets are
//! shown as `whsec_<base64 key>` (spec: symmetric signatures, secret rotation).

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;

const PREFIX: &str = "whsec_";
/// The spec asks for 24 to 64 random bytes.
const MIN_KEY_BYTES: usize = 24;
const MAX_KEY_BYTES: usize = 64;
const GENERATED_KEY_BYTES: usize = 32;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SecretError {
    #[error("must start with whsec_")]
    MissingPrefix,
    #[error("is not valid base64 after whsec_")]
    NotBase64,
    #[error("key must be {MIN_KEY_BYTES} to {MAX_KEY_BYTES} bytes, got {0}")]
    WrongLength(usize),
}

/// A webhook signing key. Its `Debug` never shows the key.
#[derive(Clone)]
pub struct WebhookSecret {
    key: Vec<u8>,
}

impl std::fmt::Debug for WebhookSecret {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("WebhookSecret(..)")
    }
}

impl WebhookSecret {
    pub fn parse(secret: &str) -> Result<WebhookSecret, SecretError> {
        let encoded = secret
            .strip_prefix(PREFIX)
            .ok_or(SecretError::MissingPrefix)?;
        let key = STANDARD
            .decode(encoded)
            .map_err(|_| SecretError::NotBase64)?;
        if !(MIN_KEY_BYTES..=MAX_KEY_BYTES).contains(&key.len()) {
            return Err(SecretError::WrongLength(key.len()));
        }
        Ok(WebhookSecret { key })
    }

    /// A fresh random secret in its `whsec_` form.
    pub fn generate() -> String {
        let mut key = [0_u8; GENERATED_KEY_BYTES];
        rand::rng().fill_bytes(&mut key);
        format!("{PREFIX}{}", STANDARD.encode(key))
    }

    pub fn sign(&self, id: &str, timestamp: i64, body: &[u8]) -> String {
        // HMAC accepts keys of any length; the constructor cannot fail.
        let mut mac = match Hmac::<Sha256>::new_from_slice(&self.key) {
            Ok(mac) => mac,
            Err(_) => unreachable!("hmac takes keys of any length"),
        };
        mac.update(id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
    }
}

/// The `webhook-signature` header: one signature per secret, space separated.
pub fn signature_header(
    secrets: &[WebhookSecret],
    id: &str,
    timestamp: i64,
    body: &[u8],
) -> String {
    secrets
        .iter()
        .map(|secret| secret.sign(id, timestamp, body))
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signs_the_standard_webhooks_test_vector() {
        // The example in the Standard Webhooks specification.
        let secret = WebhookSecret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").expect("valid");
        let body = br#"{"test": 2432232314}"#;
        assert_eq!(
            secret.sign("msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
    }

    #[test]
    fn generated_secret_parses() {
        assert!(WebhookSecret::parse(&WebhookSecret::generate()).is_ok());
    }

    #[test]
    fn malformed_secrets_are_refused() {
        assert_eq!(
            WebhookSecret::parse("abc").err(),
            Some(SecretError::MissingPrefix)
        );
        assert_eq!(
            WebhookSecret::parse("whsec_!!!").err(),
            Some(SecretError::NotBase64)
        );
        assert_eq!(
            WebhookSecret::parse("whsec_YWJj").err(),
            Some(SecretError::WrongLength(3))
        );
    }

    #[test]
    fn rotation_signs_with_every_secret() {
        let old = WebhookSecret::parse(&WebhookSecret::generate()).expect("valid");
        let new = WebhookSecret::parse(&WebhookSecret::generate()).expect("valid");
        let header = signature_header(&[new.clone(), old.clone()], "id", 1, b"{}");
        assert_eq!(
            header,
            format!("{} {}", new.sign("id", 1, b"{}"), old.sign("id", 1, b"{}"))
        );
    }
}
