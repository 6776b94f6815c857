//! The size limits of every request field, declared once for every contract: a default for each
//! kind of field, and the fields (by name, in whichever request message they appear) that need
//! another. The gRPC servers enforce them before any work (`picket_platform::request_limits`), so
//! nothing unbounded reaches a handler, a row or an event, and every event a request causes stays
//! well under NATS's 1 MB `max_payload`.

/// The largest request any rpc accepts, in bytes (each field within its own limit).
pub const MAX_REQUEST_BYTES: usize = 256 * 1024;

/// The most a server reads of a request before refusing it unread: tonic's own default, so a
/// request with one oversized field is answered by that field's name.
pub const MAX_READ_BYTES: usize = 4 * 1024 * 1024;

/// A string or bytes field not named below, in bytes: ids, names, addresses, tokens.
pub const DEFAULT_TEXT_BYTES: usize = 1024;

/// A repeated or map field not named below, in items.
pub const DEFAULT_ITEMS: usize = 256;

/// Fields whose text is longer than an id or a name: free text people write, URLs, and the
/// authorization code Entra ID returns (about 1-2 KB).
const TEXT_BYTES: &[(&str, usize)] = &[
    ("code", 8 * 1024),
    ("comment", 4 * 1024),
    ("description", 4 * 1024),
    ("detail", 4 * 1024),
    ("error_description", 2 * 1024),
    ("message", 4 * 1024),
    ("override_reason", 2 * 1024),
    ("reason", 2 * 1024),
    ("recommended_fix", 4 * 1024),
    ("request", 16 * 1024),
    ("summary", 16 * 1024),
    ("url", 2 * 1024),
];

/// Repeated fields that may hold more items than the default.
const ITEMS: &[(&str, usize)] = &[("tenant_ids", 1000), ("approved_incident_ids", 1000)];

/// The byte limit of a string or bytes field named `field`.
pub fn text_limit(field: &str) -> usize {
    TEXT_BYTES
        .iter()
        .find(|(name, _)| *name == field)
        .map_or(DEFAULT_TEXT_BYTES, |(_, limit)| *limit)
}

/// The item limit of a repeated or map field named `field`.
pub fn item_limit(field: &str) -> usize {
    ITEMS
        .iter()
        .find(|(name, _)| *name == field)
        .map_or(DEFAULT_ITEMS, |(_, limit)| *limit)
}

/// Every field name the tables above name, for the test that keeps them current.
pub fn named_fields() -> impl Iterator<Item = &'static str> {
    TEXT_BYTES.iter().chain(ITEMS.iter()).map(|(name, _)| *name)
}
