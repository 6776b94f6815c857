//! Gap analysis: what an authority map leaves undecided or unreachable. Stages with no
//! accountable owner or more than one, or no responsible owner; owners with responsibilities and
//! no reachable contact; escalation chains that end nowhere; decisions opened to named customer
//! contacts without a grant; owner ids the map does not define.

use std::collections::{BTreeSet, HashMap};

use picket_proto::common::v1::Severity as SeverityProto;
use picket_proto::incidents::v1::{
    AuthorityGap, AuthorityMap, AuthorityOwner, AuthorityStage, CustomerGrant, GapKind, Party,
};

use super::standard::STAGES;

/// An owner can be reached when it has a contact with an address.
pub fn reachable(owner: &AuthorityOwner) -> bool {
    owner
        .contacts
        .iter()
        .any(|contact| !contact.address.trim().is_empty())
}

pub fn stage_name(stage: AuthorityStage) -> &'static str {
    match stage {
        AuthorityStage::DetectionAndTriage => "detection and triage",
        AuthorityStage::Escalation => "escalation",
        AuthorityStage::ContainmentDecision => "containment decision",
        AuthorityStage::ClientCommunication => "client communication",
        AuthorityStage::DocumentationAndReporting => "documentation and reporting",
        AuthorityStage::Unspecified => "unspecified stage",
    }
}

fn severity_name(severity: SeverityProto) -> &'static str {
    match severity {
        SeverityProto::Critical => "critical",
        SeverityProto::High => "high",
        SeverityProto::Medium => "medium",
        SeverityProto::Low => "low",
        _ => "unspecified",
    }
}

