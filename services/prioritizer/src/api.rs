//! IncidentService: partners, customers and operator staff read incidents within their scope.
//! Decisions and the queue arrive with the prioritization issue; until then they answer
//! UNIMPLEMENTED through the generated default stubs.

use chrono::{DateTime, Utc};
use picket_platform::Principal;
use picket_platform::auth::Role;
use picket_platform::grpc::{internal, page_size, parse_uuid};
use picket_proto::incidents::v1 as incidents;
use picket_proto::incidents::v1::incident_service_server::IncidentService;
use sqlx::PgPool;
use tonic::{Request, Response, Status};
use uuid::Uuid;

use crate::model::IncidentState;
use crate::store::{self, IncidentFilter};

const DEFAULT_PAGE_SIZE: i64 = 50;
const MAX_PAGE_SIZE: i64 = 500;

pub struct IncidentApi {
    pool: PgPool,
}

impl IncidentApi {
    pub fn new(pool: PgPool) -> IncidentApi {
        IncidentApi { pool }
    }
}

fn encode_page_token(opened_at: DateTime<Utc>, incident_id: Uuid) -> String {
    format!("{}|{incident_id}", opened_at.to_rfc3339())
}

fn decode_page_token(token: &str) -> Result<(DateTime<Utc>, Uuid), Status> {
    let invalid = || Status::invalid_argument("page_token: not a token from a previous page");
    let (opened_at, incident_id) = token.split_once('|').ok_or_else(invalid)?;
    let opened_at = DateTime::parse_from_rfc3339(opened_at)
        .map_err(|_| invalid())?
        .with_timezone(&Utc);
    let incident_id = Uuid::parse_str(incident_id).map_err(|_| invalid())?;
    Ok((opened_at, incident_id))
}

/// Narrows a listing to what the principal may see.
fn scoped_filter(
    principal: &Principal,
    request: &incidents::ListIncidentsRequest,
) -> Result<IncidentFilter, Status> {
    let partner_id = principal.partner_scope(&request.partner_id)?;
    let mut tenant_ids = (!request.tenant_id.is_empty()).then(|| vec![request.tenant_id.clone()]);
    if principal.role == Role::Customer {
        let granted = &principal.tenant_ids;
        tenant_ids = Some(match tenant_ids {
            Some(requested) if requested.iter().all(|tenant| granted.contains(tenant)) => requested,
            Some(_) => return Err(Status::permission_denied("tenant_id: not granted to you")),
            None => granted.clone(),
        });
    }
    let mut states = Vec::with_capacity(request.states.len());
    for value in &request.states {
        let state = IncidentState::from_proto(*value).ok_or_else(|| {
            Status::invalid_argument(format!("states: {value} is not an incident state"))
        })?;
        states.push(state.as_db());
    }
    let limit = page_size(request.page_size, DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)?;
    let before = match request.page_token.as_str() {
        "" => None,
        token => Some(decode_page_token(token)?),
    };
    Ok(IncidentFilter {
        partner_id,
        tenant_ids,
        states,
        before,
        limit,
    })
}

#[tonic::async_trait]
impl IncidentService for IncidentApi {
    async fn get_incident(
        &self,
        request: Request<incidents::GetIncidentRequest>,
    ) -> Result<Response<incidents::GetIncidentResponse>, Status> {
        let principal = Principal::of(&request)?.clone();
        let incident_id = parse_uuid(&request.get_ref().incident_id, "incident_id")?;
        let incident = store::get_incident(&self.pool, incident_id)
            .await
            .map_err(internal)?;
        // Another partner's incident is indistinguishable from a missing one.
        let visible = incident
            .filter(|incident| {
                principal.can_access_tenant(&incident.partner_id, &incident.tenant_id)
            })
            .ok_or_else(|| Status::not_found(format!("incident {incident_id} not found")))?;
        Ok(Response::new(incidents::GetIncidentResponse {
            incident: Some(visible.to_proto()),
        }))
    }

    async fn list_incidents(
        &self,
        request: Request<incidents::ListIncidentsRequest>,
    ) -> Result<Response<incidents::ListIncidentsResponse>, Status> {
        let principal = Principal::of(&request)?;
        let filter = scoped_filter(principal, request.get_ref())?;
        let rows = store::list_incidents(&self.pool, &filter)
            .await
            .map_err(internal)?;
        let next_page_token = match rows.last() {
            Some(last) if rows.len() as i64 == filter.limit => {
                encode_page_token(last.opened_at, last.incident_id)
            }
            _ => String::new(),
        };
        Ok(Response::new(incidents::ListIncidentsResponse {
            incidents: rows.iter().map(store::IncidentRow::to_proto).collect(),
            next_page_token,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn partner(partner_id: &str) -> Principal {
        Principal {
            subject: "staff".into(),
            role: Role::Partner,
            partner_id: Some(partner_id.into()),
            tenant_ids: vec![],
        }
    }

    #[test]
    fn partner_listing_is_pinned_to_its_partner() {
        let filter = scoped_filter(&partner("p1"), &incidents::ListIncidentsRequest::default())
            .expect("valid request");
        assert_eq!(filter.partner_id.as_deref(), Some("p1"));
        assert_eq!(filter.limit, DEFAULT_PAGE_SIZE);
    }

    #[test]
    fn partner_cannot_list_another_partner() {
        let request = incidents::ListIncidentsRequest {
            partner_id: "p2".into(),
            ..Default::default()
        };
        let status = scoped_filter(&partner("p1"), &request).expect_err("refused");
        assert_eq!(status.code(), tonic::Code::PermissionDenied);
    }

    #[test]
    fn customer_listing_is_limited_to_granted_tenants() {
        let customer = Principal {
            subject: "contact".into(),
            role: Role::Customer,
            partner_id: Some("p1".into()),
            tenant_ids: vec!["t1".into()],
        };
        let filter =
            scoped_filter(&customer, &incidents::ListIncidentsRequest::default()).expect("valid");
        assert_eq!(filter.tenant_ids, Some(vec!["t1".to_owned()]));
        let request = incidents::ListIncidentsRequest {
            tenant_id: "t2".into(),
            ..Default::default()
        };
        assert!(scoped_filter(&customer, &request).is_err());
    }

    #[test]
    fn bad_page_token_names_the_field() {
        let request = incidents::ListIncidentsRequest {
            page_token: "nope".into(),
            ..Default::default()
        };
        let status = scoped_filter(&partner("p1"), &request).expect_err("refused");
        assert!(
            status.message().starts_with("page_token"),
            "{}",
            status.message()
        );
    }

    #[test]
    fn page_token_round_trips() {
        let now = Utc::now();
        let incident_id = Uuid::now_v7();
        let (opened_at, decoded_id) =
            decode_page_token(&encode_page_token(now, incident_id)).expect("valid");
        assert_eq!(decoded_id, incident_id);
        assert_eq!(opened_at.timestamp_micros(), now.timestamp_micros());
    }
}
