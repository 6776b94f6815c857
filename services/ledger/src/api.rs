//! CreditLedgerService: the operator issues packs of credits and sets a partner's credit terms;
//! partners read their own balance, packs, transfers, statements and terms, operator staff and
//! investigators anyone's. Every mutating call carries an idempotency key: a retry gets the first
//! answer (marked replayed), the same key with other fields is refused and writes nothing. The
//! handlers check a call and send it to the group commit ([`crate::batch`]); the functions that
//! take a [`Call`] run it there, on the partner's locked position.

use chrono::{DateTime, Utc};
use picket_platform::Principal;
use picket_platform::auth::{Role, check_partner_id};
use picket_platform::grpc::{
    internal, next_offset_token, page_size, parse_each, parse_offset_token, parse_optional_uuid,
    parse_uuid, positive_duration, time_range,
};
use picket_platform::time::{from_timestamp, to_timestamp};
use picket_proto::common::v1 as common;
use picket_proto::ledger::v1 as ledger;
use picket_proto::ledger::v1::credit_ledger_service_server::CreditLedgerService;
use prost::Message;
use sha2::{Digest, Sha256};
use sqlx::PgPool;
use tonic::{Request, Response, Status};
use uuid::Uuid;

use crate::batch::{Action, Call, Command, Commands, Created, Links, NewHold, NewPack, Partner};
use crate::engine::{self, HoldState, Operation, Retainer, TransferKind};
use crate::store::{self, HoldRecord, PackRow, RetainerRow, TransferRecord};
use crate::{engagement_api, reports};

/// A pack's validity when the operator does not say.
const DEFAULT_VALIDITY: chrono::Duration = chrono::Duration::days(365);
/// How long a hold reserves credits when the request does not say.
const DEFAULT_HOLD_TIMEOUT: chrono::Duration = chrono::Duration::days(14);
const MAX_KEY_LENGTH: usize = 200;

#[derive(Clone)]
pub struct LedgerApi {
    pub(crate) pool: PgPool,
    commands: Commands,
}

/// Operators handle any hold; an investigator only the hold of an engagement assigned to them.
async fn require_hold_of_assigned(
    pool: &PgPool,
    principal: &Principal,
    partner_id: &str,
    hold_id: Uuid,
) -> Result<(), Status> {
    if principal.role != Role::Investigator {
        return Ok(());
    }
    let engagement_id = store::hold(pool, hold_id)
        .await
        .map_err(internal)?
        .filter(|hold| hold.partner_id == partner_id)
        .ok_or_else(|| Status::not_found(format!("hold_id: no hold {hold_id}")))?
        .engagement_id;
    let assigned = match engagement_id {
        Some(engagement_id) => crate::engagements::get(pool, engagement_id)
            .await
            .map_err(internal)?
            .is_some_and(|engagement| engagement_api::may_read(principal, &engagement)),
        None => false,
    };
    if assigned {
        return Ok(());
    }
    Err(Status::permission_denied(format!(
        "hold_id: hold {hold_id} belongs to no engagement assigned to you"
    )))
}

impl LedgerApi {
    pub(crate) fn new(pool: PgPool, commands: Commands) -> LedgerApi {
        LedgerApi { pool, commands }
    }

    /// Applies a checked call by `principal` with the others that gathered, and answers it.
    pub(crate) async fn submit<R: Replayable>(
        &self,
        principal: &Principal,
        operation: &'static str,
        (partner_id, key): (&str, &str),
        request: &impl Message,
        action: Action,
    ) -> Result<Response<R>, Status> {
        let command = Command {
            partner_id: partner_id.to_owned(),
            key: key.to_owned(),
            operation,
            request_sha256: Sha256::digest(request.encode_to_vec()).to_vec(),
            actor: principal.to_proto(),
            action,
            span: tracing::Span::current(),
        };
        let answer = self
            .commands
            .submit(command)
            .await
            .map_err(|error| Status::unavailable(error.to_string()))??;
        let mut response: R = R::decode(answer.response.as_slice()).map_err(|error| {
            tracing::error!(%error, "a stored answer does not decode");
            Status::internal("internal error")
        })?;
        if answer.replayed {
            response.mark_replayed();
        }
        Ok(Response::new(response))
    }
}

