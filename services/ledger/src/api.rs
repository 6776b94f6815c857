//! CreditLedgerService: the operator issues packs of credits and sets a partner's credit terms;
//! partners read their own balance and terms, operator staff anyone's. Every mutating call carries
//! an idempotency key: a retry gets the first answer (marked replayed), the same key with other
//! fields is refused and writes nothing.

use chrono::{DateTime, Utc};
use picket_platform::auth::{Role, check_partner_id};
use picket_platform::db::outbox;
use picket_platform::grpc::{
    internal, next_offset_token, page_size, parse_each, parse_offset_token, parse_optional_uuid,
    parse_uuid, positive_duration,
};
use picket_platform::time::{from_timestamp, to_timestamp};
use picket_platform::{EventFactory, Principal};
use picket_proto::common::v1 as common;
use picket_proto::ledger::v1 as ledger;
use picket_proto::ledger::v1::credit_ledger_service_server::CreditLedgerService;
use prost::Message;
use sha2::{Digest, Sha256};
use sqlx::{PgConnection, PgPool};
use tonic::{Request, Response, Status};
use uuid::Uuid;

use crate::engine::{self, Operation, Refusal, Retainer};
use crate::store::{self, Claim, HoldRecord, PackRow, RetainerRow};

/// A pack's validity when the operator does not say.
const DEFAULT_VALIDITY: chrono::Duration = chrono::Duration::days(365);
const MAX_KEY_LENGTH: usize = 200;

#[derive(Clone)]
pub struct LedgerApi {
    pub(crate) pool: PgPool,
    pub(crate) events: EventFactory,
}

