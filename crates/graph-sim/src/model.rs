//! Synthetic tenants, generated from a seed so every run sees the same directory. A tenant is a map
//! from Graph resource paths (without `/v1.0`) to JSON: an array for a collection, an object for a
//! singleton. Every shape follows Microsoft Graph v1.0 (and Defender for Endpoint for `/api/...`).

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Duration, SecondsFormat, Utc};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::profile::{Activity, Licence, Profile, Weakness};

mod apps;

const FIRST_NAMES: [&str; 12] = [
    "Alice", "Bruno", "Chen", "Dana", "Emeka", "Fatima", "Goran", "Hana", "Ivan", "Julia", "Kofi",
    "Lena",
];
const LAST_NAMES: [&str; 10] = [
    "Adams", "Berg", "Costa", "Dubois", "Eze", "Fischer", "Garcia", "Haddad", "Ito", "Jensen",
];
const COUNTRIES: [(&str, &str); 5] = [
    ("NL", "Amsterdam"),
    ("DE", "Berlin"),
    ("GB", "London"),
    ("FR", "Paris"),
    ("US", "Chicago"),
];

/// Built-in role template ids (the role definition id of a built-in role).
pub const GLOBAL_ADMINISTRATOR: &str = "62e90394-69f5-4237-9190-012177145e10";
const APPLICATION_ADMINISTRATOR: &str = "9b895d92-2cd3-44c7-9d02-a6ac2d5ea5c3";
const USER_ADMINISTRATOR: &str = "fe930be7-5e62-47db-91af-98c3a49a38b1";
const EXCHANGE_ADMINISTRATOR: &str = "29232cdf-9323-42fd-ade2-1d097af3e4de";
/// Can grant tenant-wide admin consent to application permissions, as Global Administrators can.
pub const PRIVILEGED_ROLE_ADMINISTRATOR: &str = "e8611ab8-c189-46e8-94e1-60213ab1f814";
/// Can change the sensitive properties of any user, administrators included.
pub const PRIVILEGED_AUTHENTICATION_ADMINISTRATOR: &str = "7be44c8a-adaf-4e2a-84d6-ab2649e08a13";
const PRIVILEGED_ROLES: [&str; 9] = [
    GLOBAL_ADMINISTRATOR,
    PRIVILEGED_ROLE_ADMINISTRATOR,
    USER_ADMINISTRATOR,
    "f28a1f50-f6e7-4571-818b-6a12f2af6b6c",
    EXCHANGE_ADMINISTRATOR,
    "8ac3fc64-6eca-42ea-9e69-59f4c7b60eb2",
    APPLICATION_ADMINISTRATOR,
    "158c047a-c907-4556-b7ef-446551a6b5f7",
    PRIVILEGED_AUTHENTICATION_ADMINISTRATOR,
];
const RESTRICTED_GUEST_ROLE: &str = "2af84b1e-32c8-42b7-82bc-daa82404023b";
const MEMBER_LIKE_GUEST_ROLE: &str = "a0b1b346-4d3e-4e8b-98f8-753987be4970";
const NEVER_EXPIRES: i64 = 2_147_483_647;

/// The fewest users a tenant has: break-glass accounts, admins and the users activity needs.
pub const MIN_USERS: usize = 16;

/// One simulated Entra ID tenant.
#[derive(Debug, Clone)]
pub struct Tenant {
    pub index: usize,
    pub tenant_id: String,
    pub display_name: String,
    pub domain: String,
    /// Whether an admin consented to the operator's app; without it no token is issued.
    pub consented: bool,
    pub profile: Profile,
    /// Graph resources by path: arrays are collections, objects are singletons.
    pub resources: BTreeMap<String, Value>,
    /// Users whose mailbox an Exchange application access policy keeps from the operator's app:
    /// Graph answers 403 ErrorAccessDenied for them.
    pub denied_mailboxes: BTreeSet<String>,
    /// Until this instant the app's permissions are still propagating after consent: tokens
    /// issued meanwhile carry no roles.
    pub permissions_propagate_at: Option<std::time::Instant>,
    /// The application permissions an administrator granted the operator's app: its tokens'
    /// `roles`. Every permission the simulator knows, unless a test grants fewer.
    pub granted: BTreeSet<String>,
}

fn timestamp(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Secs, true)
}

fn new_id(rng: &mut StdRng) -> String {
    Uuid::from_u64_pair(rng.random(), rng.random()).to_string()
}

fn tenant_rng(seed: u64, index: usize) -> StdRng {
    StdRng::seed_from_u64(seed ^ (index as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15))
}