pub(crate) fn check_key(key: &str) -> Result<(), Status> {
    if key.trim().is_empty() {
        return Err(Status::invalid_argument("idempotency_key: is required"));
    }
    if key.len() > MAX_KEY_LENGTH {
        return Err(Status::invalid_argument(format!(
            "idempotency_key: at most {MAX_KEY_LENGTH} characters"
        )));
    }
    Ok(())
}

/// An answer that says whether it repeats the first call's.
pub(crate) trait Replayable: Message + Default {
    fn mark_replayed(&mut self);
}

macro_rules! replayable {
    ($($response:ty),+ $(,)?) => {
        $(impl Replayable for $response {
            fn mark_replayed(&mut self) {
                self.replayed = true;
            }
        })+
    };
}

replayable!(
    ledger::PurchaseCreditsResponse,
    ledger::PlaceHoldResponse,
    ledger::PostHoldResponse,
    ledger::VoidHoldResponse,
    ledger::SetCreditTermsResponse,
    ledger::OpenEngagementResponse,
    ledger::AssignInvestigatorResponse,
    ledger::LogWorkResponse,
    ledger::RecordRecommendationsResponse,
    ledger::CloseEngagementResponse,
);

fn pack_state(pack: &PackRow, now: DateTime<Utc>) -> ledger::PackState {
    if pack.expired > 0 || (pack.expires_at <= now && pack.remaining == 0 && pack.used == 0) {
        ledger::PackState::Expired
    } else if pack.remaining == 0 {
        ledger::PackState::Exhausted
    } else {
        ledger::PackState::Active
    }
}

pub(crate) fn pack_proto(pack: &PackRow, now: DateTime<Utc>) -> ledger::CreditPack {
    ledger::CreditPack {
        pack_id: pack.pack_id.to_string(),
        partner_id: pack.partner_id.clone(),
        minutes_purchased: pack.purchased,
        minutes_remaining: pack.remaining,
        minutes_used: pack.used,
        minutes_expired: pack.expired,
        purchased_at: Some(to_timestamp(pack.purchased_at)),
        valid_from: Some(to_timestamp(pack.valid_from)),
        expires_at: Some(to_timestamp(pack.expires_at)),
        state: pack_state(pack, now).into(),
        purchase_reference: pack.purchase_reference.clone(),
        description: pack.description.clone(),
        issued_by: Some(common::Principal {
            subject: pack.issued_by.clone(),
            role: common::Role::Operator.into(),
            ..Default::default()
        }),
    }
}

/// A partner's balance from its position and packs.
pub(crate) fn balance_proto(
    partner_id: &str,
    row: Option<&RetainerRow>,
    position: &Retainer,
    packs: &[PackRow],
    now: DateTime<Utc>,
) -> ledger::Balance {
    let next_expiry = packs
        .iter()
        .filter(|pack| pack.remaining > 0 && pack.expires_at > now)
        .min_by_key(|pack| pack.expires_at);
    ledger::Balance {
        partner_id: partner_id.to_owned(),
        available_minutes: position.available(),
        held_minutes: position.held(),
        remaining_minutes: position.remaining(),
        overdraft_limit_minutes: position.overdraft_limit,
        low_balance_threshold_minutes: row.map_or(0, |row| row.low_balance_threshold),
        next_expiry_at: next_expiry.map(|pack| to_timestamp(pack.expires_at)),
        next_expiry_minutes: next_expiry.map_or(0, |pack| pack.remaining),
        as_of: Some(to_timestamp(now)),
        packs: packs.iter().map(|pack| pack_proto(pack, now)).collect(),
    }
}

fn terms_proto(row: &RetainerRow) -> ledger::CreditTerms {
    ledger::CreditTerms {
        partner_id: row.partner_id.clone(),
        overdraft_limit_minutes: row.overdraft_limit,
        low_balance_threshold_minutes: row.low_balance_threshold,
        updated_at: row.terms_updated_at.map(to_timestamp),
        updated_by: (!row.terms_updated_by.is_empty()).then(|| common::Principal {
            subject: row.terms_updated_by.clone(),
            role: row.terms_updated_role,
            ..Default::default()
        }),
    }
}