impl LedgerApi {
    pub fn new(pool: PgPool, events: EventFactory) -> LedgerApi {
        LedgerApi { pool, events }
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

/// What a call's key says, or the refusal of a reused key.
async fn claim(
    connection: &mut PgConnection,
    partner_id: &str,
    key: &str,
    operation: &str,
    request: &impl Message,
) -> Result<Option<Vec<u8>>, Status> {
    let sha256 = Sha256::digest(request.encode_to_vec());
    match store::claim_key(connection, partner_id, key, operation, &sha256, Utc::now())
        .await
        .map_err(internal)?
    {
        Claim::Fresh => Ok(None),
        Claim::Replay(response) => Ok(Some(response)),
        Claim::Conflict => Err(Status::invalid_argument(format!(
            "idempotency_key: {key} was used for another call or with other fields"
        ))),
    }
}

pub(crate) fn decode<M: Message + Default>(response: &[u8]) -> Result<M, Status> {
    M::decode(response).map_err(|error| {
        tracing::error!(%error, "a stored answer does not decode");
        Status::internal("internal error")
    })
}

fn pack_state(pack: &PackRow, now: DateTime<Utc>) -> ledger::PackState {
    if pack.expired > 0 || (pack.expires_at <= now && pack.remaining == 0 && pack.used == 0) {
        ledger::PackState::Expired
    } else if pack.remaining == 0 {
        ledger::PackState::Exhausted
    } else {
        ledger::PackState::Active
    }
}

fn pack_proto(pack: &PackRow, now: DateTime<Utc>) -> ledger::CreditPack {
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
fn balance_proto(
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

fn refusal_status(refusal: Refusal) -> Status {
    let message = refusal.to_string();
    match refusal {
        Refusal::NotPositive => Status::invalid_argument(message),
        Refusal::PackExists(_) | Refusal::HoldExists(_) => Status::already_exists(message),
        Refusal::NoSuchHold(_) => Status::not_found(message),
        Refusal::HoldNotPending(_) | Refusal::Insufficient { .. } => {
            Status::failed_precondition(message)
        }
    }
}

fn hold_proto(hold: &HoldRecord) -> ledger::Hold {
    let state = match hold.state.as_str() {
        "pending" => ledger::HoldState::Pending,
        "closed" => ledger::HoldState::Posted,
        "voided" => ledger::HoldState::Voided,
        _ => ledger::HoldState::Expired,
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

/// A call that moves credits: its transaction, with the partner's position locked and what
/// lapsed (holds past their timeout, packs past their validity) expired first.
pub(crate) struct Mutation {
    pub(crate) transaction: sqlx::Transaction<'static, sqlx::Postgres>,
    partner_id: String,
    key: String,
    row: RetainerRow,
    pub(crate) position: Retainer,
    pub(crate) now: DateTime<Utc>,
}

enum Begun {
    /// A retry: the first call's encoded answer.
    Replay(Vec<u8>),
    Fresh(Box<Mutation>),
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
    ledger::OpenEngagementResponse,
    ledger::LogWorkResponse,
    ledger::CloseEngagementResponse,
);

impl LedgerApi {
    /// Begins a credit-moving call, or answers a retry of one with the first answer (`Err`).
    pub(crate) async fn mutate<R: Replayable>(
        &self,
        partner_id: &str,
        key: &str,
        operation: &str,
        request: &impl Message,
    ) -> Result<Result<Box<Mutation>, R>, Status> {
        match self.begin(partner_id, key, operation, request).await? {
            Begun::Fresh(mutation) => Ok(Ok(mutation)),
            Begun::Replay(response) => {
                let mut response: R = decode(&response)?;
                response.mark_replayed();
                Ok(Err(response))
            }
        }
    }

    async fn begin(
        &self,
        partner_id: &str,
        key: &str,
        operation: &str,
        request: &impl Message,
    ) -> Result<Begun, Status> {
        let mut transaction = self.pool.begin().await.map_err(internal)?;
        if let Some(response) = claim(&mut transaction, partner_id, key, operation, request).await?
        {
            return Ok(Begun::Replay(response));
        }
        let row = store::lock_retainer(&mut transaction, partner_id)
            .await
            .map_err(internal)?;
        let packs = store::packs(&mut transaction, partner_id)
            .await
            .map_err(internal)?;
        let mut mutation = Mutation {
            position: store::position(&mut transaction, &row, &packs)
                .await
                .map_err(internal)?,
            transaction,
            partner_id: partner_id.to_owned(),
            key: key.to_owned(),
            row,
            now: Utc::now(),
        };
        mutation
            .apply(
                &Operation::Expire { now: mutation.now },
                ("picket", 0),
                "expired",
                &store::Created::default(),
            )
            .await?;
        Ok(Begun::Fresh(Box::new(mutation)))
    }
}

impl Mutation {
    /// Applies `operation` by `actor` (subject and role) and records what it moved.
    pub(crate) async fn apply(
        &mut self,
        operation: &Operation,
        actor: (&str, i32),
        description: &str,
        created: &store::Created<'_>,
    ) -> Result<Vec<store::TransferRow>, Status> {
        let (after, transfers) =
            engine::apply(&self.position, operation).map_err(refusal_status)?;
        let rows = store::persist(
            &mut self.transaction,
            &self.position,
            &after,
            &transfers,
            &store::Recorded {
                partner_id: &self.partner_id,
                idempotency_key: &self.key,
                description,
                actor_subject: actor.0,
                actor_role: actor.1,
                now: self.now,
            },
            created,
        )
        .await
        .map_err(internal)?;
        self.position = after;
        Ok(rows)
    }

    /// Ends a pending hold as `state`; returns it and the balance after.
    async fn release(
        &mut self,
        hold_id: Uuid,
        state: engine::HoldState,
        actor: (&str, i32),
        description: &str,
    ) -> Result<(ledger::Hold, ledger::Balance), Status> {
        self.apply(
            &Operation::ReleaseHold { hold_id, state },
            actor,
            description,
            &store::Created::default(),
        )
        .await?;
        Ok((self.hold(hold_id).await?, self.balance().await?))
    }

    pub(crate) async fn balance(&mut self) -> Result<ledger::Balance, Status> {
        let packs = store::packs(&mut self.transaction, &self.partner_id)
            .await
            .map_err(internal)?;
        Ok(balance_proto(
            &self.partner_id,
            Some(&self.row),
            &self.position,
            &packs,
            self.now,
        ))
    }

    pub(crate) async fn hold(&mut self, hold_id: Uuid) -> Result<ledger::Hold, Status> {
        store::hold(&mut *self.transaction, hold_id)
            .await
            .map_err(internal)?
            .map(|hold| hold_proto(&hold))
            .ok_or_else(|| Status::not_found(format!("hold_id: no hold {hold_id}")))
    }

    /// Stores the answer for retries and commits.
    pub(crate) async fn finish(mut self, response: &impl Message) -> Result<(), Status> {
        store::finish_key(
            &mut self.transaction,
            &self.partner_id,
            &self.key,
            &response.encode_to_vec(),
        )
        .await
        .map_err(internal)?;
        self.transaction.commit().await.map_err(internal)
    }
}

/// How long a hold reserves credits when the request does not say.
const DEFAULT_HOLD_TIMEOUT: chrono::Duration = chrono::Duration::days(14);

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

        let mut mutation = match self
            .mutate::<ledger::PurchaseCreditsResponse>(
                &message.partner_id,
                &message.idempotency_key,
                "purchase_credits",
                &message,
            )
            .await?
        {
            Ok(mutation) => mutation,
            Err(replayed) => return Ok(Response::new(replayed)),
        };
        let issued_by = principal.to_proto();
        let pack_id = Uuid::now_v7();
        let recorded = mutation
            .apply(
                &Operation::Purchase {
                    pack_id,
                    minutes: message.minutes,
                    expires_at,
                },
                (&issued_by.subject, issued_by.role),
                &message.description,
                &store::Created {
                    pack: Some(store::NewPack {
                        pack_id,
                        valid_from,
                        purchase_reference: &message.purchase_reference,
                        description: &message.description,
                    }),
                    hold: None,
                },
            )
            .await?;
        let balance = mutation.balance().await?;
        let pack = balance
            .packs
            .iter()
            .find(|pack| pack.pack_id == pack_id.to_string())
            .cloned();
        let transfer = recorded.first().map(|row| ledger::Transfer {
            transfer_id: row.transfer_id.to_string(),
            partner_id: message.partner_id.clone(),
            kind: ledger::TransferKind::Purchase.into(),
            debit_account_id: row.debit_account_id.to_string(),
            credit_account_id: row.credit_account_id.to_string(),
            amount_minutes: row.amount,
            pack_id: pack_id.to_string(),
            idempotency_key: message.idempotency_key.clone(),
            created_at: Some(to_timestamp(now)),
            description: message.description.clone(),
            actor: Some(common::Actor {
                kind: common::ActorKind::Principal.into(),
                principal: Some(issued_by.clone()),
                ..Default::default()
            }),
            ..Default::default()
        });
        let purchased = ledger::CreditsPurchased {
            partner_id: message.partner_id.clone(),
            pack: pack.clone(),
            transfer_id: transfer
                .as_ref()
                .map(|transfer| transfer.transfer_id.clone())
                .unwrap_or_default(),
            available_minutes: balance.available_minutes,
            issued_by: Some(issued_by),
            purchased_at: Some(to_timestamp(now)),
            ..Default::default()
        };
        let event = self
            .events
            .event(&purchased, now)
            .map_err(|error| Status::internal(error.to_string()))?;
        outbox::enqueue(&mut mutation.transaction, &event)
            .await
            .map_err(internal)?;
        let response = ledger::PurchaseCreditsResponse {
            pack,
            transfer,
            balance: Some(balance),
            replayed: false,
        };
        mutation.finish(&response).await?;
        tracing::info!(partner_id = %message.partner_id, %pack_id, minutes = message.minutes, "credits purchased");
        Ok(Response::new(response))
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
        let mut mutation = match self
            .mutate::<ledger::PlaceHoldResponse>(
                &message.partner_id,
                &message.idempotency_key,
                "place_hold",
                &message,
            )
            .await?
        {
            Ok(mutation) => mutation,
            Err(replayed) => return Ok(Response::new(replayed)),
        };
        let by = principal.to_proto();
        let hold_id = Uuid::now_v7();
        let expires_at = mutation.now + timeout;
        mutation
            .apply(
                &Operation::PlaceHold {
                    hold_id,
                    minutes: message.minutes,
                    expires_at,
                },
                (&by.subject, by.role),
                &message.description,
                &store::Created {
                    pack: None,
                    hold: Some(store::NewHold {
                        hold_id,
                        engagement_id,
                        description: &message.description,
                    }),
                },
            )
            .await?;
        let response = ledger::PlaceHoldResponse {
            hold: Some(mutation.hold(hold_id).await?),
            balance: Some(mutation.balance().await?),
            replayed: false,
        };
        mutation.finish(&response).await?;
        Ok(Response::new(response))
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
        let mut mutation = match self
            .mutate::<ledger::PostHoldResponse>(
                &message.partner_id,
                &message.idempotency_key,
                "post_hold",
                &message,
            )
            .await?
        {
            Ok(mutation) => mutation,
            Err(replayed) => return Ok(Response::new(replayed)),
        };
        let reserved = mutation
            .position
            .holds
            .get(&hold_id)
            .map(engine::Hold::reserved)
            .ok_or_else(|| {
                Status::failed_precondition(format!("hold_id: hold {hold_id} is not pending"))
            })?;
        let minutes = if message.minutes == 0 {
            reserved
        } else {
            message.minutes
        };
        if minutes > reserved {
            return Err(Status::invalid_argument(format!(
                "minutes: at most the {reserved} minutes the hold reserves"
            )));
        }
        let by = principal.to_proto();
        if minutes > 0 {
            mutation
                .apply(
                    &Operation::Work {
                        minutes,
                        hold_id: Some(hold_id),
                    },
                    (&by.subject, by.role),
                    &message.description,
                    &store::Created::default(),
                )
                .await?;
        }
        let (hold, balance) = mutation
            .release(
                hold_id,
                engine::HoldState::Closed,
                (&by.subject, by.role),
                &message.description,
            )
            .await?;
        let response = ledger::PostHoldResponse {
            hold: Some(hold),
            balance: Some(balance),
            replayed: false,
        };
        mutation.finish(&response).await?;
        Ok(Response::new(response))
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
        let mut mutation = match self
            .mutate::<ledger::VoidHoldResponse>(
                &message.partner_id,
                &message.idempotency_key,
                "void_hold",
                &message,
            )
            .await?
        {
            Ok(mutation) => mutation,
            Err(replayed) => return Ok(Response::new(replayed)),
        };
        if !mutation.position.holds.contains_key(&hold_id) {
            return Err(Status::failed_precondition(format!(
                "hold_id: hold {hold_id} is not pending"
            )));
        }
        let by = principal.to_proto();
        let (hold, balance) = mutation
            .release(
                hold_id,
                engine::HoldState::Voided,
                (&by.subject, by.role),
                &message.reason,
            )
            .await?;
        let response = ledger::VoidHoldResponse {
            hold: Some(hold),
            balance: Some(balance),
            replayed: false,
        };
        mutation.finish(&response).await?;
        Ok(Response::new(response))
    }

    async fn get_hold(
        &self,
        request: Request<ledger::GetHoldRequest>,
    ) -> Result<Response<ledger::GetHoldResponse>, Status> {
        let principal = Principal::of(&request)?.clone();
        let hold_id = parse_uuid(&request.get_ref().hold_id, "hold_id")?;
        principal.require_role(&[Role::Operator, Role::Investigator, Role::Partner])?;
        let hold = store::hold(&self.pool, hold_id)
            .await
            .map_err(internal)?
            .filter(|hold| principal.can_access_partner(&hold.partner_id))
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
                ledger::HoldState::Pending => Some("pending"),
                ledger::HoldState::Posted => Some("closed"),
                ledger::HoldState::Voided => Some("voided"),
                ledger::HoldState::Expired => Some("expired"),
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
        let mut connection = self.pool.acquire().await.map_err(internal)?;
        let row = store::retainer(&mut *connection, &partner_id)
            .await
            .map_err(internal)?;
        let packs = store::packs(&mut connection, &partner_id)
            .await
            .map_err(internal)?;
        let position = match &row {
            Some(row) => store::position(&mut connection, row, &packs)
                .await
                .map_err(internal)?,
            None => Retainer::default(),
        };
        Ok(Response::new(ledger::GetBalanceResponse {
            balance: Some(balance_proto(
                &partner_id,
                row.as_ref(),
                &position,
                &packs,
                Utc::now(),
            )),
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
        let mut transaction = self.pool.begin().await.map_err(internal)?;
        if let Some(response) = claim(
            &mut transaction,
            &message.partner_id,
            &message.idempotency_key,
            "set_credit_terms",
            &message,
        )
        .await?
        {
            let mut response: ledger::SetCreditTermsResponse = decode(&response)?;
            response.replayed = true;
            return Ok(Response::new(response));
        }
        store::lock_retainer(&mut transaction, &message.partner_id)
            .await
            .map_err(internal)?;
        let by = principal.to_proto();
        let row = store::set_terms(
            &mut transaction,
            &message.partner_id,
            message.overdraft_limit_minutes,
            message.low_balance_threshold_minutes,
            (&by.subject, by.role),
            Utc::now(),
        )
        .await
        .map_err(internal)?;
        let response = ledger::SetCreditTermsResponse {
            terms: Some(terms_proto(&row)),
            replayed: false,
        };
        store::finish_key(
            &mut transaction,
            &message.partner_id,
            &message.idempotency_key,
            &response.encode_to_vec(),
        )
        .await
        .map_err(internal)?;
        transaction.commit().await.map_err(internal)?;
        Ok(Response::new(response))
    }
}