/// Builds tenant `index` from `seed`, with `profile` or a random one drawn from the seed.
pub fn generate_tenant(
    seed: u64,
    index: usize,
    user_count: usize,
    profile: Option<Profile>,
    operator_app_id: &str,
) -> Tenant {
    let mut rng = tenant_rng(seed, index);
    let tenant_id = new_id(&mut rng);
    let drawn = Profile::random(&mut rng);
    let profile = profile.unwrap_or(drawn);
    let mut builder = Builder {
        rng,
        now: Utc::now(),
        domain: format!("customer{index:04}.onmicrosoft.com"),
        profile: profile.clone(),
        resources: BTreeMap::new(),
        users: Vec::new(),
        home: COUNTRIES[index % COUNTRIES.len()],
        operator_app_id: operator_app_id.to_owned(),
    };
    builder.build(user_count.max(MIN_USERS));
    Tenant {
        index,
        tenant_id,
        display_name: format!("Customer {index:04}"),
        domain: builder.domain,
        consented: true,
        denied_mailboxes: BTreeSet::new(),
        permissions_propagate_at: None,
        granted: crate::permissions::all(),
        profile,
        resources: builder.resources,
    }
}

struct Builder {
    rng: StdRng,
    now: DateTime<Utc>,
    domain: String,
    profile: Profile,
    resources: BTreeMap<String, Value>,
    /// (id, userPrincipalName, displayName) of each user, in order.
    users: Vec<(String, String, String)>,
    home: (&'static str, &'static str),
    /// The operator's (Picket's) multi-tenant app, whose service principal consent created.
    operator_app_id: String,
}

impl Builder {
    fn ago(&self, minutes: i64) -> String {
        timestamp(self.now - Duration::minutes(minutes))
    }

    fn collection(&mut self, path: &str) -> &mut Vec<Value> {
        let entry = self
            .resources
            .entry(path.to_owned())
            .or_insert_with(|| Value::Array(Vec::new()));
        match entry {
            Value::Array(items) => items,
            _ => unreachable!("{path} is a collection"),
        }
    }

    fn user(&self, number: usize) -> (String, String, String) {
        self.users[number].clone()
    }

    fn build(&mut self, user_count: usize) {
        // Collections exist, empty, even where the profile puts nothing in them.
        for collection in [
            "/identity/conditionalAccess/policies",
            "/identityProtection/riskyUsers",
            "/security/alerts_v2",
            "/api/machines",
            "/api/machineactions",
            "/auditLogs/signIns",
            "/auditLogs/directoryAudits",
            "/oauth2PermissionGrants",
            "/applications",
            "/servicePrincipals",
            "/groups",
            "/roleManagement/directory/roleEligibilityScheduleInstances",
        ] {
            self.collection(collection);
        }
        self.users(user_count);
        self.licences();
        self.domains();
        self.roles();
        self.policies();
        self.conditional_access();
        self.applications();
        self.logs();
        self.inbox_rules();
        for activity in self.profile.activities.clone() {
            self.activity(activity);
        }
    }

    fn users(&mut self, user_count: usize) {
        let domain = self.domain.clone();
        for number in 0..user_count {
            let id = new_id(&mut self.rng);
            let (upn, name) = match number {
                0 | 1 => (
                    format!("breakglass{}@{domain}", number + 1),
                    format!("Break Glass {}", number + 1),
                ),
                2 => (format!("admin@{domain}"), "IT Admin".to_owned()),
                _ => {
                    let first = FIRST_NAMES[self.rng.random_range(0..FIRST_NAMES.len())];
                    let last = LAST_NAMES[self.rng.random_range(0..LAST_NAMES.len())];
                    (
                        format!(
                            "{}.{}{number}@{domain}",
                            first.to_lowercase(),
                            last.to_lowercase()
                        ),
                        format!("{first} {last}"),
                    )
                }
            };
            let inactive = number == 4 && self.profile.has(Weakness::InactiveAdmin);
            let last_sign_in = if number < 2 {
                self.ago(60 * 24 * 120)
            } else if inactive {
                self.ago(60 * 24 * 200)
            } else {
                {
                    let minutes = self.rng.random_range(30..60 * 24 * 5);
                    self.ago(minutes)
                }
            };
            let synced = number == 5 && self.profile.has(Weakness::SyncedAdmin);
            let user = json!({
                "id": id,
                "displayName": name,
                "userPrincipalName": upn,
                "mail": upn,
                "accountEnabled": number < 6 || self.rng.random_bool(0.95),
                "userType": "Member",
                "usageLocation": self.home.0,
                "onPremisesSyncEnabled": if synced { Value::Bool(true) } else { Value::Null },
                "onPremisesImmutableId": if synced { Value::String(format!("{:x}", self.rng.random::<u64>())) } else { Value::Null },
                "signInSessionsValidFromDateTime": self.ago(60 * 24 * 30),
                "signInActivity": {
                    "lastSignInDateTime": last_sign_in,
                    "lastNonInteractiveSignInDateTime": last_sign_in,
                },
            });
            self.collection("/users").push(user);
            self.users.push((id, upn, name));
        }
    }

