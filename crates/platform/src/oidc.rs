//! OpenID Connect: an issuer's published signing keys and the verification of the tokens it signs.
//!
//! [`KeySet`] holds the keys of a JWKS document (RFC 7517) by key id. It is refreshed on a
//! schedule and, at most once per its minimum interval, whenever a token names a key it does not hold:
//! issuers publish a new key before they sign with it (Microsoft's signing-key rollover), so a
//! refetch on an unknown `kid` follows rotation without a restart. Only asymmetric algorithms are
//! accepted (RS256, ES256): a token's own `alg` header never chooses a weaker one, since each key
//! carries the one algorithm it is used with.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::de::DeserializeOwned;

/// The shortest time between two fetches caused by unknown key ids where anyone can present a
/// token, so a flood of tokens naming made-up keys cannot turn into a flood of requests to the
/// issuer.
pub const MIN_REFETCH: Duration = Duration::from_secs(5);

/// The most a JWKS or discovery document may weigh (Microsoft's is about 10 KiB).
const MAX_DOCUMENT_BYTES: usize = 256 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum OidcError {
    #[error("cannot read {url}: {reason}")]
    Fetch { url: String, reason: String },
    #[error("the discovery document names issuer {found}, expected {expected}")]
    IssuerMismatch { expected: String, found: String },
    #[error("the token names no key id")]
    MissingKeyId,
    #[error("the token is signed by an unknown key {0}")]
    UnknownKey(String),
    #[error("the token's algorithm {found:?} is not its key's {expected:?}")]
    AlgorithmMismatch {
        expected: Algorithm,
        found: Algorithm,
    },
    #[error("{0}")]
    Token(#[from] jsonwebtoken::errors::Error),
}

/// One published signing key and the algorithm it is used with.
struct SigningKey {
    algorithm: Algorithm,
    key: DecodingKey,
}

#[derive(Default)]
struct Cache {
    keys: HashMap<String, Arc<SigningKey>>,
    fetched_at: Option<Instant>,
}

/// The signing keys an issuer publishes at its `jwks_uri`.
pub struct KeySet {
    jwks_uri: String,
    http: reqwest::Client,
    min_refetch: Duration,
    cache: RwLock<Cache>,
    /// One fetch at a time; the others wait for it and read its result.
    fetching: tokio::sync::Mutex<()>,
}

async fn get_json(http: &reqwest::Client, url: &str) -> Result<serde_json::Value, OidcError> {
    let failed = |reason: String| OidcError::Fetch {
        url: url.to_owned(),
        reason,
    };
    let response = http
        .get(url)
        .send()
        .await
        .map_err(|error| failed(error.to_string()))?;
    if !response.status().is_success() {
        return Err(failed(format!("status {}", response.status())));
    }
    let body = response
        .bytes()
        .await
        .map_err(|error| failed(error.to_string()))?;
    if body.len() > MAX_DOCUMENT_BYTES {
        return Err(failed(format!("larger than {MAX_DOCUMENT_BYTES} bytes")));
    }
    serde_json::from_slice(&body).map_err(|error| failed(format!("not JSON: {error}")))
}

/// The `jwks_uri` of an issuer, from its discovery document
/// (`{issuer}/.well-known/openid-configuration`, OpenID Connect Discovery 1.0 §4), which must name
/// the same issuer.
pub async fn discover_jwks_uri(http: &reqwest::Client, issuer: &str) -> Result<String, OidcError> {
    let url = format!(
        "{}/.well-known/openid-configuration",
        issuer.trim_end_matches('/')
    );
    let document = get_json(http, &url).await?;
    let found = document["issuer"].as_str().unwrap_or_default();
    if found.trim_end_matches('/') != issuer.trim_end_matches('/') {
        return Err(OidcError::IssuerMismatch {
            expected: issuer.to_owned(),
            found: found.to_owned(),
        });
    }
    document["jwks_uri"]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| OidcError::Fetch {
            url,
            reason: "no jwks_uri".into(),
        })
}

