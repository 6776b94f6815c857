//! Bearer-token authentication for every gRPC call: HS256 JWTs carrying a role and, for partners and
//! customers, the partner (and tenants) they are scoped to. The interceptor verifies the token and
//! leaves a [`Principal`] in the request's extensions; handlers check scope through it.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};
use tonic::{Request, Status};

use crate::settings::AuthSettings;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Picket's own staff and automation: every partner.
    Operator,
    /// An MSP: its own partner's data only.
    Partner,
    /// A customer contact: the tenants its partner granted.
    Customer,
    /// An incident-response investigator (operator staff) logging work.
    Investigator,
}

impl Role {
    /// The role a `picket.common.v1.Role` value names (`None` for unspecified or unknown).
    pub fn from_proto(value: i32) -> Option<Role> {
        use picket_proto::common::v1 as common;
        match common::Role::try_from(value).ok()? {
            common::Role::Operator => Some(Role::Operator),
            common::Role::Partner => Some(Role::Partner),
            common::Role::Customer => Some(Role::Customer),
            common::Role::Investigator => Some(Role::Investigator),
            common::Role::Unspecified => None,
        }
    }

    /// The role a token claim names (`operator`, `partner`, ...; any case).
    fn named(name: &str) -> Option<Role> {
        [
            Role::Operator,
            Role::Partner,
            Role::Customer,
            Role::Investigator,
        ]
        .into_iter()
        .find(|role| role.as_str().eq_ignore_ascii_case(name))
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Operator => "operator",
            Role::Partner => "partner",
            Role::Customer => "customer",
            Role::Investigator => "investigator",
        }
    }
}

/// The claims of a Picket bearer token, as `token mint` writes them.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    pub sub: String,
    pub role: Role,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partner_id: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tenant_ids: Vec<String>,
    pub iss: String,
    pub aud: String,
    pub iat: u64,
    pub exp: u64,
}

/// The claims read from a verified token. An identity provider names the role in `role`, or in
/// `roles` as its app roles (Entra ID, Keycloak and Okta all can); `aud` and `iss` are checked by
/// the verification itself.
#[derive(Debug, Deserialize)]
struct TokenClaims {
    sub: String,
    #[serde(default)]
    role: Option<String>,
    #[serde(default)]
    roles: Vec<String>,
    #[serde(default)]
    partner_id: Option<String>,
    #[serde(default)]
    tenant_ids: Vec<String>,
    iat: u64,
    exp: u64,
}

impl TokenClaims {
    fn role(&self) -> Result<Role, TokenError> {
        let named: Vec<Role> = self
            .role
            .iter()
            .chain(self.roles.iter())
            .filter_map(|name| Role::named(name))
            .collect();
        match named.as_slice() {
            [] => Err(TokenError::NoRole),
            [role] => Ok(*role),
            [first, rest @ ..] if rest.iter().all(|role| role == first) => Ok(*first),
            _ => Err(TokenError::SeveralRoles),
        }
    }
}

/// Who is calling, as proven by a verified token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub subject: String,
    pub role: Role,
    pub partner_id: Option<String>,
    pub tenant_ids: Vec<String>,
}

impl Principal {
    /// The principal as recorded in events and stored decisions.
    pub fn to_proto(&self) -> picket_proto::common::v1::Principal {
        use picket_proto::common::v1 as common;
        let role = match self.role {
            Role::Operator => common::Role::Operator,
            Role::Partner => common::Role::Partner,
            Role::Customer => common::Role::Customer,
            Role::Investigator => common::Role::Investigator,
        };
        common::Principal {
            subject: self.subject.clone(),
            role: role.into(),
            partner_id: self.partner_id.clone().unwrap_or_default(),
            tenant_ids: self.tenant_ids.clone(),
            display_name: String::new(),
        }
    }

    /// The principal the interceptor attached to this request.
    pub fn of<T>(request: &Request<T>) -> Result<&Principal, Status> {
        request
            .extensions()
            .get::<Principal>()
            .ok_or_else(|| Status::unauthenticated("request carries no verified principal"))
    }

    /// The operator sees every partner. Investigators are not scoped by partner at all: they see
    /// only the engagements assigned to them, which the ledger checks itself.
    pub fn is_operator(&self) -> bool {
        self.role == Role::Operator
    }

    /// Whether the principal may see data of this partner (any of its tenants, for customers
    /// see [`Principal::can_access_tenant`]).
    pub fn can_access_partner(&self, partner_id: &str) -> bool {
        match self.role {
            Role::Operator => true,
            Role::Partner | Role::Customer => self.partner_id.as_deref() == Some(partner_id),
            Role::Investigator => false,
        }
    }

