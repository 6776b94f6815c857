//! CreditLedgerService: the operator issues packs of credits and sets a partner's credit terms;
//! partners read their own balance and terms, operator staff anyone's. Every mutating call carries
//! an idempotency key: a retry gets the first answer (marked replayed), the same key with other
//! fields is refused and writes nothing.

use chrono::{DateTime, Utc};
use picket_platform::auth::Role;
use picket_platform::db::outbox;
use picket_platform::grpc::internal;
use picket_platform::nats::subjects::validate_token;
use picket_platform::time::{from_duration, from_timestamp, to_timestamp};
use picket_platform::{EventFactory, Principal};
use picket_proto::common::v1 as common;
use picket_proto::ledger::v1 as ledger;
use picket_proto::ledger::v1::credit_ledger_service_server::CreditLedgerService;
use prost::Message;
use sha2::{Digest, Sha256};
use sqlx::{PgConnection, PgPool};
use tonic::{Request, Response, Status};
use uuid::Uuid;

use crate::engine::{self, Operation, Retainer};
use crate::store::{self, Claim, PackRow, RetainerRow};

/// A pack's validity when the operator does not say.
const DEFAULT_VALIDITY: chrono::Duration = chrono::Duration::days(365);
const MAX_KEY_LENGTH: usize = 200;

pub struct LedgerApi {
    pool: PgPool,
    events: EventFactory,
}

impl LedgerApi {
    pub fn new(pool: PgPool, events: EventFactory) -> LedgerApi {
        LedgerApi { pool, events }
    }
}

fn check_partner(partner_id: &str) -> Result<(), Status> {
    if partner_id.is_empty() {
        return Err(Status::invalid_argument("partner_id: is required"));
    }
    validate_token(partner_id)
        .map_err(|error| Status::invalid_argument(format!("partner_id: {error}")))
}

fn check_key(key: &str) -> Result<(), Status> {
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

fn principal_proto(principal: &Principal) -> common::Principal {
    principal.to_proto()
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

fn decode<M: Message + Default>(response: &[u8]) -> Result<M, Status> {
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

#[tonic::async_trait]
impl CreditLedgerService for LedgerApi {
    async fn purchase_credits(
        &self,
        request: Request<ledger::PurchaseCreditsRequest>,
    ) -> Result<Response<ledger::PurchaseCreditsResponse>, Status> {
        let principal = Principal::of(&request)?.clone();
        let message = request.into_inner();
        principal.require_role(&[Role::Operator])?;
        check_partner(&message.partner_id)?;
        check_key(&message.idempotency_key)?;
        if message.minutes <= 0 {
            return Err(Status::invalid_argument("minutes: must be positive"));
        }
        let validity = match &message.validity {
            None => DEFAULT_VALIDITY,
            Some(validity) => from_duration(validity)
                .and_then(|validity| chrono::Duration::from_std(validity).ok())
                .filter(|validity| *validity > chrono::Duration::zero())
                .ok_or_else(|| Status::invalid_argument("validity: must be a positive duration"))?,
        };
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

        let mut transaction = self.pool.begin().await.map_err(internal)?;
        if let Some(response) = claim(
            &mut transaction,
            &message.partner_id,
            &message.idempotency_key,
            "purchase_credits",
            &message,
        )
        .await?
        {
            let mut response: ledger::PurchaseCreditsResponse = decode(&response)?;
            response.replayed = true;
            return Ok(Response::new(response));
        }
        let row = store::lock_retainer(&mut transaction, &message.partner_id)
            .await
            .map_err(internal)?;
        let packs = store::packs(&mut transaction, &message.partner_id)
            .await
            .map_err(internal)?;
        let before = store::position(&mut transaction, &row, &packs)
            .await
            .map_err(internal)?;
        let pack_id = Uuid::now_v7();
        let (after, transfers) = engine::apply(
            &before,
            &Operation::Purchase {
                pack_id,
                minutes: message.minutes,
                expires_at,
            },
        )
        .map_err(|refusal| Status::invalid_argument(refusal.to_string()))?;
        let issued_by = principal_proto(&principal);
        let recorded = store::persist(
            &mut transaction,
            &before,
            &after,
            &transfers,
            &store::Recorded {
                partner_id: &message.partner_id,
                idempotency_key: &message.idempotency_key,
                description: &message.description,
                actor_subject: &issued_by.subject,
                actor_role: issued_by.role,
                now,
            },
            Some(&store::NewPack {
                pack_id,
                valid_from,
                purchase_reference: &message.purchase_reference,
                description: &message.description,
            }),
        )
        .await
        .map_err(internal)?;
        let packs = store::packs(&mut transaction, &message.partner_id)
            .await
            .map_err(internal)?;
        let balance = balance_proto(&message.partner_id, Some(&row), &after, &packs, now);
        let pack = packs
            .iter()
            .find(|pack| pack.pack_id == pack_id)
            .map(|pack| pack_proto(pack, now));
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
        outbox::enqueue(&mut transaction, &event)
            .await
            .map_err(internal)?;
        let response = ledger::PurchaseCreditsResponse {
            pack,
            transfer,
            balance: Some(balance),
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
        tracing::info!(partner_id = %message.partner_id, %pack_id, minutes = message.minutes, "credits purchased");
        Ok(Response::new(response))
    }

    async fn get_balance(
        &self,
        request: Request<ledger::GetBalanceRequest>,
    ) -> Result<Response<ledger::GetBalanceResponse>, Status> {
        let principal = Principal::of(&request)?.clone();
        let partner_id = request.into_inner().partner_id;
        check_partner(&partner_id)?;
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
        check_partner(&partner_id)?;
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
        check_partner(&message.partner_id)?;
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
        let by = principal_proto(&principal);
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