    fn licences(&mut self) {
        let (sku, sku_id, plans): (&str, &str, &[(&str, &str)]) = match self.profile.licence {
            Licence::Free => (
                "O365_BUSINESS_ESSENTIALS",
                "3b555118-da6a-4418-894f-7df1e2096870",
                &[
                    (
                        "EXCHANGE_S_STANDARD",
                        "9aaf7827-d63c-4b61-89c3-182f06f82e5c",
                    ),
                    ("SHAREPOINTSTANDARD", "c7699d2e-19aa-44de-8edf-1736da088ca1"),
                ],
            ),
            Licence::P1 => (
                "SPB",
                "cbdc14ab-d96c-4c30-b9f4-6ada7cdc1d46",
                &[
                    ("AAD_PREMIUM", "41781fb2-bc02-4b7c-bd55-b576c07bb09d"),
                    (
                        "EXCHANGE_S_STANDARD",
                        "9aaf7827-d63c-4b61-89c3-182f06f82e5c",
                    ),
                    ("MDE_SMB", "bfc1bbd9-981b-4f71-9b82-17c35fd0e2a4"),
                    ("INTUNE_A", "c1ec4a95-1f05-45b3-a911-aa3fa01094f5"),
                ],
            ),
            Licence::P2 => (
                "SPE_E5",
                "06ebc4ee-1bb5-47dd-8120-11324bc54e06",
                &[
                    ("AAD_PREMIUM", "41781fb2-bc02-4b7c-bd55-b576c07bb09d"),
                    ("AAD_PREMIUM_P2", "eec0eb4f-6444-4f95-aba0-50c24d67f998"),
                    (
                        "EXCHANGE_S_ENTERPRISE",
                        "efb87545-963c-4e0d-99df-69c6916d9eb0",
                    ),
                    ("WINDEFATP", "871d91ec-ec1a-452b-a83f-bd76c7d770ef"),
                ],
            ),
        };
        let users = self.users.len();
        let plans: Vec<Value> = plans
            .iter()
            .map(|(name, id)| {
                json!({"servicePlanId": id, "servicePlanName": name, "provisioningStatus": "Success", "appliesTo": "User"})
            })
            .collect();
        let item = json!({
            "id": format!("{}_{sku_id}", Uuid::new_v4()),
            "skuId": sku_id,
            "skuPartNumber": sku,
            "capabilityStatus": "Enabled",
            "appliesTo": "User",
            "consumedUnits": users,
            "prepaidUnits": {"enabled": users + 5, "suspended": 0, "warning": 0, "lockedOut": 0},
            "servicePlans": plans,
        });
        self.collection("/subscribedSkus").push(item);
    }

    fn domains(&mut self) {
        // Never set, the lifetime reads null, as Microsoft's example shows: the 90-day default.
        let validity = if self.profile.has(Weakness::PasswordsExpire) {
            Value::Null
        } else {
            json!(NEVER_EXPIRES)
        };
        let domain = self.domain.clone();
        let item = json!({
            "id": domain,
            "authenticationType": "Managed",
            "isAdminManaged": true,
            "isDefault": true,
            "isInitial": true,
            "isRoot": true,
            "isVerified": true,
            "passwordNotificationWindowInDays": 14,
            "passwordValidityPeriodInDays": validity,
            "supportedServices": ["Email", "OfficeCommunicationsOnline"],
        });
        self.collection("/domains").push(item);
    }

    fn assign_role(&mut self, user: usize, role: &str) -> String {
        let principal = self.users[user].0.clone();
        self.assign_role_to(&principal, role, &user.to_string())
    }

    /// Assigns `role` tenant-wide to the principal with id `principal`.
    fn assign_role_to(&mut self, principal: &str, role: &str, suffix: &str) -> String {
        let id = format!("{}-{suffix}", new_id(&mut self.rng));
        let item = json!({
            "id": id,
            "principalId": principal,
            "roleDefinitionId": role,
            "directoryScopeId": "/",
        });
        self.collection("/roleManagement/directory/roleAssignments")
            .push(item);
        id
    }

    fn roles(&mut self) {
        for user in [0, 1, 2] {
            self.assign_role(user, GLOBAL_ADMINISTRATOR);
        }
        self.assign_role(3, APPLICATION_ADMINISTRATOR);
        self.assign_role(4, USER_ADMINISTRATOR);
        self.assign_role(5, EXCHANGE_ADMINISTRATOR);
        if self.profile.has(Weakness::TooManyGlobalAdmins) {
            for user in 6..12 {
                self.assign_role(user, GLOBAL_ADMINISTRATOR);
            }
        }
    }