pub(crate) fn hold_proto(hold: &HoldRecord) -> ledger::Hold {
    let state = match hold.state {
        HoldState::Pending => ledger::HoldState::Pending,
        HoldState::Closed => ledger::HoldState::Posted,
        HoldState::Voided => ledger::HoldState::Voided,
        HoldState::Expired => ledger::HoldState::Expired,
    };
    ledger::Hold {
        hold_id: hold.hold_id.to_string(),
        partner_id: hold.partner_id.clone(),
        engagement_id: hold
            .engagement_id
            .map(|id| id.to_string())
            .unwrap_or_default(),
        amount_minutes: hold.amount,
        state: state.into(),
        created_at: Some(to_timestamp(hold.created_at)),
        expires_at: Some(to_timestamp(hold.expires_at)),
        resolved_at: hold.resolved_at.map(to_timestamp),
        posted_minutes: hold.used,
        description: hold.description.clone(),
        created_by: Some(common::Principal {
            subject: hold.created_by.clone(),
            ..Default::default()
        }),
        transfer_id: String::new(),
    }
}

pub(crate) fn transfer_kind_proto(kind: TransferKind) -> ledger::TransferKind {
    match kind {
        TransferKind::Purchase => ledger::TransferKind::Purchase,
        TransferKind::Hold => ledger::TransferKind::Hold,
        TransferKind::HoldPost => ledger::TransferKind::HoldPost,
        TransferKind::HoldVoid => ledger::TransferKind::HoldVoid,
        TransferKind::HoldExpire => ledger::TransferKind::HoldExpire,
        TransferKind::WorkDebit => ledger::TransferKind::WorkDebit,
        TransferKind::Expiry => ledger::TransferKind::Expiry,
    }
}

fn optional_id(id: Option<Uuid>) -> String {
    id.map(|id| id.to_string()).unwrap_or_default()
}

/// A transfer as the API shows it; `pending_transfer_id` is the HOLD transfer it resolves.
pub(crate) fn transfer_proto(
    transfer: &TransferRecord,
    pending_transfer_id: Option<Uuid>,
) -> ledger::Transfer {
    let actor = if transfer.actor_role == 0 {
        common::Actor {
            kind: common::ActorKind::System.into(),
            service: crate::SERVICE.into(),
            ..Default::default()
        }
    } else {
        common::Actor {
            kind: common::ActorKind::Principal.into(),
            principal: Some(common::Principal {
                subject: transfer.actor_subject.clone(),
                role: transfer.actor_role,
                ..Default::default()
            }),
            ..Default::default()
        }
    };
    ledger::Transfer {
        transfer_id: transfer.transfer_id.to_string(),
        partner_id: transfer.partner_id.clone(),
        kind: transfer_kind_proto(transfer.kind).into(),
        debit_account_id: transfer.debit_account_id.to_string(),
        credit_account_id: transfer.credit_account_id.to_string(),
        amount_minutes: transfer.amount,
        pack_id: optional_id(transfer.pack_id),
        engagement_id: optional_id(transfer.engagement_id),
        hold_id: optional_id(transfer.hold_id),
        work_entry_id: optional_id(transfer.work_entry_id),
        idempotency_key: transfer.idempotency_key.clone(),
        created_at: Some(to_timestamp(transfer.created_at)),
        description: transfer.description.clone(),
        pending_transfer_id: optional_id(pending_transfer_id),
        actor: Some(actor),
    }
}

