//! Integrators' AsyncAPI 3 document (`docs/asyncapi.json`): every subject and message Picket
//! publishes, generated here from the protobuf descriptors and the event catalogue, so the
//! document cannot drift from the contracts. A change to an event makes this test fail until the
//! document is regenerated with `PICKET_UPDATE_DOCS=1 cargo test -p picket-proto --test asyncapi`.

use std::collections::BTreeMap;

use picket_proto::{Area, all_events};
use prost::Message;
use prost_types::field_descriptor_proto::{Label, Type};
use prost_types::{DescriptorProto, EnumDescriptorProto, FieldDescriptorProto, FileDescriptorSet};
use serde_json::{Value, json};

const DOCUMENT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/asyncapi.json");

/// Every message and enum of the descriptors, by full name (without the leading dot).
#[derive(Default)]
struct Types {
    messages: BTreeMap<String, DescriptorProto>,
    enums: BTreeMap<String, EnumDescriptorProto>,
}

impl Types {
    fn load() -> Types {
        let set =
            FileDescriptorSet::decode(picket_proto::FILE_DESCRIPTOR_SET).expect("descriptors");
        let mut types = Types::default();
        for file in set.file {
            let package = file.package.clone().unwrap_or_default();
            for message in file.message_type {
                types.add_message(&package, message);
            }
            for enumeration in file.enum_type {
                types
                    .enums
                    .insert(format!("{package}.{}", enumeration.name()), enumeration);
            }
        }
        types
    }

    fn add_message(&mut self, scope: &str, message: DescriptorProto) {
        let name = format!("{scope}.{}", message.name());
        for nested in message.nested_type.clone() {
            self.add_message(&name, nested);
        }
        for enumeration in message.enum_type.clone() {
            self.enums
                .insert(format!("{name}.{}", enumeration.name()), enumeration);
        }
        self.messages.insert(name, message);
    }

    /// The JSON schema of a message's canonical protobuf JSON form, adding the schemas it refers
    /// to into `schemas`.
    fn schema(&self, full_name: &str, schemas: &mut BTreeMap<String, Value>) -> Value {
        if let Some(well_known) = well_known(full_name) {
            return well_known;
        }
        let reference = json!({ "$ref": format!("#/components/schemas/{full_name}") });
        if schemas.contains_key(full_name) {
            return reference;
        }
        schemas.insert(full_name.to_owned(), Value::Null);
        let message = self
            .messages
            .get(full_name)
            .unwrap_or_else(|| panic!("no message {full_name}"));
        let mut properties = serde_json::Map::new();
        for field in &message.field {
            let type_name = field.type_name().trim_start_matches('.');
            let map_entry = self.messages.get(type_name).filter(|entry| {
                entry.options.as_ref().and_then(|options| options.map_entry) == Some(true)
            });
            let schema = if let Some(entry) = map_entry {
                let value = entry
                    .field
                    .iter()
                    .find(|field| field.number() == 2)
                    .expect("map value");
                json!({ "type": "object", "additionalProperties": self.field_schema(value, schemas) })
            } else if field.label() == Label::Repeated {
                json!({ "type": "array", "items": self.field_schema(field, schemas) })
            } else {
                self.field_schema(field, schemas)
            };
            properties.insert(field.json_name().to_owned(), schema);
        }
        schemas.insert(
            full_name.to_owned(),
            json!({ "type": "object", "x-protobuf-type": full_name, "properties": properties }),
        );
        reference
    }

    fn field_schema(
        &self,
        field: &FieldDescriptorProto,
        schemas: &mut BTreeMap<String, Value>,
    ) -> Value {
        let type_name = field.type_name().trim_start_matches('.');
        match field.r#type() {
            Type::String => json!({ "type": "string" }),
            Type::Bool => json!({ "type": "boolean" }),
            Type::Bytes => json!({ "type": "string", "contentEncoding": "base64" }),
            Type::Double | Type::Float => json!({ "type": "number" }),
            Type::Int32 | Type::Uint32 | Type::Sint32 | Type::Fixed32 | Type::Sfixed32 => {
                json!({ "type": "integer" })
            }
            // Canonical protobuf JSON writes 64-bit integers as strings.
            Type::Int64 | Type::Uint64 | Type::Sint64 | Type::Fixed64 | Type::Sfixed64 => {
                json!({ "type": "string", "format": "int64" })
            }
            Type::Enum => {
                let enumeration = self
                    .enums
                    .get(type_name)
                    .unwrap_or_else(|| panic!("no enum {type_name}"));
                let values: Vec<&str> =
                    enumeration.value.iter().map(|value| value.name()).collect();
                json!({ "type": "string", "enum": values, "x-protobuf-type": type_name })
            }
            Type::Message | Type::Group => self.schema(type_name, schemas),
        }
    }
}

fn well_known(full_name: &str) -> Option<Value> {
    Some(match full_name {
        "google.protobuf.Timestamp" => json!({ "type": "string", "format": "date-time" }),
        "google.protobuf.Duration" => {
            json!({ "type": "string", "pattern": "^-?[0-9]+(\\.[0-9]+)?s$" })
        }
        "google.protobuf.Struct" => json!({ "type": "object" }),
        "google.protobuf.Value" => json!({}),
        _ => return None,
    })
}

