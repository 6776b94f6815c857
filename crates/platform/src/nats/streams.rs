//! One JetStream stream per area plus the dead-letter stream: provisioned idempotently, either by
//! every service at start (development and tests: start order does not matter) or, in production,
//! only by the provisioning identity (`<service> provision-streams` as the NATS user
//! `provisioner`), which alone may create and update streams; services then wait until each exists.

use async_nats::jetstream::{self, stream};
use picket_proto::Area;

use crate::nats::Subjects;
use crate::settings::{NatsSettings, StreamStorage};

#[derive(Debug, thiserror::Error)]
pub enum ProvisionError {
    #[error("cannot connect to nats: {0}")]
    Connect(#[from] async_nats::ConnectError),
    #[error("cannot provision stream {stream}: {source}")]
    Stream {
        stream: String,
        #[source]
        source: async_nats::jetstream::context::CreateStreamError,
    },
}

/// Connects as the configured NATS user (in production the provisioning user) and provisions the
/// streams: what `<service> provision-streams` does. A NATS that does not answer is an error, so a
/// Job retries rather than hangs.
pub async fn provision_as(service: &str, settings: &NatsSettings) -> Result<(), ProvisionError> {
    let client = crate::nats::connect_options(service, settings)
        .connect(settings.url.as_str())
        .await?;
    let subjects = Subjects::new(settings.namespace.clone());
    provision(&jetstream::new(client), &subjects, settings).await
}

fn stream_config(name: String, subjects: Vec<String>, settings: &NatsSettings) -> stream::Config {
    stream::Config {
        name,
        subjects,
        retention: stream::RetentionPolicy::Limits,
        storage: match settings.stream_storage {
            StreamStorage::File => stream::StorageType::File,
            StreamStorage::Memory => stream::StorageType::Memory,
        },
        max_age: settings.stream_max_age,
        num_replicas: settings.stream_replicas,
        duplicate_window: settings.duplicate_window,
        ..Default::default()
    }
}

/// Every stream's name and configuration.
fn configs(subjects: &Subjects, settings: &NatsSettings) -> Vec<stream::Config> {
    let mut configs: Vec<stream::Config> = Area::ALL
        .into_iter()
        .map(|area| {
            stream_config(
                subjects.stream_name(area),
                vec![subjects.area_wildcard(area)],
                settings,
            )
        })
        .collect();
    configs.push(stream_config(
        subjects.dead_letter_stream(),
        vec![subjects.dead_letter_wildcard()],
        settings,
    ));
    configs
}

/// Creates the streams, or updates them to the configured settings.
pub async fn provision(
    jetstream: &jetstream::Context,
    subjects: &Subjects,
    settings: &NatsSettings,
) -> Result<(), ProvisionError> {
    for config in configs(subjects, settings) {
        let name = config.name.clone();
        // Services start together: a concurrent create by another service is retried as an update.
        let mut attempt = 0;
        loop {
            attempt += 1;
            match jetstream.create_or_update_stream(config.clone()).await {
                Ok(_) => break,
                Err(_) if attempt < 3 => {
                    tokio::time::sleep(std::time::Duration::from_millis(100 * attempt)).await;
                }
                Err(source) => {
                    return Err(ProvisionError::Stream {
                        stream: name,
                        source,
                    });
                }
            }
        }
    }
    Ok(())
}

/// Succeeds once every stream exists (a stream's INFO is all a service user may ask); the error
/// names the first one missing.
pub async fn present(
    jetstream: &jetstream::Context,
    subjects: &Subjects,
    settings: &NatsSettings,
) -> Result<(), String> {
    for config in configs(subjects, settings) {
        if let Err(error) = jetstream.get_stream(&config.name).await {
            return Err(format!(
                "stream {} is not provisioned ({error}): run `provision-streams` as the NATS \
                 provisioning user",
                config.name
            ));
        }
    }
    Ok(())
}
