//! What a simulated tenant looks like: its licences, the misconfigurations it has and the
//! suspicious activity in its logs. A hardened profile passes every check Picket runs; each
//! weakness makes one or more checks fail, and each activity makes one detection fire.

use rand::Rng;

/// The Microsoft 365 licences of a tenant, which decide what its Graph answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Licence {
    /// Microsoft 365 Business Basic: no Entra ID Premium, so no conditional access or sign-in logs.
    Free,
    /// Microsoft 365 Business Premium: Entra ID P1 and Defender for Business.
    P1,
    /// Microsoft 365 E5: Entra ID P1 and P2 and Defender for Endpoint P2.
    P2,
}

/// A misconfiguration of a tenant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Weakness {
    NoLegacyAuthBlock,
    NoMfaForAllUsers,
    NoPhishingResistantMfaForAdmins,
    NoHighRiskUserBlock,
    NoHighRiskSignInBlock,
    NoDeviceCodeFlowBlock,
    BreakGlassNotExcluded,
    SmsSignInEnabled,
    VoiceCallEnabled,
    EmailOtpEnabled,
    AuthenticatorWithoutContext,
    AuthMethodsMigrationIncomplete,
    PasswordsExpire,
    TooManyGlobalAdmins,
    SyncedAdmin,
    InactiveAdmin,
    UsersCanRegisterApps,
    UserConsentAllowed,
    AdminConsentWorkflowOff,
    UsersCanCreateTenants,
    MsolPowerShellAllowed,
    AppPasswordAdditionAllowed,
    AppSecretLifetimeUnlimited,
    LongLivedAppSecret,
    GuestAccessOpen,
    GuestInvitesOpen,
    EmailVerifiedJoinAllowed,
    SelfServiceSignUpAllowed,
    /// The operator's app holds no role that lets it change administrators.
    OperatorWithoutAdminRole,
}

impl Weakness {
    pub const ALL: [Weakness; 29] = [
        Weakness::NoLegacyAuthBlock,
        Weakness::NoMfaForAllUsers,
        Weakness::NoPhishingResistantMfaForAdmins,
        Weakness::NoHighRiskUserBlock,
        Weakness::NoHighRiskSignInBlock,
        Weakness::NoDeviceCodeFlowBlock,
        Weakness::BreakGlassNotExcluded,
        Weakness::SmsSignInEnabled,
        Weakness::VoiceCallEnabled,
        Weakness::EmailOtpEnabled,
        Weakness::AuthenticatorWithoutContext,
        Weakness::AuthMethodsMigrationIncomplete,
        Weakness::PasswordsExpire,
        Weakness::TooManyGlobalAdmins,
        Weakness::SyncedAdmin,
        Weakness::InactiveAdmin,
        Weakness::UsersCanRegisterApps,
        Weakness::UserConsentAllowed,
        Weakness::AdminConsentWorkflowOff,
        Weakness::UsersCanCreateTenants,
        Weakness::MsolPowerShellAllowed,
        Weakness::AppPasswordAdditionAllowed,
        Weakness::AppSecretLifetimeUnlimited,
        Weakness::LongLivedAppSecret,
        Weakness::GuestAccessOpen,
        Weakness::GuestInvitesOpen,
        Weakness::EmailVerifiedJoinAllowed,
        Weakness::SelfServiceSignUpAllowed,
        Weakness::OperatorWithoutAdminRole,
    ];
}

/// Suspicious activity in a tenant's logs or state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Activity {
    /// An inbox rule forwarding mail to an external address.
    InboxRuleForwardsExternally,
    /// An inbox rule moving mail about invoices to RSS Feeds, marked as read.
    InboxRuleHidesMail,
    /// Eleven denied MFA prompts within three minutes, then a success from the same IP.
    MfaFatigue,
    /// Six accounts failing their password from one IP within ten minutes.
    PasswordSpray,
    /// A successful IMAP sign-in.
    LegacyAuthSignIn,
    /// A user consented to an unverified app asking for offline access to mail and files.
    RiskyOAuthConsent,
    /// An administrator granted an unverified app application permissions to every mailbox.
    AppPermissionGranted,
    /// A Global Administrator added directly, not through PIM.
    RoleAddedOutsidePim,
    /// A new client secret on an application.
    AppCredentialAdded,
    /// A conditional access policy switched off.
    ConditionalAccessPolicyDisabled,
    /// A successful sign-in from a country the user never signed in from.
    SignInFromNewCountry,
    /// Identity Protection flags a user as high risk.
    HighRiskUser,
    /// A domain switched to federated authentication.
    FederationChanged,
    /// Defender raises a high-severity alert on a device.
    DefenderDeviceAlert,
}

impl Activity {
    pub const ALL: [Activity; 14] = [
        Activity::InboxRuleForwardsExternally,
        Activity::InboxRuleHidesMail,
        Activity::MfaFatigue,
        Activity::PasswordSpray,
        Activity::LegacyAuthSignIn,
        Activity::RiskyOAuthConsent,
        Activity::AppPermissionGranted,
        Activity::RoleAddedOutsidePim,
        Activity::AppCredentialAdded,
        Activity::ConditionalAccessPolicyDisabled,
        Activity::SignInFromNewCountry,
        Activity::HighRiskUser,
        Activity::FederationChanged,
        Activity::DefenderDeviceAlert,
    ];
}

/// Licences, weaknesses and activity of one tenant.
#[derive(Debug, Clone, PartialEq)]
pub struct Profile {
    pub licence: Licence,
    pub weaknesses: Vec<Weakness>,
    pub activities: Vec<Activity>,
}

impl Profile {
    /// Every recommended setting in place and quiet logs.
    pub fn hardened(licence: Licence) -> Profile {
        Profile {
            licence,
            weaknesses: Vec::new(),
            activities: Vec::new(),
        }
    }

    /// Every weakness and every suspicious activity.
    pub fn weak(licence: Licence) -> Profile {
        Profile {
            licence,
            weaknesses: Weakness::ALL.to_vec(),
            activities: Activity::ALL.to_vec(),
        }
    }

    /// A plausible small business: mostly P1, some weaknesses, now and then an incident.
    pub fn random(rng: &mut impl Rng) -> Profile {
        let licence = match rng.random_range(0..10) {
            0 => Licence::Free,
            1..=7 => Licence::P1,
            _ => Licence::P2,
        };
        Profile {
            licence,
            weaknesses: Weakness::ALL
                .into_iter()
                .filter(|_| rng.random_bool(0.35))
                .collect(),
            activities: Activity::ALL
                .into_iter()
                .filter(|_| rng.random_bool(0.1))
                .collect(),
        }
    }

    pub fn has(&self, weakness: Weakness) -> bool {
        self.weaknesses.contains(&weakness)
    }
}