fn area_description(area: Area) -> &'static str {
    match area {
        Area::Tenants => "Tenants onboarded, consents, scans and disconnections (scanner).",
        Area::Findings => "Findings observed and cleared by scans (scanner).",
        Area::Fixes => "Fixes requested (prioritizer) and their outcome (scanner).",
        Area::Incidents => {
            "Incidents, decisions, escalations, themes and authority maps (prioritizer)."
        }
        Area::Notifications => "Notices of the notifier, such as a disabled endpoint.",
        Area::Ledger => "Incident-response credits and engagements (ledger).",
        Area::Offboarding => "Offboarding sagas, purge requests and confirmations.",
    }
}

fn document() -> Value {
    let types = Types::load();
    let mut channels = serde_json::Map::new();
    let mut operations = serde_json::Map::new();
    let mut messages = serde_json::Map::new();
    let mut schemas = BTreeMap::new();
    for (area, token, full_name) in all_events() {
        let name = full_name.rsplit('.').next().expect("a name").to_owned();
        let payload = types.schema(&full_name, &mut schemas);
        messages.insert(
            name.clone(),
            json!({
                "name": name,
                "title": name,
                "summary": format!("{full_name} (its CloudEvents ce-type)"),
                "contentType": "application/protobuf",
                "headers": { "$ref": "#/components/schemas/CloudEventsHeaders" },
                "payload": payload,
                "x-protobuf-type": full_name,
            }),
        );
        // A purge is confirmed on the confirming service's own subject (NATS permissions let each
        // service publish only there).
        let (event_token, mut parameters) = if token == "purge_completed" {
            (
                "purge_completed_by_{service}".to_owned(),
                json!({ "service": { "$ref": "#/components/parameters/service" } }),
            )
        } else {
            (token.to_owned(), json!({}))
        };
        parameters["namespace"] = json!({ "$ref": "#/components/parameters/namespace" });
        parameters["partnerId"] = json!({ "$ref": "#/components/parameters/partnerId" });
        parameters["tenantId"] = json!({ "$ref": "#/components/parameters/tenantId" });
        channels.insert(
            token.to_owned(),
            json!({
                "address": format!("{{namespace}}.{}.v1.{event_token}.{{partnerId}}.{{tenantId}}", area.token()),
                "description": area_description(area),
                "parameters": parameters,
                "messages": { name.clone(): { "$ref": format!("#/components/messages/{name}") } },
            }),
        );
        operations.insert(
            format!("publish_{token}"),
            json!({
                "action": "send",
                "channel": { "$ref": format!("#/channels/{token}") },
                "messages": [{ "$ref": format!("#/channels/{token}/messages/{name}") }],
                "summary": format!(
                    "Picket publishes {name} to the JetStream stream <NAMESPACE>_{}.",
                    area.token().to_uppercase()
                ),
            }),
        );
    }
    let mut schemas: serde_json::Map<String, Value> = schemas.into_iter().collect();
    schemas.insert(
        "CloudEventsHeaders".into(),
        json!({
            "type": "object",
            "description": "CloudEvents 1.0 in binary mode, as NATS headers.",
            "required": ["ce-specversion", "ce-id", "ce-type", "ce-source", "ce-time", "content-type"],
            "properties": {
                "ce-specversion": { "type": "string", "const": "1.0" },
                "ce-id": { "type": "string", "description": "The event id (UUIDv7), also its Nats-Msg-Id." },
                "ce-type": { "type": "string", "description": "The protobuf full name of the payload." },
                "ce-source": { "type": "string", "description": "/picket/<service>" },
                "ce-subject": { "type": "string", "description": "<partner_id> or <partner_id>/<tenant_id>" },
                "ce-time": { "type": "string", "format": "date-time" },
                "content-type": { "type": "string", "const": "application/protobuf" },
                "traceparent": { "type": "string", "description": "W3C trace context." },
                "Nats-Msg-Id": { "type": "string", "description": "JetStream de-duplication id." },
            },
        }),
    );
    json!({
        "asyncapi": "3.0.0",
        "info": {
            "title": "Picket events",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Every event Picket publishes on NATS JetStream. Payloads are protobuf \
                (proto/picket/*/v1); the schemas give their canonical protobuf JSON form. \
                Generated from the descriptors by proto/tests/asyncapi.rs.",
        },
        "defaultContentType": "application/protobuf",
        "servers": {
            "nats": { "host": "localhost:4222", "protocol": "nats", "description": "NATS with JetStream" },
        },
        "channels": channels,
        "operations": operations,
        "components": {
            "messages": messages,
            "schemas": schemas,
            "parameters": {
                "namespace": { "description": "The subject namespace (`picket` unless configured)." },
                "partnerId": { "description": "The partner (MSP) the event concerns." },
                "tenantId": { "description": "The tenant, or `_` for an event of the whole partner." },
                "service": { "description": "The service confirming its purge: scanner, prioritizer or notifier." },
            },
        },
    })
}

#[test]
fn the_asyncapi_document_matches_the_contracts() {
    let generated = serde_json::to_string_pretty(&document()).expect("json") + "\n";
    if std::env::var_os("PICKET_UPDATE_DOCS").is_some() {
        std::fs::write(DOCUMENT, &generated).expect("write the document");
    }
    let committed = std::fs::read_to_string(DOCUMENT).unwrap_or_default();
    assert!(
        committed == generated,
        "docs/asyncapi.json differs from the contracts: regenerate it with \
         PICKET_UPDATE_DOCS=1 cargo test -p picket-proto --test asyncapi"
    );
}