/// The algorithm a published key is used with: its `alg`, else the one its type implies.
fn algorithm_of(jwk: &Jwk) -> Option<Algorithm> {
    let implied = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => Algorithm::RS256,
        AlgorithmParameters::EllipticCurve(parameters)
            if parameters.curve == EllipticCurve::P256 =>
        {
            Algorithm::ES256
        }
        _ => return None,
    };
    match jwk.common.key_algorithm {
        None => Some(implied),
        Some(KeyAlgorithm::RS256) if implied == Algorithm::RS256 => Some(Algorithm::RS256),
        Some(KeyAlgorithm::ES256) if implied == Algorithm::ES256 => Some(Algorithm::ES256),
        Some(_) => None,
    }
}

/// The usable keys of a JWKS document: signing keys (no `use`, or `sig`) with a key id, of a
/// supported type; anything else in the document is skipped, not fatal.
fn parse_key_set(document: &serde_json::Value) -> HashMap<String, Arc<SigningKey>> {
    let Some(keys) = document["keys"].as_array() else {
        return HashMap::new();
    };
    keys.iter()
        .filter_map(|value| serde_json::from_value::<Jwk>(value.clone()).ok())
        .filter(|jwk| {
            jwk.common
                .public_key_use
                .as_ref()
                .is_none_or(|key_use| *key_use == jsonwebtoken::jwk::PublicKeyUse::Signature)
        })
        .filter_map(|jwk| {
            let key_id = jwk.common.key_id.clone()?;
            let algorithm = algorithm_of(&jwk)?;
            let key = DecodingKey::from_jwk(&jwk).ok()?;
            Some((key_id, Arc::new(SigningKey { algorithm, key })))
        })
        .collect()
}

