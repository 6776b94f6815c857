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

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Operator => "operator",
            Role::Partner => "partner",
            Role::Customer => "customer",
            Role::Investigator => "investigator",
        }
    }
}

/// The claims of a Picket bearer token.
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

    /// Operator staff see every partner.
    pub fn is_operator_staff(&self) -> bool {
        matches!(self.role, Role::Operator | Role::Investigator)
    }

    /// Whether the principal may see data of this partner (any of its tenants, for customers
    /// see [`Principal::can_access_tenant`]).
    pub fn can_access_partner(&self, partner_id: &str) -> bool {
        self.is_operator_staff() || self.partner_id.as_deref() == Some(partner_id)
    }

    /// Whether the principal may see data of this tenant of this partner.
    pub fn can_access_tenant(&self, partner_id: &str, tenant_id: &str) -> bool {
        match self.role {
            Role::Operator | Role::Investigator => true,
            Role::Partner => self.partner_id.as_deref() == Some(partner_id),
            Role::Customer => {
                self.partner_id.as_deref() == Some(partner_id)
                    && self.tenant_ids.iter().any(|granted| granted == tenant_id)
            }
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
        if self.is_operator_staff() {
            return Ok(requested);
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
        Err(Status::permission_denied(format!(
            "role {} may not do this",
            self.role.as_str()
        )))
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
    #[error("a {role} token needs {missing}")]
    MissingScope {
        role: &'static str,
        missing: &'static str,
    },
}

/// Verifies bearer tokens and, for development and tests, mints them.
pub struct TokenAuthority {
    encoding_key: EncodingKey,
    decoding_key: DecodingKey,
    validation: Validation,
    issuer: String,
    audience: String,
}

impl TokenAuthority {
    pub fn new(settings: &AuthSettings) -> TokenAuthority {
        let secret = settings.jwt_secret.expose_secret().as_bytes();
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_issuer(&[&settings.issuer]);
        validation.set_audience(&[&settings.audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.leeway = 30;
        TokenAuthority {
            encoding_key: EncodingKey::from_secret(secret),
            decoding_key: DecodingKey::from_secret(secret),
            validation,
            issuer: settings.issuer.clone(),
            audience: settings.audience.clone(),
        }
    }

    pub fn verify(&self, token: &str) -> Result<Principal, TokenError> {
        let claims =
            jsonwebtoken::decode::<Claims>(token, &self.decoding_key, &self.validation)?.claims;
        let role = claims.role.as_str();
        let partner_id = claims
            .partner_id
            .filter(|partner_id| !partner_id.is_empty());
        if matches!(claims.role, Role::Partner | Role::Customer) && partner_id.is_none() {
            return Err(TokenError::MissingScope {
                role,
                missing: "a partner_id",
            });
        }
        if claims.role == Role::Customer && claims.tenant_ids.is_empty() {
            return Err(TokenError::MissingScope {
                role,
                missing: "tenant_ids",
            });
        }
        Ok(Principal {
            subject: claims.sub,
            role: claims.role,
            partner_id,
            tenant_ids: claims.tenant_ids,
        })
    }

    /// Signs a token for `principal`, valid for `lifetime`.
    pub fn mint(&self, principal: &Principal, lifetime: Duration) -> Result<String, TokenError> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        let claims = Claims {
            sub: principal.subject.clone(),
            role: principal.role,
            partner_id: principal.partner_id.clone(),
            tenant_ids: principal.tenant_ids.clone(),
            iss: self.issuer.clone(),
            aud: self.audience.clone(),
            iat: now,
            exp: now + lifetime.as_secs(),
        };
        Ok(jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &self.encoding_key,
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
        TokenAuthority::new(&AuthSettings {
            jwt_secret: secret.to_owned().into(),
            issuer: "picket".into(),
            audience: "picket".into(),
        })
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