/// The gaps of `map` (a tenant's map when `map.tenant_id` is set), given the partner's active
/// customer grants for that tenant.
pub fn gaps(map: &AuthorityMap, grants: &[CustomerGrant]) -> Vec<AuthorityGap> {
    let tenant_id = map.tenant_id.clone();
    let owners: HashMap<&str, &AuthorityOwner> = map
        .owners
        .iter()
        .map(|owner| (owner.owner_id.as_str(), owner))
        .collect();
    let gap = |kind: GapKind, message: String| AuthorityGap {
        kind: kind.into(),
        tenant_id: tenant_id.clone(),
        message,
        ..Default::default()
    };
    let mut found = Vec::new();
    let mut unknown: BTreeSet<&str> = BTreeSet::new();
    let mut charged: BTreeSet<&str> = BTreeSet::new();
    for stage in STAGES {
        let name = stage_name(stage);
        let Some(assignment) = map
            .stages
            .iter()
            .find(|assignment| assignment.stage() == stage)
        else {
            found.push(AuthorityGap {
                stage: stage.into(),
                ..gap(
                    GapKind::NoAccountable,
                    format!("{name}: no one is accountable"),
                )
            });
            found.push(AuthorityGap {
                stage: stage.into(),
                ..gap(
                    GapKind::NoResponsible,
                    format!("{name}: no one is responsible"),
                )
            });
            continue;
        };
        match assignment.accountable_owner_ids.as_slice() {
            [] => found.push(AuthorityGap {
                stage: stage.into(),
                ..gap(
                    GapKind::NoAccountable,
                    format!("{name}: no one is accountable"),
                )
            }),
            [_] => {}
            several => found.push(AuthorityGap {
                stage: stage.into(),
                ..gap(
                    GapKind::MultipleAccountable,
                    format!(
                        "{name}: {} owners are accountable ({})",
                        several.len(),
                        several.join(", ")
                    ),
                )
            }),
        }
        if assignment.responsible_owner_ids.is_empty() {
            found.push(AuthorityGap {
                stage: stage.into(),
                ..gap(
                    GapKind::NoResponsible,
                    format!("{name}: no one is responsible"),
                )
            });
        }
        for owner_id in assignment
            .responsible_owner_ids
            .iter()
            .chain(&assignment.accountable_owner_ids)
        {
            charged.insert(owner_id);
        }
        for owner_id in assignment
            .responsible_owner_ids
            .iter()
            .chain(&assignment.accountable_owner_ids)
            .chain(&assignment.consulted_owner_ids)
            .chain(&assignment.informed_owner_ids)
        {
            if !owners.contains_key(owner_id.as_str()) {
                unknown.insert(owner_id);
            }
        }
    }
    for rule in &map.decision_rules {
        for owner_id in &rule.owner_ids {
            match owners.get(owner_id.as_str()) {
                None => {
                    unknown.insert(owner_id);
                }
                Some(owner) if owner.party() == Party::Customer => {
                    let granted = owner.contacts.iter().any(|contact| {
                        !contact.principal_subject.is_empty()
                            && grants.iter().any(|grant| {
                                grant.active && grant.customer_subject == contact.principal_subject
                            })
                    });
                    if !granted {
                        found.push(AuthorityGap {
                            owner_id: owner_id.clone(),
                            ..gap(
                                GapKind::CustomerDecisionWithoutGrant,
                                format!(
                                    "rule {}: customer owner {owner_id} may decide, but none of its contacts has a grant",
                                    rule.rule_id
                                ),
                            )
                        });
                    }
                }
                Some(_) => {}
            }
        }
    }
    for severity in [
        SeverityProto::Critical,
        SeverityProto::High,
        SeverityProto::Medium,
        SeverityProto::Low,
    ] {
        let name = severity_name(severity);
        let policy = map
            .escalations
            .iter()
            .find(|policy| policy.severity() == severity);
        let mut steps: Vec<_> = policy
            .map(|policy| policy.steps.iter().collect())
            .unwrap_or_default();
        steps.sort_by_key(|step| step.order);
        for step in &steps {
            charged.insert(&step.owner_id);
            if !owners.contains_key(step.owner_id.as_str()) {
                unknown.insert(&step.owner_id);
            }
        }
        let dead_end = match steps.last() {
            None => Some(format!("{name} incidents: the escalation order is empty")),
            Some(last) => match owners.get(last.owner_id.as_str()) {
                Some(owner) if reachable(owner) => None,
                _ => Some(format!(
                    "{name} incidents: the escalation ends at {}, who cannot be reached",
                    last.owner_id
                )),
            },
        };
        if let Some(message) = dead_end {
            found.push(AuthorityGap {
                severity: severity.into(),
                ..gap(GapKind::EscalationDeadEnd, message)
            });
        }
    }
    for owner_id in &charged {
        if let Some(owner) = owners.get(owner_id)
            && !reachable(owner)
        {
            found.push(AuthorityGap {
                owner_id: (*owner_id).to_owned(),
                ..gap(
                    GapKind::UnreachableOwner,
                    format!("{owner_id} has responsibilities but no contact to reach"),
                )
            });
        }
    }
    for owner_id in unknown {
        found.push(AuthorityGap {
            owner_id: owner_id.to_owned(),
            ..gap(
                GapKind::UnknownOwner,
                format!("{owner_id} is named but not defined among the owners"),
            )
        });
    }
    found
}

#[cfg(test)]
mod tests {
    use picket_proto::incidents::v1::{Contact, ContactChannel, DecisionRule};

    use super::*;
    use crate::authority::standard::{ACCOUNT_MANAGER, CUSTOMER_IT_LEAD, standard_map};
    use crate::escalation::{Escalation, SECURITY_MANAGER, SOC_ANALYST};

    fn standard() -> AuthorityMap {
        let settings: crate::settings::PrioritizerSettings =
            picket_testkit::service_settings(crate::SERVICE, crate::DEFAULTS, "");
        standard_map(&Escalation::standard(&settings))
    }

    /// The standard map with every MSP owner reachable.
    fn complete() -> AuthorityMap {
        let mut map = standard();
        for owner in map
            .owners
            .iter_mut()
            .filter(|owner| owner.contacts.is_empty())
        {
            owner.contacts.push(Contact {
                contact_id: format!("{}-mail", owner.owner_id),
                name: owner.display_name.clone(),
                channel: ContactChannel::Email.into(),
                address: format!("{}@msp.example", owner.owner_id),
                ..Default::default()
            });
        }
        map
    }

