//! ScanService: scans on demand, scan runs, the check catalogue and each tenant's latest results.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::Utc;
use picket_platform::Principal;
use picket_platform::auth::Role;
use picket_platform::grpc::{
    internal, keyset_token, page_size, parse_keyset_token, parse_offset_token, parse_uuid,
};
use picket_platform::time::{from_timestamp, to_timestamp};
use picket_proto::common::v1 as common;
use picket_proto::tenants::v1 as tenants;
use picket_proto::tenants::v1::scan_service_server::ScanService;
use tonic::{Request, Response, Status};

use crate::checks::catalogue::Catalogue;
use crate::scans::results;
use crate::scans::runner::Scanning;
use crate::scans::scheduler::Wake;
use crate::scans::store::{self, ScanFilter, ScanRow};
use crate::tenants::store as tenant_store;

const MAX_PAGE_SIZE: i64 = 200;

pub struct ScanApi {
    scanning: Arc<Scanning>,
    wake: Wake,
}

impl ScanApi {
    pub fn new(scanning: Arc<Scanning>, wake: Wake) -> ScanApi {
        ScanApi { scanning, wake }
    }

    fn catalogue(&self) -> &Catalogue {
        &self.scanning.catalogue
    }

    async fn visible_scan(&self, principal: &Principal, scan_id: &str) -> Result<ScanRow, Status> {
        principal.require_role(tenant_store::READERS)?;
        let id = parse_uuid(scan_id, "scan_id")?;
        store::get(&self.scanning.pool, id)
            .await
            .map_err(internal)?
            .filter(|scan| {
                principal.can_access_tenant(&scan.partner_id, &scan.tenant_id.to_string())
            })
            .ok_or_else(|| Status::not_found(format!("scan {id} not found")))
    }
}

#[tonic::async_trait]
impl ScanService for ScanApi {
    async fn start_scan(
        &self,
        request: Request<tenants::StartScanRequest>,
    ) -> Result<Response<tenants::StartScanResponse>, Status> {
        let principal = Principal::of(&request)?;
        principal.require_role(&[Role::Operator, Role::Partner])?;
        let message = request.get_ref();
        let kind = tenants::ScanKind::try_from(message.kind)
            .map_err(|_| Status::invalid_argument("kind: not a scan kind"))?;
        let tenant =
            tenant_store::visible_tenant(&self.scanning.pool, principal, &message.tenant_id)
                .await?;
        if !tenant.is_active() {
            return Err(Status::failed_precondition(format!(
                "tenant {} is {}; only active tenants are scanned",
                tenant.tenant_id, tenant.state
            )));
        }
        let requested_by = serde_json::to_value(principal.to_proto()).ok();
        let mut connection = self.scanning.pool.acquire().await.map_err(internal)?;
        let scan = store::queue(
            &mut connection,
            &tenant.partner_id,
            tenant.tenant_id,
            kind,
            "on_demand",
            requested_by,
            Utc::now(),
        )
        .await
        .map_err(internal)?;
        self.wake.notify_one();
        Ok(Response::new(tenants::StartScanResponse {
            scan: Some(scan.to_proto()),
        }))
    }

    async fn get_scan(
        &self,
        request: Request<tenants::GetScanRequest>,
    ) -> Result<Response<tenants::GetScanResponse>, Status> {
        let principal = Principal::of(&request)?;
        let scan = self
            .visible_scan(principal, &request.get_ref().scan_id)
            .await?;
        Ok(Response::new(tenants::GetScanResponse {
            scan: Some(scan.to_proto()),
        }))
    }