    fn policies(&mut self) {
        let p = self.profile.clone();
        let consent_policies: Vec<&str> = if p.has(Weakness::UserConsentAllowed) {
            vec!["ManagePermissionGrantsForSelf.microsoft-user-default-legacy"]
        } else {
            vec![
                "ManagePermissionGrantsForOwnedResource.microsoft-dynamically-managed-permissions-for-team",
            ]
        };
        self.resources.insert(
            "/policies/authorizationPolicy".into(),
            json!({
                "id": "authorizationPolicy",
                "displayName": "Authorization Policy",
                "description": "Used to manage authorization related settings across the company.",
                "allowInvitesFrom": if p.has(Weakness::GuestInvitesOpen) { "everyone" } else { "adminsAndGuestInviters" },
                "allowedToSignUpEmailBasedSubscriptions": p.has(Weakness::SelfServiceSignUpAllowed),
                "allowedToUseSSPR": true,
                "allowEmailVerifiedUsersToJoinOrganization": p.has(Weakness::EmailVerifiedJoinAllowed),
                "allowUserConsentForRiskyApps": false,
                // Never set reads null, as Microsoft's example shows; allowed is an explicit false.
                "blockMsolPowerShell": if p.has(Weakness::MsolPowerShellAllowed) { json!(false) } else { Value::Null },
                "guestUserRoleId": if p.has(Weakness::GuestAccessOpen) { MEMBER_LIKE_GUEST_ROLE } else { RESTRICTED_GUEST_ROLE },
                "defaultUserRolePermissions": {
                    "allowedToCreateApps": p.has(Weakness::UsersCanRegisterApps),
                    "allowedToCreateSecurityGroups": false,
                    "allowedToCreateTenants": p.has(Weakness::UsersCanCreateTenants),
                    "allowedToReadBitlockerKeysForOwnedDevice": true,
                    "allowedToReadOtherUsers": true,
                    "permissionGrantPoliciesAssigned": consent_policies,
                },
            }),
        );
        self.resources.insert(
            "/policies/authenticationMethodsPolicy".into(),
            json!({
                "id": "authenticationMethodsPolicy",
                "displayName": "Authentication Methods Policy",
                "description": "The tenant-wide policy that controls which authentication methods are allowed in the tenant, authentication method registration requirements, and self-service password reset settings",
                "lastModifiedDateTime": self.ago(60 * 24 * 40),
                "policyVersion": "1.5",
                "policyMigrationState": if p.has(Weakness::AuthMethodsMigrationIncomplete) { "migrationInProgress" } else { "migrationComplete" },
                "registrationEnforcement": {"authenticationMethodsRegistrationCampaign": {"snoozeDurationInDays": 1, "state": "default", "excludeTargets": [], "includeTargets": [{"id": "all_users", "targetType": "group", "targetedAuthenticationMethod": "microsoftAuthenticator"}]}},
            }),
        );
        let all_users =
            json!([{"targetType": "group", "id": "all_users", "isRegistrationRequired": false}]);
        let state = |enabled: bool| if enabled { "enabled" } else { "disabled" };
        let context = json!({
            "state": state(!p.has(Weakness::AuthenticatorWithoutContext)),
            "includeTarget": {"targetType": "group", "id": "all_users"},
            "excludeTarget": {"targetType": "group", "id": "00000000-0000-0000-0000-000000000000"},
        });
        let configurations = vec![
            json!({"@odata.type": "#microsoft.graph.microsoftAuthenticatorAuthenticationMethodConfiguration", "id": "MicrosoftAuthenticator", "state": "enabled", "isSoftwareOathEnabled": false, "includeTargets": all_users, "excludeTargets": [],
                "featureSettings": {"displayAppInformationRequiredState": context, "displayLocationInformationRequiredState": context}}),
            json!({"@odata.type": "#microsoft.graph.fido2AuthenticationMethodConfiguration", "id": "Fido2", "state": "enabled", "isAttestationEnforced": true, "isSelfServiceRegistrationAllowed": true, "includeTargets": all_users, "excludeTargets": []}),
            json!({"@odata.type": "#microsoft.graph.smsAuthenticationMethodConfiguration", "id": "Sms", "state": state(p.has(Weakness::SmsSignInEnabled)), "includeTargets": all_users, "excludeTargets": []}),
            json!({"@odata.type": "#microsoft.graph.voiceAuthenticationMethodConfiguration", "id": "Voice", "state": state(p.has(Weakness::VoiceCallEnabled)), "isOfficePhoneAllowed": false, "includeTargets": all_users, "excludeTargets": []}),
            json!({"@odata.type": "#microsoft.graph.emailAuthenticationMethodConfiguration", "id": "Email", "state": state(p.has(Weakness::EmailOtpEnabled)), "allowExternalIdToUseEmailOtp": "default", "includeTargets": all_users, "excludeTargets": []}),
            json!({"@odata.type": "#microsoft.graph.temporaryAccessPassAuthenticationMethodConfiguration", "id": "TemporaryAccessPass", "state": "enabled", "defaultLifetimeInMinutes": 60, "isUsableOnce": true, "includeTargets": all_users, "excludeTargets": []}),
        ];
        self.resources.insert(
            "/policies/authenticationMethodsPolicy/authenticationMethodConfigurations".into(),
            Value::Array(configurations),
        );
        let reviewer = self.users[2].0.clone();
        self.resources.insert(
            "/policies/adminConsentRequestPolicy".into(),
            json!({
                "isEnabled": !p.has(Weakness::AdminConsentWorkflowOff),
                "notifyReviewers": true,
                "remindersEnabled": true,
                "requestDurationInDays": 30,
                "version": 1,
                "reviewers": [{"query": format!("/users/{reviewer}"), "queryType": "MicrosoftGraph", "queryRoot": null}],
            }),
        );
        self.resources.insert(
            "/policies/identitySecurityDefaultsEnforcementPolicy".into(),
            json!({
                "id": "00000000-0000-0000-0000-000000000005",
                "displayName": "Security Defaults",
                "description": "Security defaults is a set of basic identity security mechanisms recommended by Microsoft.",
                "isEnabled": false,
            }),
        );
        let mut password_restrictions = Vec::new();
        if !p.has(Weakness::AppPasswordAdditionAllowed) {
            password_restrictions.push(json!({"restrictionType": "passwordAddition", "state": "enabled", "maxLifetime": null, "restrictForAppsCreatedAfterDateTime": "2024-01-01T00:00:00Z"}));
        }
        if !p.has(Weakness::AppSecretLifetimeUnlimited) {
            password_restrictions.push(json!({"restrictionType": "passwordLifetime", "state": "enabled", "maxLifetime": "P180D", "restrictForAppsCreatedAfterDateTime": "2024-01-01T00:00:00Z"}));
        }
        self.resources.insert(
            "/policies/defaultAppManagementPolicy".into(),
            json!({
                "id": "00000000-0000-0000-0000-000000000000",
                "displayName": "Default app management tenant policy",
                "description": "Default tenant policy that enforces app management restrictions on applications and service principals.",
                "isEnabled": true,
                "applicationRestrictions": {"passwordCredentials": password_restrictions, "keyCredentials": []},
                "servicePrincipalRestrictions": {"passwordCredentials": [], "keyCredentials": []},
            }),
        );
    }