pub(crate) fn purchase(
    call: &mut Call<'_>,
    request: &ledger::PurchaseCreditsRequest,
    valid_from: DateTime<Utc>,
    expires_at: DateTime<Utc>,
) -> Result<ledger::PurchaseCreditsResponse, Status> {
    let pack_id = Uuid::now_v7();
    let recorded = call.apply(
        &Operation::Purchase {
            pack_id,
            minutes: request.minutes,
            expires_at,
        },
        &request.description,
        &Created {
            pack: Some(NewPack {
                valid_from,
                purchase_reference: &request.purchase_reference,
                description: &request.description,
            }),
            hold: None,
        },
        Links::default(),
    )?;
    let balance = call.balance();
    let pack = balance
        .packs
        .iter()
        .find(|pack| pack.pack_id == pack_id.to_string())
        .cloned();
    let transfer = recorded
        .iter()
        .find(|transfer| transfer.kind == TransferKind::Purchase)
        .map(|transfer| transfer_proto(transfer, None));
    let purchased = ledger::CreditsPurchased {
        partner_id: request.partner_id.clone(),
        pack: pack.clone(),
        transfer_id: transfer
            .as_ref()
            .map(|transfer| transfer.transfer_id.clone())
            .unwrap_or_default(),
        available_minutes: balance.available_minutes,
        issued_by: Some(call.actor.clone()),
        purchased_at: Some(to_timestamp(call.now)),
        ..Default::default()
    };
    call.publish(&purchased)?;
    tracing::info!(partner_id = %request.partner_id, %pack_id, minutes = request.minutes, "credits purchased");
    Ok(ledger::PurchaseCreditsResponse {
        pack,
        transfer,
        balance: Some(balance),
        replayed: false,
    })
}

pub(crate) fn place_hold(
    call: &mut Call<'_>,
    request: &ledger::PlaceHoldRequest,
    engagement_id: Option<Uuid>,
    timeout: chrono::Duration,
) -> Result<ledger::PlaceHoldResponse, Status> {
    match engagement_id {
        Some(engagement_id) => call.require_assigned(engagement_id)?,
        None if call.actor.role != i32::from(common::Role::Operator) => {
            return Err(Status::permission_denied(
                "engagement_id: an investigator places holds only for an engagement assigned to them",
            ));
        }
        None => {}
    }
    let hold_id = Uuid::now_v7();
    call.apply(
        &Operation::PlaceHold {
            hold_id,
            minutes: request.minutes,
            expires_at: call.now + timeout,
        },
        &request.description,
        &Created {
            pack: None,
            hold: Some(NewHold {
                engagement_id,
                description: &request.description,
            }),
        },
        Links {
            engagement_id,
            work_entry_id: None,
        },
    )?;
    Ok(ledger::PlaceHoldResponse {
        hold: Some(call.hold(hold_id)?),
        balance: Some(call.balance()),
        replayed: false,
    })
}

/// What a pending hold still reserves, or why it cannot be posted or voided.
fn pending(call: &Call<'_>, hold_id: Uuid) -> Result<i64, Status> {
    call.position()
        .holds
        .get(&hold_id)
        .map(engine::Hold::reserved)
        .ok_or_else(|| {
            Status::failed_precondition(format!("hold_id: hold {hold_id} is not pending"))
        })
}

/// Ends a pending hold as `state`; returns it and the balance after.
fn release(
    call: &mut Call<'_>,
    hold_id: Uuid,
    state: HoldState,
    description: &str,
) -> Result<(ledger::Hold, ledger::Balance), Status> {
    call.apply(
        &Operation::ReleaseHold { hold_id, state },
        description,
        &Created::default(),
        Links::default(),
    )?;
    Ok((call.hold(hold_id)?, call.balance()))
}

pub(crate) fn post_hold(
    call: &mut Call<'_>,
    request: &ledger::PostHoldRequest,
    hold_id: Uuid,
) -> Result<ledger::PostHoldResponse, Status> {
    let reserved = pending(call, hold_id)?;
    let minutes = if request.minutes == 0 {
        reserved
    } else {
        request.minutes
    };
    if minutes > reserved {
        return Err(Status::invalid_argument(format!(
            "minutes: at most the {reserved} minutes the hold reserves"
        )));
    }
    if minutes > 0 {
        call.apply(
            &Operation::Work {
                minutes,
                hold_id: Some(hold_id),
            },
            &request.description,
            &Created::default(),
            Links::default(),
        )?;
    }
    let (hold, balance) = release(call, hold_id, HoldState::Closed, &request.description)?;
    Ok(ledger::PostHoldResponse {
        hold: Some(hold),
        balance: Some(balance),
        replayed: false,
    })
}

