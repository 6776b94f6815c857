//! What a tenant granted Picket's app, read from its tokens' `roles` before every scan and fix
//! and at onboarding: the catalogue's permissions it lacks, and the sources those keep the scan
//! from, which are then not read at all.

use std::collections::BTreeSet;

use crate::checks::catalogue::Catalogue;
use crate::checks::permissions::{Api, Granted};
use crate::checks::snapshot::{Snapshot, Source, with_dependencies};
use crate::graph::{GraphClient, GraphError};

/// Service plans of Defender for Endpoint: only their tenants have its API.
pub const DEFENDER: [&str; 2] = ["WINDEFATP", "MDE_SMB"];

/// The APIs whose tokens a tenant holding `service_plans` can get.
pub fn apis(service_plans: &BTreeSet<String>) -> Vec<Api> {
    let defender = DEFENDER.iter().any(|plan| service_plans.contains(*plan));
    if defender {
        vec![Api::Graph, Api::Defender]
    } else {
        vec![Api::Graph]
    }
}

/// The permissions of `apis` that `microsoft_tenant_id` granted. A Graph token that cannot be had
/// is an error; a Defender one leaves Defender's permissions unknown (its API answers for them).
pub async fn granted(
    graph: &GraphClient,
    catalogue: &Catalogue,
    microsoft_tenant_id: &str,
    apis: &[Api],
) -> Result<Granted, GraphError> {
    let permissions = catalogue.permissions();
    let needed = catalogue.needed_permissions();
    let mut granted = Granted::default();
    for api in apis {
        let wanted: Vec<String> = needed
            .iter()
            .filter(|name| permissions.api_of(name) == Some(*api))
            .cloned()
            .collect();
        let complete = |roles: &BTreeSet<String>| {
            let held = Granted::default().with(*api, Some(roles.clone()));
            permissions.missing(&wanted, &held).is_empty()
        };
        let roles = match graph
            .granted_roles(microsoft_tenant_id, *api, complete)
            .await
        {
            Ok(roles) => roles,
            Err(error) if *api == Api::Graph => return Err(error),
            Err(error) => {
                tracing::info!(tenant = microsoft_tenant_id, ?api, %error, "no token to read the permissions granted");
                None
            }
        };
        granted = granted.with(*api, roles);
    }
    Ok(granted)
}

/// The catalogue's permissions `granted` lacks.
pub fn missing(catalogue: &Catalogue, granted: &Granted) -> Vec<String> {
    let needed = catalogue.needed_permissions();
    catalogue
        .permissions()
        .missing(&needed, granted)
        .into_iter()
        .map(str::to_owned)
        .collect()
}

/// Marks in `snapshot` the sources (and what they are read from) that `granted` does not allow.
pub fn deny(
    snapshot: &mut Snapshot,
    catalogue: &Catalogue,
    granted: &Granted,
    sources: &BTreeSet<Source>,
) {
    let permissions = catalogue.permissions();
    for source in with_dependencies(sources) {
        let missing = permissions.missing(permissions.source(source), granted);
        if !missing.is_empty() {
            snapshot
                .denied
                .insert(source, missing.into_iter().map(str::to_owned).collect());
        }
    }
}
