//! The saga's transactions: each locks one offboarding, moves it with [`Saga`], saves it and
//! queues its event through the outbox, all or nothing. A crash between two of them loses
//! nothing: the state is in PostgreSQL and the ticker or the next event resumes from it.

use std::time::Duration;

use chrono::{DateTime, Utc};
use picket_platform::EventFactory;
use picket_platform::db::{inbox, outbox};
use picket_platform::grpc::internal;
use picket_platform::nats::{HandlerError, InboundEvent};
use picket_proto::Event;
use picket_proto::common::v1 as common;
use picket_proto::offboarding::v1 as offboarding;
use picket_proto::tenants::v1 as tenants;
use prost::Name;
use sqlx::{PgConnection, PgPool};
use tokio_util::sync::CancellationToken;
use tonic::Status;
use uuid::Uuid;

use crate::Settings;
use crate::certificate;
use crate::saga::{self, Asked, Plan, Saga};
use crate::store::{self, CertificateRow, Deleted, OffboardingRow, TenantRow};

#[derive(Clone)]
pub struct Offboardings {
    pub(crate) pool: PgPool,
    events: EventFactory,
    settings: Settings,
}

/// What the consumers of each area are called (for the inbox).
pub const TENANTS_CONSUMER: &str = "offboarding-tenants";
pub const OFFBOARDING_CONSUMER: &str = "offboarding-confirmations";

fn confirm_within(settings: &Settings) -> chrono::Duration {
    chrono::Duration::from_std(settings.confirm_within).unwrap_or(chrono::Duration::hours(1))
}

impl Offboardings {
    pub fn new(pool: PgPool, events: EventFactory, settings: Settings) -> Offboardings {
        Offboardings {
            pool,
            events,
            settings,
        }
    }

