//! PostgreSQL: a pool whose connections live in the service's own schema, migrations (the kit's
//! tables, then the service's) under sqlx's advisory lock so replicas migrate once, the
//! transactional outbox and the inbox.

pub mod group_commit;
pub mod inbox;
pub mod notify;
pub mod outbox;
pub mod statement;

use std::str::FromStr;

use secrecy::ExposeSecret;
use sqlx::migrate::{MigrateError, Migrator};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};

use crate::settings::DatabaseSettings;

/// The kit's migrations are tracked apart from the service's, in the same schema.
const KIT_MIGRATIONS_TABLE: &str = "_picket_kit_migrations";

/// A pool that connects on first use, so a service can start before PostgreSQL answers.
pub fn connect_lazy(settings: &DatabaseSettings) -> Result<PgPool, sqlx::Error> {
    let options = PgConnectOptions::from_str(settings.url.expose_secret())?
        .options([("search_path", settings.schema.as_str())]);
    Ok(PgPoolOptions::new()
        .max_connections(settings.max_connections)
        .acquire_timeout(settings.acquire_timeout)
        .connect_lazy_with(options))
}

/// Creates the schema, applies the kit's migrations, then the service's own.
pub async fn migrate(
    pool: &PgPool,
    schema: &str,
    service_migrations: Option<Migrator>,
) -> Result<(), MigrateError> {
    let mut kit = sqlx::migrate!("./migrations");
    kit.create_schema(schema.to_owned());
    kit.dangerous_set_table_name(KIT_MIGRATIONS_TABLE);
    kit.run(pool).await?;
    if let Some(mut service) = service_migrations {
        service.create_schema(schema.to_owned());
        service.run(pool).await?;
    }
    Ok(())
}
