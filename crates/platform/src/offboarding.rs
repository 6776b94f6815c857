//! What every service that holds tenant data does at the end of an offboarding: on a
//! PurgeRequested that names it, delete every row of the tenant, table by table in one
//! transaction, and answer PurgeCompleted with the rows deleted per table. A repeated request
//! (a redelivery, or the offboarding service asking again) gets the original report: the report is
//! kept under the offboarding's id, which names no tenant.

use chrono::{DateTime, Utc};
use picket_proto::offboarding::v1::{PurgeCompleted, PurgeRequested, PurgedTable};
use sqlx::PgPool;
use uuid::Uuid;

use crate::EventFactory;
use crate::db::{inbox, outbox};
use crate::nats::{HandlerError, InboundEvent};

/// One table's deletion: `sql` deletes the tenant's rows given `$1` = tenant id and `$2` =
/// partner id. Tables are purged in the order given (children before parents).
pub struct Purge {
    /// Schema-qualified name for the report, such as `prioritizer.incidents`.
    pub table: &'static str,
    pub sql: &'static str,
}

/// A service's answer to PurgeRequested.
pub struct Purger {
    pool: PgPool,
    events: EventFactory,
    service: &'static str,
    consumer: String,
    purges: &'static [Purge],
}

/// Rows deleted from one table, as a purge report lists them.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Deleted {
    pub table: String,
    pub row_count: u64,
}

impl Purger {
    /// `consumer` is the durable name of the consumer that hands it its events (for the inbox).
    pub fn new(
        pool: PgPool,
        events: EventFactory,
        service: &'static str,
        consumer: &str,
        purges: &'static [Purge],
    ) -> Purger {
        Purger {
            pool,
            events,
            service,
            consumer: consumer.to_owned(),
            purges,
        }
    }

    /// Purges the tenant a PurgeRequested names, if it names this service, and answers.
    pub async fn handle(&self, event: &InboundEvent) -> Result<(), HandlerError> {
        let request: PurgeRequested = event.decode()?;
        if !request
            .services
            .iter()
            .any(|service| service == self.service)
        {
            return Ok(());
        }
        let offboarding_id = Uuid::parse_str(&request.offboarding_id).map_err(|_| {
            HandlerError::Rejected(format!(
                "offboarding_id {:?} is not a UUID",
                request.offboarding_id
            ))
        })?;
        let mut transaction = self.pool.begin().await?;
        if !inbox::first_delivery(&mut transaction, &self.consumer, &event.id).await? {
            return Ok(());
        }
        // Two requests for one offboarding purge one at a time: the second reads the report.
        sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1::text, 0))")
            .bind(offboarding_id)
            .execute(&mut *transaction)
            .await?;
        let reported: Option<(sqlx::types::Json<Vec<Deleted>>, DateTime<Utc>)> = sqlx::query_as(
            "SELECT tables, completed_at FROM purge_reports WHERE offboarding_id = $1",
        )
        .bind(offboarding_id)
        .fetch_optional(&mut *transaction)
        .await?;
        let (deleted, completed_at) = match reported {
            Some((tables, completed_at)) => (tables.0, completed_at),
            None => {
                let mut deleted = Vec::with_capacity(self.purges.len());
                for purge in self.purges {
                    let result = sqlx::query(sqlx::AssertSqlSafe(purge.sql))
                        .bind(&request.tenant_id)
                        .bind(&request.partner_id)
                        .execute(&mut *transaction)
                        .await?;
                    deleted.push(Deleted {
                        table: purge.table.to_owned(),
                        row_count: result.rows_affected(),
                    });
                }
                let completed_at = Utc::now();
                let total: u64 = deleted.iter().map(|table| table.row_count).sum();
                sqlx::query(
                    "INSERT INTO purge_reports (offboarding_id, tables, total_rows, completed_at)
                     VALUES ($1, $2, $3, $4)",
                )
                .bind(offboarding_id)
                .bind(sqlx::types::Json(&deleted))
                .bind(i64::try_from(total).unwrap_or(i64::MAX))
                .bind(completed_at)
                .execute(&mut *transaction)
                .await?;
                tracing::info!(service = self.service, %offboarding_id, rows = total, "tenant purged");
                (deleted, completed_at)
            }
        };
        let completed = PurgeCompleted {
            partner_id: request.partner_id.clone(),
            tenant_id: request.tenant_id.clone(),
            offboarding_id: request.offboarding_id.clone(),
            service: self.service.to_owned(),
            total_rows: deleted.iter().map(|table| table.row_count).sum(),
            tables: deleted
                .into_iter()
                .map(|table| PurgedTable {
                    table: table.table,
                    row_count: table.row_count,
                })
                .collect(),
            completed_at: Some(crate::time::to_timestamp(completed_at)),
            attempt: request.attempt,
        };
        let mut event = self
            .events
            .event(&completed, Utc::now())
            .map_err(|error| HandlerError::Rejected(error.to_string()))?;
        // Confirmed on the service's own subject: the offboarding service trusts only that.
        event.subject = self
            .events
            .subjects()
            .purge_confirmation_subject(self.service, &request.partner_id, &request.tenant_id)
            .map_err(|error| HandlerError::Rejected(error.to_string()))?;
        outbox::enqueue(&mut transaction, &event).await?;
        transaction.commit().await?;
        Ok(())
    }
}