    fn ca_policy(
        &mut self,
        name: &str,
        state: &str,
        conditions: Value,
        grant: Value,
        exclude_break_glass: bool,
    ) {
        let id = new_id(&mut self.rng);
        let excluded: Vec<String> = if exclude_break_glass {
            vec![self.users[0].0.clone(), self.users[1].0.clone()]
        } else {
            Vec::new()
        };
        let mut conditions = conditions;
        let users = conditions["users"].take();
        conditions["users"] = json!({
            "includeUsers": users.get("includeUsers").cloned().unwrap_or(json!([])),
            "excludeUsers": excluded,
            "includeGroups": [],
            "excludeGroups": [],
            "includeRoles": users.get("includeRoles").cloned().unwrap_or(json!([])),
            "excludeRoles": [],
        });
        if conditions.get("applications").is_none() {
            conditions["applications"] = json!({"includeApplications": ["All"], "excludeApplications": [], "includeUserActions": []});
        }
        for (key, default) in [
            ("clientAppTypes", json!(["all"])),
            ("userRiskLevels", json!([])),
            ("signInRiskLevels", json!([])),
        ] {
            if conditions.get(key).is_none() {
                conditions[key] = default;
            }
        }
        let created = self.ago(60 * 24 * 90);
        let item = json!({
            "id": id,
            "displayName": name,
            "createdDateTime": created,
            "modifiedDateTime": created,
            "state": state,
            "conditions": conditions,
            "grantControls": grant,
            "sessionControls": null,
        });
        self.collection("/identity/conditionalAccess/policies")
            .push(item);
    }

