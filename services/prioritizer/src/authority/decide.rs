//! Enforcement: whether a principal may take a decision on an incident, by the tenant's map in
//! force and the partner's customer grants. A decision is allowed when a rule of the map matches
//! the decision, the incident's severity and kind, and the principal (by its party, or as the
//! principal of one of the rule's owners); a customer also needs an active grant for the tenant
//! that covers the decision and the severity.

use picket_platform::auth::{Principal, Role};
use picket_proto::common::v1::{FindingKind, Severity};
use picket_proto::incidents::v1::{AuthorityMap, CustomerGrant, DecisionKind, DecisionRule, Party};

/// What the decision is about.
pub struct Asked {
    pub decision: DecisionKind,
    pub severity: Severity,
    pub kind: FindingKind,
}

fn party(principal: &Principal) -> Option<Party> {
    match principal.role {
        Role::Operator => Some(Party::Operator),
        Role::Partner => Some(Party::Msp),
        Role::Customer => Some(Party::Customer),
        _ => None,
    }
}

fn covers(rule: &DecisionRule, asked: &Asked) -> bool {
    (rule.decisions.is_empty() || rule.decisions.contains(&(asked.decision as i32)))
        && (rule.severities.is_empty() || rule.severities.contains(&(asked.severity as i32)))
        && (rule.kinds.is_empty() || rule.kinds.contains(&(asked.kind as i32)))
}

fn grant_covers(grant: &CustomerGrant, principal: &Principal, asked: &Asked) -> bool {
    grant.active
        && grant.customer_subject == principal.subject
        && (grant.decisions.is_empty() || grant.decisions.contains(&(asked.decision as i32)))
        && (grant.severities.is_empty() || grant.severities.contains(&(asked.severity as i32)))
}

/// The basis of an allowed decision, or why it is refused.
pub fn authority(
    map: &AuthorityMap,
    grants: &[CustomerGrant],
    principal: &Principal,
    asked: &Asked,
) -> Result<String, String> {
    let party = party(principal);
    let named_owner = |rule: &DecisionRule| -> Option<String> {
        rule.owner_ids
            .iter()
            .find(|owner_id| {
                map.owners.iter().any(|owner| {
                    &owner.owner_id == *owner_id
                        && owner.contacts.iter().any(|contact| {
                            !principal.subject.is_empty()
                                && contact.principal_subject == principal.subject
                        })
                })
            })
            .cloned()
    };
    let grant = grants
        .iter()
        .find(|grant| grant_covers(grant, principal, asked));
    let map_name = if map.standard {
        "the standard map".to_owned()
    } else {
        format!("the authority map (version {})", map.version)
    };
    for rule in map.decision_rules.iter().filter(|rule| covers(rule, asked)) {
        let by_party = party.is_some_and(|party| rule.parties.contains(&(party as i32)));
        let by_owner = named_owner(rule);
        if !by_party && by_owner.is_none() {
            continue;
        }
        if principal.role == Role::Customer {
            match grant {
                Some(grant) => {
                    return Ok(format!(
                        "{map_name}, rule {} with customer grant {}",
                        rule.rule_id, grant.grant_id
                    ));
                }
                None => continue,
            }
        }
        return Ok(match by_owner {
            Some(owner_id) => format!("{map_name}, rule {} as {owner_id}", rule.rule_id),
            None => format!("{map_name}, rule {}: {}", rule.rule_id, rule.description),
        });
    }
    let decision = asked
        .decision
        .as_str_name()
        .trim_start_matches("DECISION_KIND_")
        .to_lowercase();
    let severity = asked
        .severity
        .as_str_name()
        .trim_start_matches("SEVERITY_")
        .to_lowercase();
    Err(match (principal.role, grant) {
        (Role::Customer, None) => format!(
            "{map_name} lets a customer {decision} only with a grant for this tenant covering {severity} incidents, and {} has none",
            principal.subject
        ),
        _ => format!(
            "no rule of {map_name} lets {} ({}) {decision} a {severity} incident",
            principal.subject,
            principal.role.as_str()
        ),
    })
}