pub(crate) fn void_hold(
    call: &mut Call<'_>,
    request: &ledger::VoidHoldRequest,
    hold_id: Uuid,
) -> Result<ledger::VoidHoldResponse, Status> {
    pending(call, hold_id)?;
    let (hold, balance) = release(call, hold_id, HoldState::Voided, &request.reason)?;
    Ok(ledger::VoidHoldResponse {
        hold: Some(hold),
        balance: Some(balance),
        replayed: false,
    })
}

pub(crate) fn set_terms(
    call: &mut Call<'_>,
    request: &ledger::SetCreditTermsRequest,
) -> ledger::SetCreditTermsResponse {
    let (subject, role, now) = (call.actor.subject.clone(), call.actor.role, call.now);
    let row = call.terms();
    row.overdraft_limit = request.overdraft_limit_minutes;
    row.low_balance_threshold = request.low_balance_threshold_minutes;
    row.terms_updated_at = Some(now);
    row.terms_updated_by = subject;
    row.terms_updated_role = role;
    ledger::SetCreditTermsResponse {
        terms: Some(terms_proto(row)),
        replayed: false,
    }
}

#[tonic::async_trait]
impl CreditLedgerService for LedgerApi {
    async fn purchase_credits(
        &self,
        request: Request<ledger::PurchaseCreditsRequest>,
    ) -> Result<Response<ledger::PurchaseCreditsResponse>, Status> {
        let principal = Principal::of(&request)?.clone();
        let message = request.into_inner();
        principal.require_role(&[Role::Operator])?;
        check_partner_id(&message.partner_id)?;
        check_key(&message.idempotency_key)?;
        if message.minutes <= 0 {
            return Err(Status::invalid_argument("minutes: must be positive"));
        }
        let validity = positive_duration(message.validity.as_ref(), DEFAULT_VALIDITY, "validity")?;
        let now = Utc::now();
        let valid_from = match &message.valid_from {
            None => now,
            Some(timestamp) => from_timestamp(timestamp)
                .ok_or_else(|| Status::invalid_argument("valid_from: out of range"))?,
        };
        let expires_at = valid_from + validity;
        if expires_at <= now {
            return Err(Status::invalid_argument(
                "validity: the pack would have expired already",
            ));
        }
        let action = Action::Purchase {
            request: message.clone(),
            valid_from,
            expires_at,
        };
        self.submit(
            &principal,
            "purchase_credits",
            (&message.partner_id, &message.idempotency_key),
            &message,
            action,
        )
        .await
    }

    async fn place_hold(
        &self,
        request: Request<ledger::PlaceHoldRequest>,
    ) -> Result<Response<ledger::PlaceHoldResponse>, Status> {
        let principal = Principal::of(&request)?.clone();
        let message = request.into_inner();
        principal.require_role(&[Role::Operator, Role::Investigator])?;
        check_partner_id(&message.partner_id)?;
        check_key(&message.idempotency_key)?;
        if message.minutes <= 0 {
            return Err(Status::invalid_argument("minutes: must be positive"));
        }
        let engagement_id = parse_optional_uuid(&message.engagement_id, "engagement_id")?;
        let timeout = positive_duration(message.timeout.as_ref(), DEFAULT_HOLD_TIMEOUT, "timeout")?;
        let action = Action::PlaceHold {
            request: message.clone(),
            engagement_id,
            timeout,
        };
        self.submit(
            &principal,
            "place_hold",
            (&message.partner_id, &message.idempotency_key),
            &message,
            action,
        )
        .await
    }

    async fn post_hold(
        &self,
        request: Request<ledger::PostHoldRequest>,
    ) -> Result<Response<ledger::PostHoldResponse>, Status> {
        let principal = Principal::of(&request)?.clone();
        let message = request.into_inner();
        principal.require_role(&[Role::Operator, Role::Investigator])?;
        check_partner_id(&message.partner_id)?;
        check_key(&message.idempotency_key)?;
        let hold_id = parse_uuid(&message.hold_id, "hold_id")?;
        if message.minutes < 0 {
            return Err(Status::invalid_argument("minutes: must not be negative"));
        }
        require_hold_of_assigned(&self.pool, &principal, &message.partner_id, hold_id).await?;
        let action = Action::PostHold {
            request: message.clone(),
            hold_id,
        };
        self.submit(
            &principal,
            "post_hold",
            (&message.partner_id, &message.idempotency_key),
            &message,
            action,
        )
        .await
    }