    fn kinds(map: &AuthorityMap) -> Vec<(GapKind, String)> {
        gaps(map, &[])
            .into_iter()
            .map(|gap| (gap.kind(), gap.owner_id))
            .collect()
    }

    #[test]
    fn the_standard_map_lacks_only_the_msps_contacts() {
        let found = kinds(&standard());
        assert!(
            found.iter().all(|(kind, _)| matches!(
                kind,
                GapKind::UnreachableOwner | GapKind::EscalationDeadEnd
            )),
            "{found:?}"
        );
        for owner in [SOC_ANALYST, SECURITY_MANAGER, ACCOUNT_MANAGER] {
            assert!(
                found.contains(&(GapKind::UnreachableOwner, owner.to_owned())),
                "{owner}"
            );
        }
        assert_eq!(
            kinds(&complete()),
            [],
            "complete once the MSP fills in its contacts"
        );
    }

    #[test]
    fn each_kind_of_gap_is_reported() {
        let mut map = complete();
        map.stages[0].accountable_owner_ids.clear();
        map.stages[1].accountable_owner_ids.push(SOC_ANALYST.into());
        map.stages[2].responsible_owner_ids.clear();
        map.stages[3]
            .informed_owner_ids
            .push("legal-counsel".into());
        map.escalations[0].steps.clear();
        map.owners
            .iter_mut()
            .find(|owner| owner.owner_id == ACCOUNT_MANAGER)
            .expect("account manager")
            .contacts
            .clear();
        map.decision_rules.push(DecisionRule {
            rule_id: "customer-approves".into(),
            owner_ids: vec![CUSTOMER_IT_LEAD.into()],
            ..Default::default()
        });
        let found = kinds(&map);
        for expected in [
            (GapKind::NoAccountable, String::new()),
            (GapKind::MultipleAccountable, String::new()),
            (GapKind::NoResponsible, String::new()),
            (GapKind::UnknownOwner, "legal-counsel".to_owned()),
            (GapKind::EscalationDeadEnd, String::new()),
            (GapKind::UnreachableOwner, ACCOUNT_MANAGER.to_owned()),
            (
                GapKind::CustomerDecisionWithoutGrant,
                CUSTOMER_IT_LEAD.to_owned(),
            ),
        ] {
            assert!(found.contains(&expected), "{expected:?} in {found:?}");
        }
    }

    #[test]
    fn a_granted_customer_contact_is_no_gap() {
        let mut map = complete();
        map.owners
            .iter_mut()
            .find(|owner| owner.owner_id == CUSTOMER_IT_LEAD)
            .expect("customer")
            .contacts
            .push(Contact {
                contact_id: "it".into(),
                address: "it@contoso.example".into(),
                principal_subject: "it@contoso".into(),
                ..Default::default()
            });
        map.decision_rules.push(DecisionRule {
            rule_id: "customer-approves".into(),
            owner_ids: vec![CUSTOMER_IT_LEAD.into()],
            ..Default::default()
        });
        let grant = CustomerGrant {
            customer_subject: "it@contoso".into(),
            active: true,
            ..Default::default()
        };
        assert!(gaps(&map, &[grant]).is_empty());
    }

    #[test]
    fn the_readme_shows_the_standard_worksheet() {
        let map = standard();
        let (content, _, _) = crate::authority::worksheet::worksheet(
            &map,
            &gaps(&map, &[]),
            picket_proto::incidents::v1::WorksheetFormat::Markdown,
        );
        let worksheet = String::from_utf8(content).expect("UTF-8");
        let readme = include_str!("../../../../README.md");
        assert!(
            readme.contains(&worksheet),
            "README.md must show the standard map's worksheet:\n{worksheet}"
        );
    }
}