    fn conditional_access(&mut self) {
        let p = self.profile.clone();
        let block = json!({"operator": "OR", "builtInControls": ["block"], "customAuthenticationFactors": [], "termsOfUse": []});
        let mfa = json!({"operator": "OR", "builtInControls": ["mfa"], "customAuthenticationFactors": [], "termsOfUse": []});
        let everyone = json!({"includeUsers": ["All"]});
        if !p.has(Weakness::NoLegacyAuthBlock) {
            self.ca_policy(
                "Block legacy authentication",
                "enabled",
                json!({"users": everyone, "clientAppTypes": ["exchangeActiveSync", "other"]}),
                block.clone(),
                true,
            );
        }
        if !p.has(Weakness::NoMfaForAllUsers) {
            self.ca_policy(
                "Require MFA for all users",
                "enabled",
                json!({"users": everyone}),
                mfa.clone(),
                true,
            );
        }
        if !p.has(Weakness::NoPhishingResistantMfaForAdmins) {
            self.ca_policy(
                "Require phishing-resistant MFA for administrators",
                "enabled",
                json!({"users": {"includeRoles": PRIVILEGED_ROLES}}),
                json!({"operator": "OR", "builtInControls": [], "authenticationStrength": {
                    "id": "00000000-0000-0000-0000-000000000004",
                    "displayName": "Phishing-resistant MFA",
                    "policyType": "builtIn",
                    "allowedCombinations": ["windowsHelloForBusiness", "fido2", "x509CertificateMultiFactor"],
                }}),
                true,
            );
        }
        if !p.has(Weakness::NoHighRiskUserBlock) {
            self.ca_policy(
                "Block high-risk users",
                "enabled",
                json!({"users": everyone, "userRiskLevels": ["high"]}),
                block.clone(),
                true,
            );
        }
        if !p.has(Weakness::NoHighRiskSignInBlock) {
            self.ca_policy(
                "Block high-risk sign-ins",
                "enabled",
                json!({"users": everyone, "signInRiskLevels": ["high"]}),
                block.clone(),
                true,
            );
        }
        if !p.has(Weakness::NoDeviceCodeFlowBlock) {
            self.ca_policy(
                "Block device code flow",
                "enabled",
                json!({"users": everyone, "authenticationFlows": {"transferMethods": "deviceCodeFlow"}}),
                block,
                true,
            );
        }
        self.ca_policy(
            "Require MFA for Azure management (pilot)",
            "enabledForReportingButNotEnforced",
            json!({"users": everyone, "applications": {"includeApplications": ["797f4846-ba00-4fd7-ba43-dac1f8f63013"], "excludeApplications": [], "includeUserActions": []}}),
            mfa,
            !p.has(Weakness::BreakGlassNotExcluded),
        );
    }

    fn password_credential(&mut self, name: &str, age_days: i64, lifetime_days: i64) -> Value {
        let start = self.now - Duration::days(age_days);
        json!({
            "keyId": new_id(&mut self.rng),
            "displayName": name,
            "customKeyIdentifier": null,
            "hint": format!("{:03x}", self.rng.random_range(0..4096)),
            "secretText": null,
            "startDateTime": timestamp(start),
            "endDateTime": timestamp(start + Duration::days(lifetime_days)),
        })
    }

    fn sign_in(
        &mut self,
        user: usize,
        minutes_ago: i64,
        ip: &str,
        country: (&str, &str),
        client_app: &str,
        error: (u32, &str, &str),
    ) {
        let (user_id, upn, name) = self.user(user);
        let (error_code, failure_reason, details) = error;
        let record = json!({
            "id": new_id(&mut self.rng),
            "createdDateTime": self.ago(minutes_ago),
            "userDisplayName": name,
            "userPrincipalName": upn,
            "userId": user_id,
            "appId": "00000002-0000-0ff1-ce00-000000000000",
            "appDisplayName": "Office 365 Exchange Online",
            "ipAddress": ip,
            "clientAppUsed": client_app,
            "conditionalAccessStatus": "notApplied",
            "isInteractive": true,
            "riskLevelDuringSignIn": "none",
            "riskState": "none",
            "status": {
                "errorCode": error_code,
                "failureReason": if error_code == 0 { Value::Null } else { Value::String(failure_reason.to_owned()) },
                "additionalDetails": if details.is_empty() { Value::Null } else { Value::String(details.to_owned()) },
            },
            "location": {"city": country.1, "state": "", "countryOrRegion": country.0},
        });
        self.collection("/auditLogs/signIns").push(record);
    }

    fn audit(
        &mut self,
        minutes_ago: i64,
        category: &str,
        activity: &str,
        initiated_by: Value,
        targets: Value,
    ) {
        let record = json!({
            "id": format!("Directory_{}", new_id(&mut self.rng)),
            "category": category,
            "correlationId": new_id(&mut self.rng),
            "result": "success",
            "resultReason": "",
            "activityDisplayName": activity,
            "activityDateTime": self.ago(minutes_ago),
            "loggedByService": "Core Directory",
            "operationType": "Update",
            "initiatedBy": initiated_by,
            "targetResources": targets,
            "additionalDetails": [],
        });
        self.collection("/auditLogs/directoryAudits").push(record);
    }

    fn by_admin(&self) -> Value {
        let (id, upn, _) = self.user(2);
        json!({"app": null, "user": {"id": id, "displayName": "IT Admin", "userPrincipalName": upn, "ipAddress": "203.0.113.2"}})
    }

    fn logs(&mut self) {
        let home = self.home;
        for user in 2..self.users.len() {
            let ip = format!("203.0.113.{}", 10 + user % 200);
            self.sign_in(user, 60 * 24 * 2, &ip, home, "Browser", (0, "", ""));
            self.sign_in(
                user,
                30 + user as i64,
                &ip,
                home,
                "Mobile Apps and Desktop clients",
                (0, "", ""),
            );
        }
        let (id, upn, _) = self.user(6);
        let by = self.by_admin();
        self.audit(
            90,
            "UserManagement",
            "Update user",
            by,
            json!([{"id": id, "displayName": null, "type": "User", "userPrincipalName": upn, "modifiedProperties": []}]),
        );
    }

