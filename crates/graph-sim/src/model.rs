//! Synthetic tenants, generated from a seed so every run sees the same directory.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};
use uuid::Uuid;

const FIRST_NAMES: [&str; 12] = [
    "Alice", "Bruno", "Chen", "Dana", "Emeka", "Fatima", "Goran", "Hana", "Ivan", "Julia", "Kofi",
    "Lena",
];
const LAST_NAMES: [&str; 10] = [
    "Adams", "Berg", "Costa", "Dubois", "Eze", "Fischer", "Garcia", "Haddad", "Ito", "Jensen",
];

/// One simulated Entra ID tenant.
#[derive(Debug, Clone)]
pub struct Tenant {
    pub tenant_id: String,
    pub display_name: String,
    pub domain: String,
    /// Whether an admin consented to the operator's app; without it no token is issued.
    pub consented: bool,
    pub users: Vec<Value>,
    pub subscribed_skus: Vec<Value>,
}

/// Builds a tenant's users and licences from `seed` and its index.
pub fn generate_tenant(seed: u64, index: usize, user_count: usize) -> Tenant {
    let mut rng = StdRng::seed_from_u64(seed ^ (index as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15));
    let tenant_id = Uuid::from_u64_pair(rng.random(), rng.random()).to_string();
    let display_name = format!("Customer {index:04}");
    let domain = format!("customer{index:04}.onmicrosoft.com");
    let users: Vec<Value> = (0..user_count)
        .map(|number| {
            let first = FIRST_NAMES[rng.random_range(0..FIRST_NAMES.len())];
            let last = LAST_NAMES[rng.random_range(0..LAST_NAMES.len())];
            json!({
                "id": Uuid::from_u64_pair(rng.random(), rng.random()).to_string(),
                "displayName": format!("{first} {last}"),
                "userPrincipalName": format!("{}.{}{number}@{domain}", first.to_lowercase(), last.to_lowercase()),
                "accountEnabled": rng.random_bool(0.95),
                "userType": "Member",
                "onPremisesSyncEnabled": Value::Null,
            })
        })
        .collect();
    let subscribed_skus = vec![json!({
        "id": format!("{tenant_id}_078d2b04-f1bd-4111-bbd4-b4b1b354cef4"),
        "skuId": "078d2b04-f1bd-4111-bbd4-b4b1b354cef4",
        "skuPartNumber": "AAD_PREMIUM",
        "capabilityStatus": "Enabled",
        "consumedUnits": user_count,
        "prepaidUnits": {"enabled": user_count + 5, "suspended": 0, "warning": 0},
        "servicePlans": [{"servicePlanId": "41781fb2-bc02-4b7c-bd55-b576c07bb09d", "servicePlanName": "AAD_PREMIUM", "provisioningStatus": "Success", "appliesTo": "User"}],
    })];
    Tenant {
        tenant_id,
        display_name,
        domain,
        consented: true,
        users,
        subscribed_skus,
    }
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
}