    async fn void_hold(
        &self,
        request: Request<ledger::VoidHoldRequest>,
    ) -> Result<Response<ledger::VoidHoldResponse>, Status> {
        let principal = Principal::of(&request)?.clone();
        let message = request.into_inner();
        principal.require_role(&[Role::Operator, Role::Investigator])?;
        check_partner_id(&message.partner_id)?;
        check_key(&message.idempotency_key)?;
        let hold_id = parse_uuid(&message.hold_id, "hold_id")?;
        require_hold_of_assigned(&self.pool, &principal, &message.partner_id, hold_id).await?;
        let action = Action::VoidHold {
            request: message.clone(),
            hold_id,
        };
        self.submit(
            &principal,
            "void_hold",
            (&message.partner_id, &message.idempotency_key),
            &message,
            action,
        )
        .await
    }

    async fn get_hold(
        &self,
        request: Request<ledger::GetHoldRequest>,
    ) -> Result<Response<ledger::GetHoldResponse>, Status> {
        let principal = Principal::of(&request)?.clone();
        let hold_id = parse_uuid(&request.get_ref().hold_id, "hold_id")?;
        principal.require_role(&[Role::Operator, Role::Investigator, Role::Partner])?;
        let hold = store::hold(&self.pool, hold_id).await.map_err(internal)?;
        let engagement = match hold.as_ref().and_then(|hold| hold.engagement_id) {
            Some(engagement_id) if principal.role == Role::Investigator => {
                crate::engagements::get(&self.pool, engagement_id)
                    .await
                    .map_err(internal)?
            }
            _ => None,
        };
        let hold = hold
            .filter(|hold| {
                principal.can_access_partner(&hold.partner_id)
                    || engagement
                        .as_ref()
                        .is_some_and(|engagement| engagement_api::may_read(&principal, engagement))
            })
            .ok_or_else(|| Status::not_found(format!("hold_id: no hold {hold_id}")))?;
        Ok(Response::new(ledger::GetHoldResponse {
            hold: Some(hold_proto(&hold)),
        }))
    }

    async fn list_holds(
        &self,
        request: Request<ledger::ListHoldsRequest>,
    ) -> Result<Response<ledger::ListHoldsResponse>, Status> {
        let principal = Principal::of(&request)?.clone();
        let message = request.into_inner();
        check_partner_id(&message.partner_id)?;
        principal.require_role(&[Role::Operator, Role::Investigator, Role::Partner])?;
        principal.require_partner(&message.partner_id)?;
        let states = parse_each(&message.states, "states", "a hold state", |value| {
            match ledger::HoldState::try_from(value).ok()? {
                ledger::HoldState::Pending => Some(HoldState::Pending.name()),
                ledger::HoldState::Posted => Some(HoldState::Closed.name()),
                ledger::HoldState::Voided => Some(HoldState::Voided.name()),
                ledger::HoldState::Expired => Some(HoldState::Expired.name()),
                ledger::HoldState::Unspecified => None,
            }
        })?;
        let engagement_id = parse_optional_uuid(&message.engagement_id, "engagement_id")?;
        let limit = page_size(message.page_size, 50, 500)?;
        let offset = parse_offset_token(&message.page_token)?;
        let holds = store::holds(
            &self.pool,
            &message.partner_id,
            &states,
            engagement_id,
            offset,
            limit,
        )
        .await
        .map_err(internal)?;
        Ok(Response::new(ledger::ListHoldsResponse {
            next_page_token: next_offset_token(offset, holds.len(), limit),
            holds: holds.iter().map(hold_proto).collect(),
        }))
    }