    /// Whether the principal may see data of this tenant of this partner.
    pub fn can_access_tenant(&self, partner_id: &str, tenant_id: &str) -> bool {
        match self.role {
            Role::Operator => true,
            Role::Partner => self.partner_id.as_deref() == Some(partner_id),
            Role::Customer => {
                self.partner_id.as_deref() == Some(partner_id)
                    && self.tenant_ids.iter().any(|granted| granted == tenant_id)
            }
            Role::Investigator => false,
        }
    }

    /// Refuses a call about a partner the principal is not scoped to.
    pub fn require_partner(&self, partner_id: &str) -> Result<(), Status> {
        if self.can_access_partner(partner_id) {
            return Ok(());
        }
        Err(Status::permission_denied(format!(
            "not allowed for partner {partner_id}"
        )))
    }

    /// Only the partner itself, or the operator, manages a partner's resources (its tenants,
    /// its channels). `partner_id` must be a valid id: it travels in subjects.
    pub fn require_partner_manager(&self, partner_id: &str) -> Result<(), Status> {
        check_partner_id(partner_id)?;
        self.require_role(&[Role::Operator, Role::Partner])?;
        self.require_partner(partner_id)
    }

    /// The partner a listing covers: what operator staff asked for (`None` for all partners), or
    /// the principal's own partner, refusing a request for another.
    pub fn partner_scope(&self, requested: &str) -> Result<Option<String>, Status> {
        let requested = (!requested.is_empty()).then(|| requested.to_owned());
        match self.role {
            Role::Operator => return Ok(requested),
            Role::Investigator => return Err(self.refused()),
            Role::Partner | Role::Customer => {}
        }
        if requested.is_some() && requested != self.partner_id {
            return Err(Status::permission_denied("partner_id: not your partner"));
        }
        Ok(self.partner_id.clone())
    }

    /// Refuses a call made by none of the given roles.
    pub fn require_role(&self, allowed: &[Role]) -> Result<(), Status> {
        if allowed.contains(&self.role) {
            return Ok(());
        }
        Err(self.refused())
    }

    fn refused(&self) -> Status {
        Status::permission_denied(format!("role {} may not do this", self.role.as_str()))
    }
}

/// A request's `partner_id`: required, and a valid id (it travels in subjects).
pub fn check_partner_id(partner_id: &str) -> Result<(), Status> {
    if partner_id.is_empty() {
        return Err(Status::invalid_argument("partner_id: is required"));
    }
    crate::nats::subjects::validate_token(partner_id)
        .map_err(|error| Status::invalid_argument(format!("partner_id: {error}")))
}