    async fn list_scans(
        &self,
        request: Request<tenants::ListScansRequest>,
    ) -> Result<Response<tenants::ListScansResponse>, Status> {
        let principal = Principal::of(&request)?;
        principal.require_role(tenant_store::READERS)?;
        let message = request.get_ref();
        let mut filter = ScanFilter {
            partner_id: principal.partner_scope(&message.partner_id)?,
            limit: page_size(message.page_size, MAX_PAGE_SIZE, MAX_PAGE_SIZE)?,
            after: parse_keyset_token(&message.page_token)?,
            ..ScanFilter::default()
        };
        if !message.tenant_id.is_empty() {
            let tenant =
                tenant_store::visible_tenant(&self.scanning.pool, principal, &message.tenant_id)
                    .await?;
            filter.tenant_id = Some(tenant.tenant_id);
        }
        for value in &message.kinds {
            let kind = tenants::ScanKind::try_from(*value)
                .ok()
                .filter(|kind| *kind != tenants::ScanKind::Unspecified)
                .ok_or_else(|| {
                    Status::invalid_argument(format!("kinds: {value} is not a scan kind"))
                })?;
            filter.kinds.push(store::kind_to_db(kind).to_owned());
        }
        for value in &message.states {
            let state = tenants::ScanState::try_from(*value)
                .ok()
                .and_then(store::state_to_db)
                .ok_or_else(|| {
                    Status::invalid_argument(format!("states: {value} is not a scan state"))
                })?;
            filter.states.push(state.to_owned());
        }
        if let Some(range) = &message.queued {
            let bound = |value: Option<&pbjson_types::Timestamp>, field: &str| {
                value
                    .map(|timestamp| {
                        from_timestamp(timestamp).ok_or_else(|| {
                            Status::invalid_argument(format!("{field}: not a valid timestamp"))
                        })
                    })
                    .transpose()
            };
            filter.queued_from = bound(range.start_time.as_ref(), "queued.start_time")?;
            filter.queued_to = bound(range.end_time.as_ref(), "queued.end_time")?;
        }
        let scans = store::list(&self.scanning.pool, &filter)
            .await
            .map_err(internal)?;
        let next_page_token = if scans.len() as i64 == filter.limit {
            scans
                .last()
                .map(|scan| keyset_token(scan.queued_at, scan.scan_id))
                .unwrap_or_default()
        } else {
            String::new()
        };
        Ok(Response::new(tenants::ListScansResponse {
            scans: scans.iter().map(ScanRow::to_proto).collect(),
            next_page_token,
        }))
    }

    async fn cancel_scan(
        &self,
        request: Request<tenants::CancelScanRequest>,
    ) -> Result<Response<tenants::CancelScanResponse>, Status> {
        let principal = Principal::of(&request)?;
        principal.require_role(&[Role::Operator, Role::Partner])?;
        let scan = self
            .visible_scan(principal, &request.get_ref().scan_id)
            .await?;
        let scan = store::cancel(&self.scanning.pool, scan.scan_id, Utc::now())
            .await
            .map_err(internal)?
            .unwrap_or(scan);
        Ok(Response::new(tenants::CancelScanResponse {
            scan: Some(scan.to_proto()),
        }))
    }

    async fn list_checks(
        &self,
        request: Request<tenants::ListChecksRequest>,
    ) -> Result<Response<tenants::ListChecksResponse>, Status> {
        Principal::of(&request)?;
        let message = request.get_ref();
        let kind = common::FindingKind::try_from(message.kind)
            .map_err(|_| Status::invalid_argument("kind: not a finding kind"))?;
        let checks = self
            .catalogue()
            .checks()
            .iter()
            .filter(|check| kind == common::FindingKind::Unspecified || check.proto_kind() == kind)
            .filter(|check| message.theme.is_empty() || check.theme == message.theme)
            .map(|check| check.to_proto())
            .collect();
        Ok(Response::new(tenants::ListChecksResponse { checks }))
    }

    async fn get_check(
        &self,
        request: Request<tenants::GetCheckRequest>,
    ) -> Result<Response<tenants::GetCheckResponse>, Status> {
        Principal::of(&request)?;
        let check_id = &request.get_ref().check_id;
        let check = self
            .catalogue()
            .check(check_id)
            .ok_or_else(|| Status::not_found(format!("check_id: no check {check_id}")))?;
        Ok(Response::new(tenants::GetCheckResponse {
            check: Some(check.to_proto()),
        }))
    }