    fn plan(&self) -> Plan<'_> {
        Plan {
            disconnect_services: &self.settings.disconnect_services,
            purge_services: &self.settings.purge_services,
            confirm_within: confirm_within(&self.settings),
        }
    }

    async fn publish(
        &self,
        connection: &mut PgConnection,
        event: &impl Event,
        now: DateTime<Utc>,
    ) -> Result<(), sqlx::Error> {
        let event = self
            .events
            .event(event, now)
            .map_err(|error| sqlx::Error::Protocol(error.to_string()))?;
        outbox::enqueue(connection, &event).await
    }

    /// Starts offboarding a partner's tenant, or returns the one in progress (`false`).
    pub async fn start(
        &self,
        partner_id: &str,
        tenant_id: &str,
        reason: &str,
        retention: Option<Duration>,
        by: &common::Principal,
    ) -> Result<(offboarding::Offboarding, bool), Status> {
        let now = Utc::now();
        let mut transaction = self.pool.begin().await.map_err(internal)?;
        let tenant = store::tenant(&mut *transaction, tenant_id)
            .await
            .map_err(internal)?
            .filter(|tenant| tenant.partner_id == partner_id)
            .ok_or_else(|| {
                Status::not_found(format!(
                    "tenant_id: partner {partner_id} has no tenant {tenant_id}"
                ))
            })?;
        if let Some(active) = store::active(&mut *transaction, tenant_id)
            .await
            .map_err(internal)?
        {
            let progress = store::progress(&mut *transaction, &[active.offboarding_id])
                .await
                .map_err(internal)?;
            let saga = Saga {
                row: active,
                progress,
            };
            return Ok((saga.to_proto(now), false));
        }
        let retention = retention.unwrap_or(self.settings.default_retention);
        let retention_delta = chrono::Duration::from_std(retention)
            .map_err(|_| Status::invalid_argument("retention: too long"))?;
        let row = OffboardingRow {
            offboarding_id: Uuid::now_v7(),
            partner_id: partner_id.to_owned(),
            tenant_id: tenant_id.to_owned(),
            tenant_display_name: tenant.display_name.clone(),
            microsoft_tenant_id: tenant.microsoft_tenant_id.clone(),
            reason: reason.to_owned(),
            retention_seconds: i64::try_from(retention.as_secs()).unwrap_or(i64::MAX),
            state: saga::DISCONNECTING.into(),
            requested_by: by.subject.clone(),
            requested_role: by.role,
            requested_at: now,
            disconnected_at: None,
            tokens_dropped: false,
            purge_due_at: now + retention_delta,
            purge_started_at: None,
            purge_attempt: 0,
            completed_at: None,
            cancelled_at: None,
            cancel_reason: String::new(),
            cancelled_by: String::new(),
            cancelled_role: 0,
            certificate_id: None,
            updated_at: now,
        };
        let (saga, requested) = Saga::start(row, &self.plan(), now);
        let saved = store::save(&mut transaction, &saga.row, &saga.progress).await;
        match saved {
            // A concurrent request for the same tenant won: answer with its offboarding.
            Err(sqlx::Error::Database(error)) if error.is_unique_violation() => {
                drop(transaction);
                let active = store::active(&self.pool, tenant_id)
                    .await
                    .map_err(internal)?
                    .ok_or_else(|| Status::aborted("the tenant's offboarding changed; retry"))?;
                let progress = store::progress(&self.pool, &[active.offboarding_id])
                    .await
                    .map_err(internal)?;
                let saga = Saga {
                    row: active,
                    progress,
                };
                return Ok((saga.to_proto(now), false));
            }
            other => other.map_err(internal)?,
        }
        self.publish(&mut transaction, &requested, now)
            .await
            .map_err(internal)?;
        transaction.commit().await.map_err(internal)?;
        tracing::info!(offboarding_id = %saga.row.offboarding_id, %partner_id, %tenant_id, "offboarding started");
        Ok((saga.to_proto(now), true))
    }

    /// The offboarding `offboarding_id` with its progress.
    pub async fn get(&self, offboarding_id: Uuid) -> Result<Option<Saga>, sqlx::Error> {
        let Some(row) = store::get(&self.pool, offboarding_id).await? else {
            return Ok(None);
        };
        let progress = store::progress(&self.pool, &[offboarding_id]).await?;
        Ok(Some(Saga { row, progress }))
    }

    /// Cancels before the purge; `check` refuses a caller who may not.
    pub async fn cancel(
        &self,
        offboarding_id: Uuid,
        reason: &str,
        by: &common::Principal,
        check: impl FnOnce(&OffboardingRow) -> Result<(), Status>,
    ) -> Result<(offboarding::Offboarding, bool), Status> {
        let now = Utc::now();
        let mut transaction = self.pool.begin().await.map_err(internal)?;
        let (row, progress) = store::lock(&mut transaction, offboarding_id)
            .await
            .map_err(internal)?
            .ok_or_else(|| {
                Status::not_found(format!("offboarding_id: no offboarding {offboarding_id}"))
            })?;
        check(&row)?;
        let mut saga = Saga { row, progress };
        let cancelled = saga.cancel(reason, by, now)?;
        store::save(&mut transaction, &saga.row, &saga.progress)
            .await
            .map_err(internal)?;
        self.publish(&mut transaction, &cancelled, now)
            .await
            .map_err(internal)?;
        transaction.commit().await.map_err(internal)?;
        tracing::info!(%offboarding_id, "offboarding cancelled");
        Ok((saga.to_proto(now), cancelled.consent_required))
    }

    /// Applies a tenants-area event: the directory of tenants, and disconnections.
    pub async fn tenant_event(&self, event: &InboundEvent) -> Result<(), HandlerError> {
        let onboarded = tenants::TenantOnboarded::full_name();
        let disconnected = tenants::TenantDisconnected::full_name();
        if event.event_type != onboarded && event.event_type != disconnected {
            return Ok(());
        }
        let mut transaction = self.pool.begin().await?;
        if !inbox::first_delivery(&mut transaction, TENANTS_CONSUMER, &event.id).await? {
            return Ok(());
        }
        if event.event_type == onboarded {
            let message: tenants::TenantOnboarded = event.decode()?;
            let tenant = message.tenant.unwrap_or_default();
            store::remember_tenant(
                &mut *transaction,
                &TenantRow {
                    tenant_id: message.tenant_id.clone(),
                    partner_id: message.partner_id.clone(),
                    display_name: tenant.display_name,
                    microsoft_tenant_id: tenant.microsoft_tenant_id,
                },
                event.time,
            )
            .await?;
        } else {
            let message: tenants::TenantDisconnected = event.decode()?;
            let offboarding_id = parse_id(&message.offboarding_id)?;
            let now = Utc::now();
            if let Some((row, progress)) = store::lock(&mut transaction, offboarding_id).await? {
                let mut saga = Saga { row, progress };
                let service = event.source.trim_start_matches("/picket/");
                if saga.confirm_disconnect(service, &event.id, message.tokens_dropped, now) {
                    store::save(&mut transaction, &saga.row, &saga.progress).await?;
                    tracing::info!(%offboarding_id, service, state = %saga.row.state, "disconnection confirmed");
                }
            }
        }
        transaction.commit().await?;
        Ok(())
    }

    /// Applies a PurgeCompleted: the service's purge is confirmed; the last one completes the
    /// offboarding with its certificate.
    pub async fn purge_completed(&self, event: &InboundEvent) -> Result<(), HandlerError> {
        if event.event_type != offboarding::PurgeCompleted::full_name() {
            return Ok(());
        }
        let message: offboarding::PurgeCompleted = event.decode()?;
        // Who confirmed is whoever could publish on the subject (NATS permissions), never what
        // the payload claims: a service cannot confirm another's purge.
        if event.subject.purge_confirmed_by() != Some(message.service.as_str()) {
            return Err(HandlerError::Rejected(format!(
                "a purge confirmation for {} published on {}",
                message.service, event.subject.event
            )));
        }
        let offboarding_id = parse_id(&message.offboarding_id)?;
        let mut transaction = self.pool.begin().await?;
        if !inbox::first_delivery(&mut transaction, OFFBOARDING_CONSUMER, &event.id).await? {
            return Ok(());
        }
        let now = Utc::now();
        let Some((row, progress)) = store::lock(&mut transaction, offboarding_id).await? else {
            transaction.commit().await?;
            return Ok(());
        };
        let mut saga = Saga { row, progress };
        let tables = message
            .tables
            .iter()
            .map(|table| Deleted {
                table: table.table.clone(),
                row_count: table.row_count,
            })
            .collect();
        let Some(completed) = saga.confirm_purge(&message.service, tables, &event.id, now) else {
            // A late or repeated confirmation: counted already.
            transaction.commit().await?;
            return Ok(());
        };
        tracing::info!(%offboarding_id, service = %message.service, "purge confirmed");
        if completed {
            let certificate_id = Uuid::now_v7();
            saga.row.certificate_id = Some(certificate_id);
            let (certificate, body) = certificate::issue(&saga, certificate_id, now);
            store::insert_certificate(
                &mut transaction,
                &CertificateRow {
                    certificate_id,
                    offboarding_id,
                    partner_id: saga.row.partner_id.clone(),
                    tenant_id: saga.row.tenant_id.clone(),
                    body: sqlx::types::Json(body),
                    sha256: certificate.sha256.clone(),
                    issued_at: now,
                },
            )
            .await?;
            store::forget_tenant(&mut *transaction, &saga.row.tenant_id).await?;
            let done = offboarding::OffboardingCompleted {
                partner_id: saga.row.partner_id.clone(),
                tenant_id: saga.row.tenant_id.clone(),
                offboarding_id: offboarding_id.to_string(),
                certificate: Some(certificate),
                completed_at: Some(picket_platform::time::to_timestamp(now)),
            };
            self.publish(&mut transaction, &done, now).await?;
            tracing::info!(%offboarding_id, %certificate_id, "offboarding completed");
        }
        store::save(&mut transaction, &saga.row, &saga.progress).await?;
        transaction.commit().await?;
        Ok(())
    }

    /// Starts the purges that are due and asks again whoever did not confirm in time.
    pub async fn tick(&self, now: DateTime<Utc>) -> Result<(), sqlx::Error> {
        let within = confirm_within(&self.settings);
        for offboarding_id in store::due(&self.pool, now).await? {
            let mut transaction = self.pool.begin().await?;
            let Some((row, progress)) = store::lock(&mut transaction, offboarding_id).await? else {
                continue;
            };
            let mut saga = Saga { row, progress };
            if let Some(request) = saga.start_purge(now, within) {
                tracing::info!(%offboarding_id, services = ?request.services, "purge requested");
                self.publish(&mut transaction, &request, now).await?;
            } else {
                match saga.ask_again(now, within) {
                    Some(Asked::Disconnect(requested)) => {
                        self.publish(&mut transaction, &requested, now).await?;
                    }
                    Some(Asked::Purge(request)) => {
                        self.publish(&mut transaction, &request, now).await?;
                    }
                    None => continue,
                }
            }
            store::save(&mut transaction, &saga.row, &saga.progress).await?;
            transaction.commit().await?;
        }
        Ok(())
    }

    /// Runs [`Offboardings::tick`] every `tick_interval` until shutdown.
    pub async fn run_ticker(self, shutdown: CancellationToken) {
        loop {
            if let Err(error) = self.tick(Utc::now()).await {
                tracing::warn!(%error, "offboarding tick failed");
            }
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(self.settings.tick_interval) => {}
            }
        }
    }
}

fn parse_id(id: &str) -> Result<Uuid, HandlerError> {
    Uuid::parse_str(id)
        .map_err(|_| HandlerError::Rejected(format!("offboarding_id {id:?} is not a UUID")))
}
