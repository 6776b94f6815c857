//! The scanner and graph-sim held to an oracle we did not write: Microsoft's published Graph v1.0
//! model (the `msgraph-sdk` package, generated from Graph's OpenAPI description). Full scans of a
//! weak and a hardened tenant run against graph-sim; then every request the scanner sent (path,
//! method, query options), every write the catalogue declares, every property a check reads or a
//! fix writes, and every property graph-sim answers for those settings objects and in the items
//! of the collections the scanner read, and every property (nested too) of the bodies fixes send,
//! must exist in the model (`scripts/graph-contract.py`).

mod common;

use std::io::Write as _;
use std::process::{Command, Stdio};

use common::directory::role_holders;
use common::harness;
use graph_sim::{Licence, Profile};
use picket_proto::tenants::v1 as tenants;
use scanner::checks::catalogue::Catalogue;
use scanner::checks::rules::ca_template;
use serde_json::{Value, json};

const CHECKER: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../scripts/graph-contract.py"
);
const METHOD_CONFIGURATIONS: &str =
    "/policies/authenticationMethodsPolicy/authenticationMethodConfigurations";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_the_scanner_asks_and_graph_sim_answers_is_in_microsofts_model() {
    let mut harness = harness().await;
    let mut tenants = Vec::new();
    let mut tenant_ids = Vec::new();
    for (index, profile) in [Profile::weak(Licence::P2), Profile::hardened(Licence::P2)]
        .into_iter()
        .enumerate()
    {
        let microsoft_tenant = harness.sim.tenant_ids()[index].clone();
        harness.sim.reset_tenant(&microsoft_tenant, profile);
        // Roles held by a group and by apps: the group's members and expanded principals are read.
        role_holders(&harness.sim, &microsoft_tenant);
        let tenant_id = harness
            .connect("p1", &microsoft_tenant, tenants::SubscriptionPlan::Premium)
            .await;
        harness.settled_scans("p1", &tenant_id).await;
        tenants.push(microsoft_tenant);
        tenant_ids.push(tenant_id);
    }
    // Monitoring polls read users by delta query: a first round, then one from its link.
    for _ in 0..2 {
        harness
            .scan_now("p1", &tenant_ids[0], tenants::ScanKind::Monitoring)
            .await;
    }

    let requests: Vec<Value> = harness
        .sim
        .requests()
        .into_iter()
        .map(|request| json!({"method": request.method, "path": request.path, "query": request.query}))
        .collect();
    let catalogue = Catalogue::builtin().expect("the catalogue");
    let writes: Vec<&String> = catalogue
        .checks()
        .iter()
        .flat_map(|check| &check.fix.writes)
        .collect();
    let settings: Vec<Value> = catalogue
        .checks()
        .iter()
        .filter_map(|check| check.setting.as_ref())
        .map(|setting| {
            let mut pointers: Vec<&str> = setting
                .conditions
                .iter()
                .map(|condition| condition.pointer.as_str())
                .collect();
            pointers.extend(setting.only_when.iter().map(|only| only.pointer.as_str()));
            json!({"resource": setting.resource, "odata_type": setting.odata_type, "pointers": pointers})
        })
        .collect();
    // What graph-sim answers for each settings object, in both tenants.
    let mut objects = Vec::new();
    for tenant in &tenants {
        for setting in catalogue
            .checks()
            .iter()
            .filter_map(|check| check.setting.as_ref())
        {
            let object = match setting.resource.strip_prefix(METHOD_CONFIGURATIONS) {
                Some(method) => harness
                    .sim
                    .resource(tenant, METHOD_CONFIGURATIONS)
                    .and_then(|all| {
                        all.as_array()?
                            .iter()
                            .find(|item| item["id"] == method.trim_start_matches('/'))
                            .cloned()
                    }),
                None => harness.sim.resource(tenant, &setting.resource),
            }
            .expect("graph-sim holds the settings object");
            objects.push(json!({
                "resource": setting.resource,
                "odata_type": object.get("@odata.type").cloned().unwrap_or(Value::Null),
                "object": object,
            }));
        }
    }
    // And the items of every collection the scanner read.
    let read: std::collections::BTreeSet<String> = harness
        .sim
        .requests()
        .into_iter()
        .filter(|request| request.method == "GET")
        .filter_map(|request| request.path.strip_prefix("/v1.0").map(str::to_owned))
        .collect();
    for tenant in &tenants {
        for path in &read {
            let Some(Value::Array(items)) = harness.sim.resource(tenant, path) else {
                continue;
            };
            for item in items {
                objects.push(json!({
                    "resource": path,
                    "odata_type": item.get("@odata.type").cloned().unwrap_or(Value::Null),
                    "object": item,
                }));
            }
        }
    }
    // What fixes send: each conditional access template, and each setting's body.
    let mut bodies: Vec<Value> = catalogue
        .checks()
        .iter()
        .filter_map(|check| check.fix.template.as_deref())
        .map(|template| {
            let body = ca_template(template, &["break-glass-id".to_owned()])
                .expect("the catalogue's templates exist");
            json!({"resource": "/identity/conditionalAccess/policies/{id}", "odata_type": null, "body": body})
        })
        .collect();
    for setting in catalogue
        .checks()
        .iter()
        .filter_map(|check| check.setting.as_ref())
    {
        let mut body = json!({});
        for condition in &setting.conditions {
            let mut at = &mut body;
            for part in condition.pointer.trim_start_matches('/').split('/') {
                at = &mut at[part];
            }
            *at = condition.desired.clone();
        }
        bodies.push(
            json!({"resource": setting.resource, "odata_type": setting.odata_type, "body": body}),
        );
    }
    let contract = json!({
        "requests": requests,
        "writes": writes,
        "settings": settings,
        "objects": objects,
        "bodies": bodies,
    });

    let (passed, report) = check(&contract);
    eprintln!("{report}");
    assert!(passed, "outside Microsoft's model:\n{report}");
    harness.finish().await;
}