    async fn get_balance(
        &self,
        request: Request<ledger::GetBalanceRequest>,
    ) -> Result<Response<ledger::GetBalanceResponse>, Status> {
        let principal = Principal::of(&request)?.clone();
        let partner_id = request.into_inner().partner_id;
        check_partner_id(&partner_id)?;
        principal.require_role(&[Role::Operator, Role::Investigator, Role::Partner])?;
        principal.require_partner(&partner_id)?;
        let now = Utc::now();
        let balance = match Partner::read(&self.pool, &partner_id)
            .await
            .map_err(internal)?
        {
            Some(partner) => partner.balance(now),
            None => balance_proto(&partner_id, None, &Retainer::default(), &[], now),
        };
        Ok(Response::new(ledger::GetBalanceResponse {
            balance: Some(balance),
        }))
    }

    async fn list_credit_packs(
        &self,
        request: Request<ledger::ListCreditPacksRequest>,
    ) -> Result<Response<ledger::ListCreditPacksResponse>, Status> {
        let principal = Principal::of(&request)?.clone();
        let message = request.into_inner();
        check_partner_id(&message.partner_id)?;
        principal.require_role(&[Role::Operator, Role::Investigator, Role::Partner])?;
        principal.require_partner(&message.partner_id)?;
        let states = parse_each(&message.states, "states", "a pack state", |value| {
            ledger::PackState::try_from(value)
                .ok()
                .filter(|state| *state != ledger::PackState::Unspecified)
        })?;
        let limit = page_size(message.page_size, 50, 500)?;
        let offset = parse_offset_token(&message.page_token)?;
        let now = Utc::now();
        let packs = reports::packs(&self.pool, &message.partner_id, offset, limit)
            .await
            .map_err(internal)?;
        let next_page_token = next_offset_token(offset, packs.len(), limit);
        Ok(Response::new(ledger::ListCreditPacksResponse {
            packs: packs
                .iter()
                .map(|pack| pack_proto(pack, now))
                .filter(|pack| states.is_empty() || states.contains(&pack.state()))
                .collect(),
            next_page_token,
        }))
    }

    async fn list_transfers(
        &self,
        request: Request<ledger::ListTransfersRequest>,
    ) -> Result<Response<ledger::ListTransfersResponse>, Status> {
        let principal = Principal::of(&request)?.clone();
        let message = request.into_inner();
        check_partner_id(&message.partner_id)?;
        principal.require_role(&[Role::Operator, Role::Investigator, Role::Partner])?;
        principal.require_partner(&message.partner_id)?;
        let kinds = parse_each(&message.kinds, "kinds", "a transfer kind", |value| {
            let kind = ledger::TransferKind::try_from(value).ok()?;
            TransferKind::ALL
                .into_iter()
                .find(|known| transfer_kind_proto(*known) == kind)
                .map(|known| known.name())
        })?;
        let (from, until) = time_range(message.created.as_ref(), "created")?;
        let engagement_id = parse_optional_uuid(&message.engagement_id, "engagement_id")?;
        let limit = page_size(message.page_size, 100, 1000)?;
        let offset = parse_offset_token(&message.page_token)?;
        let transfers = reports::transfers(
            &self.pool,
            &reports::TransferFilter {
                partner_id: &message.partner_id,
                kinds: &kinds,
                from,
                until,
                engagement_id,
            },
            offset,
            limit,
        )
        .await
        .map_err(internal)?;
        Ok(Response::new(ledger::ListTransfersResponse {
            next_page_token: next_offset_token(offset, transfers.len(), limit),
            transfers: transfers
                .iter()
                .map(|(transfer, pending)| transfer_proto(transfer, *pending))
                .collect(),
        }))
    }

