//! Idempotent provisioning of one JetStream stream per area plus the dead-letter stream. Every
//! service provisions them all at start, so start order does not matter.

use async_nats::jetstream::{self, stream};
use picket_proto::Area;

use crate::nats::Subjects;
use crate::settings::{NatsSettings, StreamStorage};

#[derive(Debug, thiserror::Error)]
#[error("cannot provision stream {stream}: {source}")]
pub struct ProvisionError {
    stream: String,
    #[source]
    source: async_nats::jetstream::context::CreateStreamError,
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

pub async fn provision(
    jetstream: &jetstream::Context,
    subjects: &Subjects,
    settings: &NatsSettings,
) -> Result<(), ProvisionError> {
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
    for config in configs {
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
                    return Err(ProvisionError {
                        stream: name,
                        source,
                    });
                }
            }
        }
    }
    Ok(())
}
