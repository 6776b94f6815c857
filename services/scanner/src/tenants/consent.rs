//! Admin consent as a pure decision: what Microsoft's redirects (or CompleteConsent) say, checked
//! against the tenant that asked for it, then the tenant the administrator's sign-in proved, and,
//! once a token worked, `/organization`.

use picket_proto::tenants::v1 as tenants;

/// What a redirect carried: admin consent (`admin_consent`, `tenant`) or the administrator's
/// sign-in (`code`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConsentResponse {
    pub state: String,
    /// The `tenant` parameter: a hint only, since anyone can type it; the sign-in proves the tenant.
    pub tenant_hint: String,
    pub admin_consent: bool,
    pub code: String,
    pub error: String,
    pub error_description: String,
}

/// Why a tenant did not become active.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsentRefusal {
    pub failure: tenants::ConsentFailure,
    pub reason: String,
}

impl ConsentRefusal {
    fn new(failure: tenants::ConsentFailure, reason: impl Into<String>) -> ConsentRefusal {
        ConsentRefusal {
            failure,
            reason: reason.into(),
        }
    }

    /// Denied by the admin, as opposed to a failure on the way.
    pub fn is_denial(&self) -> bool {
        self.failure == tenants::ConsentFailure::Denied
    }
}

/// Checks the admin-consent redirect: the admin said yes, and the tenant it names (a hint) is not
/// another than the one expected. `expected` is what the partner named at onboarding (a GUID, a
/// domain, or nothing).
pub fn check_response(response: &ConsentResponse, expected: &str) -> Result<(), ConsentRefusal> {
    if !response.error.is_empty() {
        let reason = match response.error_description.as_str() {
            "" => response.error.clone(),
            description => format!("{}: {description}", response.error),
        };
        return Err(ConsentRefusal::new(tenants::ConsentFailure::Denied, reason));
    }
    if !response.admin_consent {
        return Err(ConsentRefusal::new(
            tenants::ConsentFailure::Denied,
            "admin consent was not granted",
        ));
    }
    if response.tenant_hint.is_empty() {
        return Ok(());
    }
    check_tenant(&response.tenant_hint, expected, "consent came from")
}

/// Checks the tenant the administrator's ID token proved against the one expected.
pub fn check_proven_tenant(proven: &str, expected: &str) -> Result<(), ConsentRefusal> {
    check_tenant(proven, expected, "the administrator signed in to")
}

fn check_tenant(tenant: &str, expected: &str, what: &str) -> Result<(), ConsentRefusal> {
    let expected_is_guid = uuid::Uuid::parse_str(expected).is_ok();
    if expected_is_guid && !expected.eq_ignore_ascii_case(tenant) {
        return Err(ConsentRefusal::new(
            tenants::ConsentFailure::WrongTenant,
            format!("{what} tenant {tenant}, expected {expected}"),
        ));
    }
    Ok(())
}

/// What `/organization` showed once a token worked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Organization {
    pub id: String,
    pub display_name: String,
    pub default_domain: String,
    pub domains: Vec<String>,
}

/// Checks the organization read with the new token: it is the consenting tenant, and the domain
/// the partner named (if it named one) is among its verified domains.
pub fn check_organization(
    organization: &Organization,
    consenting_tenant: &str,
    expected: &str,
) -> Result<(), ConsentRefusal> {
    if !organization.id.eq_ignore_ascii_case(consenting_tenant) {
        return Err(ConsentRefusal::new(
            tenants::ConsentFailure::WrongTenant,
            format!(
                "the token reads organization {}, not {consenting_tenant}",
                organization.id
            ),
        ));
    }
    let expected_is_domain = !expected.is_empty() && uuid::Uuid::parse_str(expected).is_err();
    if expected_is_domain
        && !organization
            .domains
            .iter()
            .any(|domain| domain.eq_ignore_ascii_case(expected))
    {
        return Err(ConsentRefusal::new(
            tenants::ConsentFailure::WrongTenant,
            format!("tenant {consenting_tenant} does not own the domain {expected}"),
        ));
    }
    Ok(())
}

/// Reads an `/organization` collection response.
pub fn parse_organization(response: &serde_json::Value) -> Option<Organization> {
    let organization = response["value"].as_array()?.first()?;
    let domains: Vec<&serde_json::Value> = organization["verifiedDomains"]
        .as_array()
        .map(|domains| domains.iter().collect())
        .unwrap_or_default();
    let default_domain = domains
        .iter()
        .find(|domain| domain["isDefault"].as_bool() == Some(true))
        .and_then(|domain| domain["name"].as_str())
        .unwrap_or_default()
        .to_owned();
    Some(Organization {
        id: organization["id"].as_str()?.to_owned(),
        display_name: organization["displayName"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
        default_domain,
        domains: domains
            .iter()
            .filter_map(|domain| domain["name"].as_str().map(str::to_owned))
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const TENANT: &str = "86cc7763-2227-24a2-8af0-0a133fad517d";

    fn granted() -> ConsentResponse {
        ConsentResponse {
            state: "s".into(),
            tenant_hint: TENANT.into(),
            admin_consent: true,
            ..Default::default()
        }
    }

    #[test]
    fn granted_consent_for_the_expected_tenant_passes() {
        assert_eq!(check_response(&granted(), TENANT), Ok(()));
        assert_eq!(check_response(&granted(), ""), Ok(()));
        assert_eq!(
            check_response(&granted(), "contoso.onmicrosoft.com"),
            Ok(()),
            "domains are checked later"
        );
    }

    #[test]
    fn an_error_from_microsoft_is_a_denial_with_its_description() {
        let denied = ConsentResponse {
            error: "access_denied".into(),
            error_description: "AADSTS65004: User declined to consent".into(),
            ..granted()
        };
        let refusal = check_response(&denied, TENANT).expect_err("denied");
        assert!(refusal.is_denial());
        assert_eq!(
            refusal.reason,
            "access_denied: AADSTS65004: User declined to consent"
        );
    }

    #[test]
    fn consent_from_another_tenant_is_refused() {
        let refusal = check_response(&granted(), "00000000-0000-0000-0000-000000000001")
            .expect_err("wrong tenant");
        assert_eq!(refusal.failure, tenants::ConsentFailure::WrongTenant);
    }

    #[test]
    fn only_the_proven_tenant_binds_when_a_guid_was_named() {
        assert_eq!(check_proven_tenant(TENANT, TENANT), Ok(()));
        assert_eq!(check_proven_tenant(TENANT, "contoso.com"), Ok(()));
        let refusal = check_proven_tenant(TENANT, "00000000-0000-0000-0000-000000000001")
            .expect_err("wrong tenant");
        assert_eq!(refusal.failure, tenants::ConsentFailure::WrongTenant);
    }

    #[test]
    fn organization_must_own_the_named_domain() {
        let organization = Organization {
            id: TENANT.into(),
            display_name: "Contoso".into(),
            default_domain: "contoso.onmicrosoft.com".into(),
            domains: vec!["contoso.onmicrosoft.com".into()],
        };
        assert_eq!(
            check_organization(&organization, TENANT, "CONTOSO.onmicrosoft.com"),
            Ok(())
        );
        let refusal =
            check_organization(&organization, TENANT, "fabrikam.com").expect_err("not its domain");
        assert_eq!(refusal.failure, tenants::ConsentFailure::WrongTenant);
    }
}