    async fn get_statement(
        &self,
        request: Request<ledger::GetStatementRequest>,
    ) -> Result<Response<ledger::GetStatementResponse>, Status> {
        let principal = Principal::of(&request)?.clone();
        let message = request.into_inner();
        check_partner_id(&message.partner_id)?;
        principal.require_role(&[Role::Operator, Role::Investigator, Role::Partner])?;
        principal.require_partner(&message.partner_id)?;
        let (Some(from), Some(until)) = time_range(message.period.as_ref(), "period")? else {
            return Err(Status::invalid_argument(
                "period: start_time and end_time are required",
            ));
        };
        if until <= from {
            return Err(Status::invalid_argument(
                "period: end_time must be after start_time",
            ));
        }
        let format = ledger::StatementFormat::try_from(message.format)
            .map_err(|_| Status::invalid_argument("format: unknown statement format"))?;
        let statement = reports::statement(&self.pool, &message.partner_id, from, until)
            .await
            .map_err(internal)?;
        let csv = if format == ledger::StatementFormat::Csv {
            reports::csv(&statement)
        } else {
            Vec::new()
        };
        Ok(Response::new(ledger::GetStatementResponse {
            statement: Some(statement),
            csv,
        }))
    }

    async fn get_credit_terms(
        &self,
        request: Request<ledger::GetCreditTermsRequest>,
    ) -> Result<Response<ledger::GetCreditTermsResponse>, Status> {
        let principal = Principal::of(&request)?.clone();
        let partner_id = request.into_inner().partner_id;
        check_partner_id(&partner_id)?;
        principal.require_role(&[Role::Operator, Role::Investigator, Role::Partner])?;
        principal.require_partner(&partner_id)?;
        let row = store::retainer(&self.pool, &partner_id)
            .await
            .map_err(internal)?;
        let terms = row.as_ref().map_or_else(
            || ledger::CreditTerms {
                partner_id: partner_id.clone(),
                ..Default::default()
            },
            terms_proto,
        );
        Ok(Response::new(ledger::GetCreditTermsResponse {
            terms: Some(terms),
        }))
    }

    async fn set_credit_terms(
        &self,
        request: Request<ledger::SetCreditTermsRequest>,
    ) -> Result<Response<ledger::SetCreditTermsResponse>, Status> {
        let principal = Principal::of(&request)?.clone();
        let message = request.into_inner();
        principal.require_role(&[Role::Operator])?;
        check_partner_id(&message.partner_id)?;
        check_key(&message.idempotency_key)?;
        if message.overdraft_limit_minutes < 0 {
            return Err(Status::invalid_argument(
                "overdraft_limit_minutes: must not be negative",
            ));
        }
        if message.low_balance_threshold_minutes < 0 {
            return Err(Status::invalid_argument(
                "low_balance_threshold_minutes: must not be negative",
            ));
        }
        self.submit(
            &principal,
            "set_credit_terms",
            (&message.partner_id, &message.idempotency_key),
            &message,
            Action::SetTerms(message.clone()),
        )
        .await
    }

    async fn list_accounts(
        &self,
        request: Request<ledger::ListAccountsRequest>,
    ) -> Result<Response<ledger::ListAccountsResponse>, Status> {
        let principal = Principal::of(&request)?.clone();
        let message = request.into_inner();
        principal.require_role(&[Role::Operator, Role::Investigator, Role::Partner])?;
        // Partners see their own retainer; the operator's accounts and every partner's are staff's.
        if message.partner_id.is_empty() {
            principal.require_role(&[Role::Operator, Role::Investigator])?;
        } else {
            check_partner_id(&message.partner_id)?;
            principal.require_partner(&message.partner_id)?;
        }
        let kinds = parse_each(&message.kinds, "kinds", "an account kind", |value| {
            match ledger::AccountKind::try_from(value).ok()? {
                ledger::AccountKind::PartnerRetainer => Some("partner_retainer"),
                ledger::AccountKind::OperatorIssued => Some("operator_issued"),
                ledger::AccountKind::OperatorConsumed => Some("operator_consumed"),
                ledger::AccountKind::OperatorExpired => Some("operator_expired"),
                ledger::AccountKind::Unspecified => None,
            }
        })?;
        let limit = page_size(message.page_size, 100, 1000)?;
        let offset = parse_offset_token(&message.page_token)?;
        let partner_id = (!message.partner_id.is_empty()).then_some(message.partner_id.as_str());
        let accounts = reports::accounts(&self.pool, partner_id, &kinds, offset, limit)
            .await
            .map_err(internal)?;
        Ok(Response::new(ledger::ListAccountsResponse {
            next_page_token: next_offset_token(offset, accounts.len(), limit),
            accounts,
        }))
    }
}