    fn inbox_rule(&mut self, user: usize, rule: Value) {
        let path = format!(
            "/users/{}/mailFolders/inbox/messageRules",
            self.users[user].0
        );
        let mut rule = rule;
        rule["id"] = Value::String(format!(
            "AQAAA{}=",
            Uuid::from_u64_pair(self.rng.random(), 0).simple()
        ));
        self.collection(&path).push(rule);
    }

    fn inbox_rules(&mut self) {
        self.inbox_rule(
            6,
            json!({"displayName": "Newsletters", "sequence": 1, "isEnabled": true, "hasError": false, "isReadOnly": false,
                "conditions": {"senderContains": ["newsletter"]},
                "actions": {"moveToFolder": "AAMkAGI2Newsletters", "stopProcessingRules": true}}),
        );
    }

    fn activity(&mut self, activity: Activity) {
        let home = self.home;
        let domain = self.domain.clone();
        match activity {
            Activity::InboxRuleForwardsExternally => self.inbox_rule(
                11,
                json!({"displayName": ".", "sequence": 2, "isEnabled": true, "hasError": false, "isReadOnly": false,
                    "conditions": {},
                    "actions": {"forwardTo": [{"emailAddress": {"name": "Backup", "address": "archive@exfil.example"}}], "stopProcessingRules": false}}),
            ),
            Activity::InboxRuleHidesMail => {
                let folder = well_known_folder_id(&self.users[12].0, crate::mailbox::RSS_FEEDS);
                self.inbox_rule(
                    12,
                    json!({"displayName": "..", "sequence": 1, "isEnabled": true, "hasError": false, "isReadOnly": false,
                        "conditions": {"subjectContains": ["invoice", "payment"]},
                        "actions": {"moveToFolder": folder, "markAsRead": true, "stopProcessingRules": true}}),
                );
            }
            Activity::MfaFatigue => {
                let ip = "198.51.100.7";
                for prompt in 0..11 {
                    self.sign_in(
                        7,
                        25 - prompt / 4,
                        ip,
                        home,
                        "Browser",
                        (
                            500121,
                            "Authentication failed during strong authentication request.",
                            "MFA denied; user declined the authentication",
                        ),
                    );
                }
                self.sign_in(7, 22, ip, home, "Browser", (0, "", ""));
            }
            Activity::PasswordSpray => {
                for (offset, user) in (8..14).enumerate() {
                    self.sign_in(
                        user,
                        50 - offset as i64,
                        "198.51.100.66",
                        ("RU", "Moscow"),
                        "Browser",
                        (
                            50126,
                            "Error validating credentials due to invalid username or password.",
                            "",
                        ),
                    );
                }
            }
            Activity::LegacyAuthSignIn => {
                self.sign_in(9, 15, "203.0.113.99", home, "IMAP4", (0, "", ""));
            }
            Activity::SignInFromNewCountry => {
                self.sign_in(
                    10,
                    12,
                    "198.51.100.10",
                    ("BR", "São Paulo"),
                    "Browser",
                    (0, "", ""),
                );
            }
            Activity::RiskyOAuthConsent => self.risky_oauth_consent(),
            Activity::AppPermissionGranted => self.app_permission_granted(),
            Activity::RoleAddedOutsidePim => {
                self.assign_role(14, GLOBAL_ADMINISTRATOR);
                let (id, upn, _) = self.user(14);
                let by = self.by_admin();
                self.audit(
                    40,
                    "RoleManagement",
                    "Add member to role",
                    by,
                    json!([{"id": id, "displayName": null, "type": "User", "userPrincipalName": upn, "modifiedProperties": [
                        {"displayName": "Role.DisplayName", "oldValue": null, "newValue": "\"Global Administrator\""},
                        {"displayName": "Role.TemplateId", "oldValue": null, "newValue": format!("\"{GLOBAL_ADMINISTRATOR}\"")}]}]),
                );
            }
            Activity::AppCredentialAdded => {
                let credential = self.password_credential("sync", 0, 90);
                let key_id = credential["keyId"].as_str().unwrap_or_default().to_owned();
                let app = &mut self.collection("/applications")[0];
                let (app_id, app_name) = (app["id"].clone(), app["displayName"].clone());
                if let Some(credentials) = app["passwordCredentials"].as_array_mut() {
                    credentials.push(credential);
                }
                let by = self.by_admin();
                self.audit(
                    20,
                    "ApplicationManagement",
                    "Update application – Certificates and secrets management ",
                    by,
                    json!([{"id": app_id, "displayName": app_name, "type": "Application", "modifiedProperties": [
                        {"displayName": "KeyDescription", "oldValue": "[]",
                         "newValue": format!("[\"[KeyIdentifier={key_id},KeyType=Password,KeyUsage=Verify,DisplayName=sync]\"]")}]}]),
                );
            }
            Activity::ConditionalAccessPolicyDisabled => {
                let by = self.by_admin();
                let policies = self.collection("/identity/conditionalAccess/policies");
                let target = policies
                    .iter_mut()
                    .find(|policy| policy["state"] == "enabled");
                let (activity, target) = match target {
                    Some(policy) => {
                        policy["state"] = json!("disabled");
                        let new_value = json!({"id": policy["id"], "displayName": policy["displayName"], "state": "disabled"}).to_string();
                        let old_value = json!({"id": policy["id"], "displayName": policy["displayName"], "state": "enabled"}).to_string();
                        (
                            "Update conditional access policy",
                            json!([{"id": policy["id"], "displayName": policy["displayName"], "type": "Policy", "modifiedProperties": [
                                {"displayName": "ConditionalAccessPolicy", "oldValue": old_value, "newValue": new_value}]}]),
                        )
                    }
                    None => (
                        "Delete conditional access policy",
                        json!([{"id": Uuid::from_u64_pair(7, 7).to_string(), "displayName": "Require MFA for all users", "type": "Policy", "modifiedProperties": []}]),
                    ),
                };
                self.audit(18, "Policy", activity, by, target);
            }
            Activity::HighRiskUser => {
                let (id, upn, name) = self.user(15);
                let at = self.ago(16);
                let item = json!({
                    "id": id,
                    "isDeleted": false,
                    "isProcessing": false,
                    "riskLastUpdatedDateTime": at,
                    "riskLevel": "high",
                    "riskState": "atRisk",
                    "riskDetail": "none",
                    "userDisplayName": name,
                    "userPrincipalName": upn,
                });
        self.collection("/identityProtection/riskyUsers").push(item);
            }
            Activity::FederationChanged => {
                let by = self.by_admin();
                self.audit(
                    28,
                    "DirectoryManagement",
                    "Set federation settings on domain",
                    by,
                    json!([{"id": null, "displayName": domain, "type": "Other", "modifiedProperties": [
                        {"displayName": "IssuerUri", "oldValue": null, "newValue": "\"http://sts.attacker.example/adfs/services/trust\""}]}]),
                );
            }
            Activity::DefenderDeviceAlert => {
                let machine = format!("{:040x}", self.rng.random::<u128>());
                let device = format!("laptop-{}.{domain}", self.users[3].2.to_lowercase().replace(' ', "-"));
                let item = json!({
                    "id": machine,
                    "computerDnsName": device,
                    "osPlatform": "Windows11",
                    "healthStatus": "Active",
                    "riskScore": "High",
                    "exposureLevel": "Medium",
                    "onboardingStatus": "Onboarded",
                    "lastSeen": self.ago(5),
                });
        self.collection("/api/machines").push(item);
                let at = self.ago(14);
                let item = json!({
                    "id": format!("da{}", Uuid::from_u64_pair(self.rng.random(), 2).simple()),
                    "providerAlertId": Uuid::from_u64_pair(self.rng.random(), 3).to_string(),
                    "incidentId": "42",
                    "status": "new",
                    "severity": "high",
                    "classification": null,
                    "determination": null,
                    "serviceSource": "microsoftDefenderForEndpoint",
                    "detectionSource": "antivirus",
                    "title": "Ransomware behavior detected in the file system",
                    "category": "Ransomware",
                    "createdDateTime": at,
                    "lastUpdateDateTime": at,
                    "evidence": [{
                        "@odata.type": "#microsoft.graph.security.deviceEvidence",
                        "createdDateTime": at,
                        "verdict": "suspicious",
                        "remediationStatus": "none",
                        "roles": [],
                        "mdeDeviceId": machine,
                        "deviceDnsName": device,
                        "osPlatform": "Windows11",
                        "healthStatus": "active",
                        "riskScore": "high",
                    }],
                });
        self.collection("/security/alerts_v2").push(item);
            }
        }
    }
}

/// The id Graph gives a user's well-known mail folder (stable per user and folder).
pub fn well_known_folder_id(user_id: &str, name: &str) -> String {
    format!("AAMkA{}{}", user_id.replace('-', ""), name)
}

impl Tenant {
    /// The `/organization` resource.
    pub fn organization(&self) -> Value {
        json!({
            "id": self.tenant_id,
            "displayName": self.display_name,
            "tenantType": "AAD",
            "verifiedDomains": [{
                "name": self.domain,
                "type": "Managed",
                "isDefault": true,
                "isInitial": true,
                "capabilities": "Email, OfficeCommunicationsOnline",
            }],
        })
    }

    pub fn licence(&self) -> Licence {
        self.profile.licence
    }
}