/// An optional tenant id (empty: none) that travels in subjects, so must be a valid token.
pub fn check_tenant_id(tenant_id: &str) -> Result<(), Status> {
    if tenant_id.is_empty() {
        return Ok(());
    }
    crate::nats::subjects::validate_token(tenant_id)
        .map_err(|error| Status::invalid_argument(format!("tenant_id: {error}")))
}

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("{0}")]
    Jwt(#[from] jsonwebtoken::errors::Error),
    #[error("{0}")]
    Issuer(#[from] crate::oidc::OidcError),
    #[error("a {role} token needs {missing}")]
    MissingScope {
        role: &'static str,
        missing: &'static str,
    },
    #[error("the token names no Picket role")]
    NoRole,
    #[error("the token names more than one Picket role")]
    SeveralRoles,
    #[error("the token lives {lifetime_seconds}s, longer than the {maximum_seconds}s allowed")]
    TooLong {
        lifetime_seconds: u64,
        maximum_seconds: u64,
    },
    #[error("tokens come from the identity provider: this service mints none")]
    MintingDisabled,
}

/// Development and tests: HS256 with one shared key, which can also mint tokens.
struct SharedKey {
    encoding_key: EncodingKey,
    decoding_key: DecodingKey,
    validation: Validation,
    issuer: String,
    audience: String,
}

/// How tokens are verified.
enum Verification {
    SharedKey(Box<SharedKey>),
    /// Production: an OpenID Connect issuer's published keys (RS256, ES256); HS256 is refused.
    IdentityProvider {
        verifier: crate::oidc::Verifier,
        /// Wakes the key refresher when a token names a key not held yet.
        unknown_key: Arc<tokio::sync::Notify>,
    },
}

/// Verifies bearer tokens and, for development and tests, mints them.
pub struct TokenAuthority {
    verification: Verification,
    max_lifetime: Duration,
}

impl TokenAuthority {
    /// The authority the settings describe: an identity provider's keys when `auth.jwks_uri` is
    /// set (fetched later, see [`TokenAuthority::key_set`]), else the development shared key.
    pub fn new(settings: &AuthSettings, http: reqwest::Client) -> TokenAuthority {
        if settings.jwks_uri.is_empty() {
            return TokenAuthority::shared_key(
                settings.jwt_secret.expose_secret(),
                &settings.issuer,
                &settings.audience,
                settings.max_token_lifetime,
            );
        }
        let keys = Arc::new(crate::oidc::KeySet::new(
            http,
            settings.jwks_uri.clone(),
            crate::oidc::MIN_REFETCH,
        ));
        TokenAuthority {
            verification: Verification::IdentityProvider {
                verifier: crate::oidc::Verifier::new(keys, &settings.issuer, &settings.audience),
                unknown_key: Arc::new(tokio::sync::Notify::new()),
            },
            max_lifetime: settings.max_token_lifetime,
        }
    }

    /// Development tokens: HS256 under `secret`.
    pub fn shared_key(
        secret: &str,
        issuer: &str,
        audience: &str,
        max_lifetime: Duration,
    ) -> TokenAuthority {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_issuer(&[issuer]);
        validation.set_audience(&[audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.leeway = 30;
        TokenAuthority {
            verification: Verification::SharedKey(Box::new(SharedKey {
                encoding_key: EncodingKey::from_secret(secret.as_bytes()),
                decoding_key: DecodingKey::from_secret(secret.as_bytes()),
                validation,
                issuer: issuer.to_owned(),
                audience: audience.to_owned(),
            })),
            max_lifetime,
        }
    }

    /// The identity provider's keys and the signal that a token named an unknown one, for the
    /// task that keeps them fresh; `None` with a shared key.
    pub fn key_set(&self) -> Option<(Arc<crate::oidc::KeySet>, Arc<tokio::sync::Notify>)> {
        match &self.verification {
            Verification::SharedKey(_) => None,
            Verification::IdentityProvider {
                verifier,
                unknown_key,
            } => Some((verifier.keys.clone(), unknown_key.clone())),
        }
    }

    pub fn verify(&self, token: &str) -> Result<Principal, TokenError> {
        let claims: TokenClaims = match &self.verification {
            Verification::SharedKey(shared) => {
                jsonwebtoken::decode::<TokenClaims>(
                    token,
                    &shared.decoding_key,
                    &shared.validation,
                )?
                .claims
            }
            Verification::IdentityProvider {
                verifier,
                unknown_key,
            } => match verifier.verify_cached(token) {
                Err(error @ crate::oidc::OidcError::UnknownKey(_)) => {
                    unknown_key.notify_one();
                    return Err(error.into());
                }
                verified => verified?,
            },
        };
        let lifetime_seconds = claims.exp.saturating_sub(claims.iat);
        if lifetime_seconds > self.max_lifetime.as_secs() {
            return Err(TokenError::TooLong {
                lifetime_seconds,
                maximum_seconds: self.max_lifetime.as_secs(),
            });
        }
        let role = claims.role()?;
        let partner_id = claims
            .partner_id
            .filter(|partner_id| !partner_id.is_empty());
        if matches!(role, Role::Partner | Role::Customer) && partner_id.is_none() {
            return Err(TokenError::MissingScope {
                role: role.as_str(),
                missing: "a partner_id",
            });
        }
        if role == Role::Customer && claims.tenant_ids.is_empty() {
            return Err(TokenError::MissingScope {
                role: role.as_str(),
                missing: "tenant_ids",
            });
        }
        Ok(Principal {
            subject: claims.sub,
            role,
            partner_id,
            tenant_ids: claims.tenant_ids,
        })
    }

    /// Signs a token for `principal`, valid for `lifetime` (shared key only).
    pub fn mint(&self, principal: &Principal, lifetime: Duration) -> Result<String, TokenError> {
        let Verification::SharedKey(shared) = &self.verification else {
            return Err(TokenError::MintingDisabled);
        };
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        let claims = Claims {
            sub: principal.subject.clone(),
            role: principal.role,
            partner_id: principal.partner_id.clone(),
            tenant_ids: principal.tenant_ids.clone(),
            iss: shared.issuer.clone(),
            aud: shared.audience.clone(),
            iat: now,
            exp: now + lifetime.as_secs(),
        };
        Ok(jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &shared.encoding_key,
        )?)
    }
}

/// The tonic interceptor in front of every Picket service.
#[derive(Clone)]
pub struct AuthInterceptor {
    authority: Arc<TokenAuthority>,
}

impl AuthInterceptor {
    pub fn new(authority: Arc<TokenAuthority>) -> AuthInterceptor {
        AuthInterceptor { authority }
    }
}

impl tonic::service::Interceptor for AuthInterceptor {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        let header = request
            .metadata()
            .get("authorization")
            .ok_or_else(|| Status::unauthenticated("missing bearer token"))?;
        let token = header
            .to_str()
            .ok()
            .and_then(|value| value.strip_prefix("Bearer "))
            .ok_or_else(|| Status::unauthenticated("authorization is not a bearer token"))?;
        let principal = self.authority.verify(token).map_err(|error| {
            tracing::debug!(%error, "bearer token refused");
            Status::unauthenticated(format!("invalid bearer token: {error}"))
        })?;
        request.extensions_mut().insert(principal);
        Ok(request)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::service::Interceptor;

    fn authority(secret: &str) -> TokenAuthority {
        TokenAuthority::shared_key(secret, "picket", "picket", Duration::from_secs(8 * 3600))
    }

    fn partner(partner_id: &str) -> Principal {
        Principal {
            subject: "alice".into(),
            role: Role::Partner,
            partner_id: Some(partner_id.into()),
            tenant_ids: vec![],
        }
    }

    fn request_with(token: &str) -> Request<()> {
        let mut request = Request::new(());
        let value = format!("Bearer {token}").parse().expect("ascii header");
        request.metadata_mut().insert("authorization", value);
        request
    }

    #[test]
    fn minted_token_verifies_to_the_same_principal() {
        let authority = authority("0123456789abcdef0123456789abcdef");
        let token = authority
            .mint(&partner("p1"), Duration::from_secs(60))
            .expect("mint");
        assert_eq!(authority.verify(&token).expect("verify"), partner("p1"));
    }

    #[test]
    fn token_signed_with_another_key_is_refused() {
        let token = authority("another-key-another-key-another-key")
            .mint(&partner("p1"), Duration::from_secs(60))
            .expect("mint");
        let mut interceptor =
            AuthInterceptor::new(Arc::new(authority("0123456789abcdef0123456789abcdef")));
        let status = interceptor.call(request_with(&token)).expect_err("refused");
        assert_eq!(status.code(), tonic::Code::Unauthenticated);
    }

    #[test]
    fn missing_token_is_refused() {
        let mut interceptor =
            AuthInterceptor::new(Arc::new(authority("0123456789abcdef0123456789abcdef")));
        let status = interceptor.call(Request::new(())).expect_err("refused");
        assert_eq!(status.code(), tonic::Code::Unauthenticated);
        assert_eq!(status.message(), "missing bearer token");
    }

    #[test]
    fn partner_token_without_partner_is_refused() {
        let authority = authority("0123456789abcdef0123456789abcdef");
        let mut unscoped = partner("p1");
        unscoped.partner_id = None;
        let token = authority
            .mint(&unscoped, Duration::from_secs(60))
            .expect("mint");
        assert!(matches!(
            authority.verify(&token),
            Err(TokenError::MissingScope { .. })
        ));
    }

    #[test]
    fn token_living_longer_than_the_maximum_is_refused() {
        let authority = authority("0123456789abcdef0123456789abcdef");
        let token = authority
            .mint(&partner("p1"), Duration::from_secs(9 * 3600))
            .expect("mint");
        assert!(matches!(
            authority.verify(&token),
            Err(TokenError::TooLong {
                lifetime_seconds: 32400,
                maximum_seconds: 28800
            })
        ));
    }

    #[test]
    fn role_comes_from_role_or_app_roles_and_must_be_one() {
        let claims = |role: Option<&str>, roles: &[&str]| TokenClaims {
            sub: "s".into(),
            role: role.map(str::to_owned),
            roles: roles.iter().map(|role| (*role).to_owned()).collect(),
            partner_id: None,
            tenant_ids: Vec::new(),
            iat: 0,
            exp: 0,
        };
        assert_eq!(
            claims(Some("operator"), &[]).role().ok(),
            Some(Role::Operator)
        );
        assert_eq!(
            claims(None, &["Directory.Read", "Partner"]).role().ok(),
            Some(Role::Partner)
        );
        assert!(matches!(
            claims(None, &["reader"]).role(),
            Err(TokenError::NoRole)
        ));
        assert!(matches!(
            claims(Some("partner"), &["operator"]).role(),
            Err(TokenError::SeveralRoles)
        ));
    }

    #[test]
    fn investigators_see_no_partner_through_the_principal_alone() {
        let investigator = Principal {
            subject: "ines".into(),
            role: Role::Investigator,
            partner_id: None,
            tenant_ids: vec![],
        };
        assert!(!investigator.can_access_partner("p1"));
        assert!(!investigator.can_access_tenant("p1", "t1"));
        assert!(investigator.partner_scope("").is_err());
    }

    #[test]
    fn customer_sees_only_granted_tenants() {
        let customer = Principal {
            subject: "bob".into(),
            role: Role::Customer,
            partner_id: Some("p1".into()),
            tenant_ids: vec!["t1".into()],
        };
        assert!(customer.can_access_tenant("p1", "t1"));
        assert!(!customer.can_access_tenant("p1", "t2"));
        assert!(!customer.can_access_tenant("p2", "t1"));
    }
}