impl KeySet {
    /// A key set read from `jwks_uri`; empty until [`KeySet::refresh`]. An unknown key id causes
    /// a fetch at most every `min_refetch` ([`MIN_REFETCH`] where anyone can present a token).
    pub fn new(http: reqwest::Client, jwks_uri: String, min_refetch: Duration) -> KeySet {
        KeySet {
            jwks_uri,
            http,
            min_refetch,
            cache: RwLock::new(Cache::default()),
            fetching: tokio::sync::Mutex::new(()),
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Cache> {
        self.cache
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Fetches the document again and replaces the keys; returns how many it holds.
    pub async fn refresh(&self) -> Result<usize, OidcError> {
        let _one_at_a_time = self.fetching.lock().await;
        self.fetch().await
    }

    async fn fetch(&self) -> Result<usize, OidcError> {
        let document = get_json(&self.http, &self.jwks_uri).await?;
        let keys = parse_key_set(&document);
        let count = keys.len();
        let mut cache = self
            .cache
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        cache.keys = keys;
        cache.fetched_at = Some(Instant::now());
        tracing::debug!(jwks_uri = %self.jwks_uri, keys = count, "signing keys fetched");
        Ok(count)
    }

    /// How long until a token naming an unknown key may cause a fetch (zero: now).
    pub fn refetch_after(&self) -> Duration {
        self.read().fetched_at.map_or(Duration::ZERO, |fetched_at| {
            self.min_refetch.saturating_sub(fetched_at.elapsed())
        })
    }

    fn cached(&self, key_id: &str) -> Option<Arc<SigningKey>> {
        self.read().keys.get(key_id).cloned()
    }

    /// The key `key_id` names, fetching the document again if it is unknown and the last fetch
    /// is older than the minimum interval.
    async fn key(&self, key_id: &str) -> Result<Arc<SigningKey>, OidcError> {
        if let Some(key) = self.cached(key_id) {
            return Ok(key);
        }
        let _one_at_a_time = self.fetching.lock().await;
        // Another caller may have fetched while this one waited.
        if let Some(key) = self.cached(key_id) {
            return Ok(key);
        }
        if self.refetch_after().is_zero() {
            self.fetch().await?;
        }
        self.cached(key_id)
            .ok_or_else(|| OidcError::UnknownKey(key_id.to_owned()))
    }
}

/// Verifies tokens of one issuer for one audience against its [`KeySet`].
pub struct Verifier {
    pub keys: Arc<KeySet>,
    issuer: String,
    audience: String,
    leeway: u64,
}

impl Verifier {
    pub fn new(keys: Arc<KeySet>, issuer: &str, audience: &str) -> Verifier {
        Verifier {
            keys,
            issuer: issuer.to_owned(),
            audience: audience.to_owned(),
            leeway: 30,
        }
    }

    fn validation(&self, algorithm: Algorithm) -> Validation {
        let mut validation = Validation::new(algorithm);
        validation.set_issuer(&[&self.issuer]);
        validation.set_audience(&[&self.audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.leeway = self.leeway;
        validation
    }

    fn check<C: DeserializeOwned>(&self, token: &str, key: &SigningKey) -> Result<C, OidcError> {
        let header = jsonwebtoken::decode_header(token)?;
        if header.alg != key.algorithm {
            return Err(OidcError::AlgorithmMismatch {
                expected: key.algorithm,
                found: header.alg,
            });
        }
        let validation = self.validation(key.algorithm);
        Ok(jsonwebtoken::decode::<C>(token, &key.key, &validation)?.claims)
    }

    fn key_id(token: &str) -> Result<String, OidcError> {
        jsonwebtoken::decode_header(token)?
            .kid
            .ok_or(OidcError::MissingKeyId)
    }

    /// Verifies with the keys held now, without waiting on the network (for a synchronous
    /// interceptor); an unknown key is [`OidcError::UnknownKey`] and the caller asks for a refresh.
    pub fn verify_cached<C: DeserializeOwned>(&self, token: &str) -> Result<C, OidcError> {
        let key_id = Self::key_id(token)?;
        let key = self
            .keys
            .cached(&key_id)
            .ok_or(OidcError::UnknownKey(key_id))?;
        self.check(token, &key)
    }

    /// Verifies, fetching the issuer's keys again when the token names one not seen yet.
    pub async fn verify<C: DeserializeOwned>(&self, token: &str) -> Result<C, OidcError> {
        let key_id = Self::key_id(token)?;
        let key = self.keys.key(&key_id).await?;
        self.check(token, &key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_signing_keys_of_supported_types_are_kept() {
        let document = serde_json::json!({"keys": [
            // An RSA key as Microsoft publishes it (no alg; x5t, x5c and issuer beside it).
            {"kty": "RSA", "use": "sig", "kid": "rsa-1", "x5t": "rsa-1", "e": "AQAB",
             "n": "sXch8Zb6KO8XKzJ4tTYjxWBmJ7RV5sPAGV9ZmuXf8iJ0tqO8XbmvbzrvJ5MIwN2-Ts-qLeKu3wK2ol4dXWkGzg",
             "issuer": "https://login.microsoftonline.com/{tenantid}/v2.0"},
            {"kty": "EC", "crv": "P-256", "kid": "ec-1", "alg": "ES256",
             "x": "MKBCTNIcKUSDii11ySs3526iDZ8AiTo7Tu6KPAqv7D4", "y": "4Etl6SRW2YiLUrN5vfvVHuhp7x8PxltmWWlbbM4IFyM"},
            {"kty": "RSA", "use": "enc", "kid": "encryption", "e": "AQAB",
             "n": "sXch8Zb6KO8XKzJ4tTYjxWBmJ7RV5sPAGV9ZmuXf8iJ0tqO8XbmvbzrvJ5MIwN2-Ts-qLeKu3wK2ol4dXWkGzg"},
            {"kty": "oct", "kid": "symmetric", "k": "c2VjcmV0"},
            {"kty": "RSA", "e": "AQAB", "n": "sXch8Zb6KO8XKzJ4tTYjxWBmJ7RV5sPAGV9ZmuXf8iJ0tqO8XbmvbzrvJ5MIwN2-Ts-qLeKu3wK2ol4dXWkGzg"},
            {"kty": "made-up"}
        ]});
        let keys = parse_key_set(&document);
        let mut ids: Vec<&String> = keys.keys().collect();
        ids.sort();
        assert_eq!(ids, ["ec-1", "rsa-1"]);
        assert_eq!(keys["rsa-1"].algorithm, Algorithm::RS256);
        assert_eq!(keys["ec-1"].algorithm, Algorithm::ES256);
    }
}
