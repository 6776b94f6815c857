//! The standard authority map, in force until a partner deviates from it: the operator detects,
//! triages and contains by exception with the MSP's approval; the MSP decides, owns the customer
//! relationship, IT operations and client communication; the customer may decide when the
//! partner grants it. MSP owners come without contacts: filling them in is the partner's part,
//! and the gaps say so.

use picket_proto::incidents::v1::{
    AuthorityMap, AuthorityOwner, AuthorityStage, Contact, ContactChannel, DecisionRule,
    EscalationPolicy, Party, StageAssignment,
};

use crate::escalation::{Escalation, SECURITY_MANAGER, SOC_ANALYST};
use crate::model::Severity;

pub const OPERATOR: &str = "operator";
pub const ACCOUNT_MANAGER: &str = "msp-account-manager";
pub const CUSTOMER_IT_LEAD: &str = "customer-it-lead";

/// Every stage, in the order of an incident.
pub const STAGES: [AuthorityStage; 5] = [
    AuthorityStage::DetectionAndTriage,
    AuthorityStage::Escalation,
    AuthorityStage::ContainmentDecision,
    AuthorityStage::ClientCommunication,
    AuthorityStage::DocumentationAndReporting,
];

fn owner(owner_id: &str, party: Party, role_name: &str, display_name: &str) -> AuthorityOwner {
    AuthorityOwner {
        owner_id: owner_id.into(),
        party: party.into(),
        role_name: role_name.into(),
        display_name: display_name.into(),
        ..Default::default()
    }
}

fn ids(owner_ids: &[&str]) -> Vec<String> {
    owner_ids.iter().map(|id| (*id).to_owned()).collect()
}

fn stage(
    stage: AuthorityStage,
    responsible: &[&str],
    accountable: &str,
    consulted: &[&str],
    informed: &[&str],
    notes: &str,
) -> StageAssignment {
    StageAssignment {
        stage: stage.into(),
        responsible_owner_ids: ids(responsible),
        accountable_owner_ids: ids(&[accountable]),
        consulted_owner_ids: ids(consulted),
        informed_owner_ids: ids(informed),
        notes: notes.into(),
    }
}

/// The standard map, with the escalation times of `escalation`.
pub fn standard_map(escalation: &Escalation) -> AuthorityMap {
    let mut operator = owner(
        OPERATOR,
        Party::Operator,
        "Automation and staff",
        "Picket operator",
    );
    operator.contacts.push(Contact {
        contact_id: "operator-soc".into(),
        name: "Picket security operations".into(),
        channel: ContactChannel::Email.into(),
        address: "soc@picket.invalid".into(),
        availability: "24x7".into(),
        ..Default::default()
    });
    AuthorityMap {
        standard: true,
        owners: vec![
            operator,
            owner(SOC_ANALYST, Party::Msp, "SOC analyst", "MSP SOC analyst"),
            owner(
                SECURITY_MANAGER,
                Party::Msp,
                "Security manager",
                "MSP security manager",
            ),
            owner(
                ACCOUNT_MANAGER,
                Party::Msp,
                "Account manager",
                "MSP account manager",
            ),
            owner(
                CUSTOMER_IT_LEAD,
                Party::Customer,
                "IT lead",
                "Customer IT lead",
            ),
        ],
        stages: vec![
            stage(
                AuthorityStage::DetectionAndTriage,
                &[OPERATOR],
                SOC_ANALYST,
                &[],
                &[SECURITY_MANAGER],
                "Picket detects and triages; the MSP's SOC analyst confirms.",
            ),
            stage(
                AuthorityStage::Escalation,
                &[OPERATOR],
                SECURITY_MANAGER,
                &[SOC_ANALYST],
                &[ACCOUNT_MANAGER],
                "Undecided incidents escalate in the order below.",
            ),
            stage(
                AuthorityStage::ContainmentDecision,
                &[OPERATOR],
                SECURITY_MANAGER,
                &[CUSTOMER_IT_LEAD],
                &[ACCOUNT_MANAGER],
                "Picket contains by exception, with the MSP's approval.",
            ),
            stage(
                AuthorityStage::ClientCommunication,
                &[ACCOUNT_MANAGER],
                ACCOUNT_MANAGER,
                &[SECURITY_MANAGER],
                &[CUSTOMER_IT_LEAD],
                "The MSP owns the customer relationship.",
            ),
            stage(
                AuthorityStage::DocumentationAndReporting,
                &[OPERATOR],
                SECURITY_MANAGER,
                &[],
                &[ACCOUNT_MANAGER],
                "Picket keeps the timeline; the MSP answers for the report.",
            ),
        ],
        decision_rules: vec![
            DecisionRule {
                rule_id: "msp-decides".into(),
                parties: vec![Party::Msp.into()],
                description: "The MSP decides on every incident of its tenants.".into(),
                ..Default::default()
            },
            DecisionRule {
                rule_id: "operator-contains-by-exception".into(),
                parties: vec![Party::Operator.into()],
                description: "Picket's staff act by exception, for the MSP.".into(),
                ..Default::default()
            },
            DecisionRule {
                rule_id: "customer-with-grant".into(),
                parties: vec![Party::Customer.into()],
                description: "A customer contact decides where the MSP granted it.".into(),
                ..Default::default()
            },
        ],
        escalations: [
            Severity::Critical,
            Severity::High,
            Severity::Medium,
            Severity::Low,
        ]
        .into_iter()
        .map(|severity| EscalationPolicy {
            severity: severity.to_proto().into(),
            steps: escalation.steps(severity),
        })
        .collect(),
        ..Default::default()
    }
}