/// Runs the checker over `contract`: whether it passed, and what it printed.
fn check(contract: &Value) -> (bool, String) {
    let mut checker = Command::new("python3")
        .arg(CHECKER)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 runs the checker");
    checker
        .stdin
        .take()
        .expect("stdin")
        .write_all(contract.to_string().as_bytes())
        .expect("the contract is written");
    let output = checker.wait_with_output().expect("the checker ends");
    (
        output.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ),
    )
}

/// The checker has teeth: a path, a query option, a property and an answer the model lacks are
/// each named.
#[test]
fn the_checker_names_what_the_model_lacks() {
    let (passed, report) = check(&json!({
        "requests": [
            {"method": "GET", "path": "/v1.0/users/ada@contoso.com/mailboxSettingz", "query": {}},
            {"method": "GET", "path": "/v1.0/policies/authorizationPolicy", "query": {"$search": "x"}},
            {"method": "POST", "path": "/v1.0/policies/authorizationPolicy", "query": {}},
        ],
        "writes": ["PATCH /policies/noSuchPolicy"],
        "settings": [{
            "resource": "/policies/authorizationPolicy",
            "odata_type": null,
            "pointers": ["/defaultUserRolePermissions/allowedToCreateAppz"],
        }],
        "objects": [{
            "resource": "/domains",
            "odata_type": null,
            "object": {"id": "contoso.com", "passwordValidityPeriodInDayz": 90},
        }],
        "bodies": [{
            "resource": "/identity/conditionalAccess/policies/{id}",
            "odata_type": null,
            "body": {"conditions": {"users": {"includeUserz": ["All"]}}},
        }],
    }));
    assert!(!passed, "{report}");
    for named in [
        "GET /users/ada@contoso.com/mailboxSettingz: no 'mailboxSettingz' under users/item/",
        "query option $search is not in the model",
        "POST /policies/authorizationPolicy: the model has no POST here",
        "PATCH /policies/noSuchPolicy",
        "allowedToCreateAppz",
        "Domain has no property 'passwordValidityPeriodInDayz'",
        "ConditionalAccessUsers has no property 'conditions/users/includeUserz'",
    ] {
        assert!(report.contains(named), "{named} missing from\n{report}");
    }
}