#[cfg(test)]
mod tests {
    use picket_proto::incidents::v1::{AuthorityOwner, Contact};

    use super::*;
    use crate::authority::standard::standard_map;
    use crate::escalation::Escalation;

    fn standard() -> AuthorityMap {
        let settings: crate::settings::PrioritizerSettings =
            picket_testkit::service_settings(crate::SERVICE, crate::DEFAULTS, "");
        standard_map(&Escalation::standard(&settings))
    }

    fn principal(role: Role, subject: &str) -> Principal {
        Principal {
            subject: subject.into(),
            role,
            partner_id: Some("p1".into()),
            tenant_ids: vec!["t1".into()],
        }
    }

    const APPROVE_CRITICAL: Asked = Asked {
        decision: DecisionKind::Approve,
        severity: Severity::Critical,
        kind: FindingKind::Monitoring,
    };

    #[test]
    fn the_standard_map_lets_the_msp_decide_and_a_customer_only_with_a_grant() {
        let map = standard();
        let msp = authority(
            &map,
            &[],
            &principal(Role::Partner, "soc@p1"),
            &APPROVE_CRITICAL,
        );
        assert!(msp.expect("allowed").contains("msp-decides"));
        let customer = principal(Role::Customer, "it@contoso");
        let refused = authority(&map, &[], &customer, &APPROVE_CRITICAL).expect_err("no grant");
        assert!(refused.contains("grant"), "{refused}");
        let grant = CustomerGrant {
            grant_id: "g1".into(),
            customer_subject: "it@contoso".into(),
            severities: vec![Severity::High.into()],
            active: true,
            ..Default::default()
        };
        assert!(
            authority(
                &map,
                std::slice::from_ref(&grant),
                &customer,
                &APPROVE_CRITICAL
            )
            .is_err(),
            "a grant for high incidents does not cover a critical one"
        );
        let critical = CustomerGrant {
            severities: Vec::new(),
            ..grant
        };
        let allowed = authority(&map, &[critical], &customer, &APPROVE_CRITICAL).expect("granted");
        assert!(allowed.contains("grant g1"), "{allowed}");
        assert!(
            authority(
                &map,
                &[],
                &principal(Role::Investigator, "ines"),
                &APPROVE_CRITICAL
            )
            .is_err()
        );
    }

    #[test]
    fn a_deviation_can_reserve_critical_approvals_to_a_named_owner() {
        let mut map = standard();
        map.standard = false;
        map.version = 3;
        map.owners.push(AuthorityOwner {
            owner_id: "msp-ciso".into(),
            party: Party::Msp.into(),
            contacts: vec![Contact {
                principal_subject: "ciso@p1".into(),
                address: "ciso@msp.example".into(),
                ..Default::default()
            }],
            ..Default::default()
        });
        // The MSP decides on everything but critical incidents; those are the CISO's.
        map.decision_rules = vec![
            DecisionRule {
                rule_id: "msp-below-critical".into(),
                parties: vec![Party::Msp.into()],
                severities: vec![
                    Severity::Low.into(),
                    Severity::Medium.into(),
                    Severity::High.into(),
                ],
                ..Default::default()
            },
            DecisionRule {
                rule_id: "ciso-critical".into(),
                owner_ids: vec!["msp-ciso".into()],
                severities: vec![Severity::Critical.into()],
                ..Default::default()
            },
        ];
        let analyst = principal(Role::Partner, "soc@p1");
        let refused = authority(&map, &[], &analyst, &APPROVE_CRITICAL).expect_err("not the CISO");
        assert!(refused.contains("version 3"), "{refused}");
        let high = Asked {
            severity: Severity::High,
            ..APPROVE_CRITICAL
        };
        assert!(authority(&map, &[], &analyst, &high).is_ok());
        let ciso = principal(Role::Partner, "ciso@p1");
        let allowed = authority(&map, &[], &ciso, &APPROVE_CRITICAL).expect("the CISO");
        assert!(allowed.contains("ciso-critical as msp-ciso"), "{allowed}");
    }
}