    async fn list_themes(
        &self,
        request: Request<tenants::ListThemesRequest>,
    ) -> Result<Response<tenants::ListThemesResponse>, Status> {
        Principal::of(&request)?;
        let themes = self
            .catalogue()
            .themes()
            .iter()
            .map(|theme| picket_proto::findings::v1::Theme {
                theme_id: theme.id.clone(),
                title: theme.title.clone(),
                description: theme.description.clone(),
                order: theme.order,
            })
            .collect();
        Ok(Response::new(tenants::ListThemesResponse { themes }))
    }

    async fn list_check_results(
        &self,
        request: Request<tenants::ListCheckResultsRequest>,
    ) -> Result<Response<tenants::ListCheckResultsResponse>, Status> {
        let principal = Principal::of(&request)?;
        let message = request.get_ref();
        let tenant =
            tenant_store::visible_tenant(&self.scanning.pool, principal, &message.tenant_id)
                .await?;
        let kind = common::FindingKind::try_from(message.kind)
            .map_err(|_| Status::invalid_argument("kind: not a finding kind"))?;
        let mut outcomes = Vec::new();
        for value in &message.outcomes {
            let outcome = tenants::CheckOutcome::try_from(*value)
                .ok()
                .filter(|outcome| *outcome != tenants::CheckOutcome::Unspecified)
                .ok_or_else(|| {
                    Status::invalid_argument(format!("outcomes: {value} is not a check outcome"))
                })?;
            outcomes.push(outcome);
        }
        let limit = usize::try_from(page_size(message.page_size, MAX_PAGE_SIZE, MAX_PAGE_SIZE)?)
            .unwrap_or_default();
        let offset = usize::try_from(parse_offset_token(&message.page_token)?).unwrap_or_default();
        let stored: BTreeMap<String, results::CheckResultRow> =
            results::results(&self.scanning.pool, tenant.tenant_id)
                .await
                .map_err(internal)?
                .into_iter()
                .map(|result| (result.check_id.clone(), result))
                .collect();
        let all: Vec<tenants::CheckResult> = self
            .catalogue()
            .checks()
            .iter()
            .filter(|check| kind == common::FindingKind::Unspecified || check.proto_kind() == kind)
            .map(|check| {
                let stored = stored.get(&check.id);
                let outcome = match stored.map(|result| result.outcome.as_str()) {
                    Some("passed") => tenants::CheckOutcome::Passed,
                    Some("failed") => tenants::CheckOutcome::Failed,
                    Some("not_applicable") => tenants::CheckOutcome::NotApplicable,
                    Some("not_evaluated") | None => tenants::CheckOutcome::NotEvaluated,
                    Some(_) => tenants::CheckOutcome::Error,
                };
                tenants::CheckResult {
                    check_id: check.id.clone(),
                    title: check.title.clone(),
                    theme: check.theme.clone(),
                    kind: check.proto_kind().into(),
                    outcome: outcome.into(),
                    failing_subjects: stored
                        .map(|result| u32::try_from(result.failing_subjects).unwrap_or_default())
                        .unwrap_or_default(),
                    failing_fingerprints: stored
                        .map(|result| result.failing_fingerprints.clone())
                        .unwrap_or_default(),
                    evaluated_at: stored.map(|result| to_timestamp(result.evaluated_at)),
                    scan_id: stored
                        .map(|result| result.scan_id.to_string())
                        .unwrap_or_default(),
                    detail: stored
                        .map(|result| result.detail.clone())
                        .unwrap_or_default(),
                }
            })
            .filter(|result| {
                outcomes.is_empty()
                    || tenants::CheckOutcome::try_from(result.outcome)
                        .is_ok_and(|outcome| outcomes.contains(&outcome))
            })
            .collect();
        let page: Vec<tenants::CheckResult> =
            all.iter().skip(offset).take(limit).cloned().collect();
        let next = offset + page.len();
        Ok(Response::new(tenants::ListCheckResultsResponse {
            results: page,
            next_page_token: if next < all.len() {
                next.to_string()
            } else {
                String::new()
            },
        }))
    }
}
