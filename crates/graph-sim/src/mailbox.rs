//! A user's mail folders as Graph v1.0 serves them: by a documented well-known name (the mailFolder
//! resource's table, case-insensitive) or by id. Every simulated mailbox has each well-known folder
//! and an RSS Feeds folder, which has no well-known name; ids of the form `AAMkAGI2<Name>` are
//! folders the user made. Another name is not a folder name but a malformed id (400
//! ErrorInvalidIdMalformed, as Graph answers `mailFolders/rssfeeds`); an id of no folder is 404
//! ErrorItemNotFound.

use crate::model::well_known_folder_id;

/// Graph's documented well-known folder names, with the display name an English mailbox shows.
const WELL_KNOWN: [(&str, &str); 17] = [
    ("archive", "Archive"),
    ("clutter", "Clutter"),
    ("conflicts", "Conflicts"),
    ("conversationhistory", "Conversation History"),
    ("deleteditems", "Deleted Items"),
    ("drafts", "Drafts"),
    ("inbox", "Inbox"),
    ("junkemail", "Junk Email"),
    ("localfailures", "Local Failures"),
    ("msgfolderroot", "Top of Information Store"),
    ("outbox", "Outbox"),
    ("recoverableitemsdeletions", "Recoverable Items Deletions"),
    ("scheduled", "Scheduled"),
    ("searchfolders", "Search Folders"),
    ("sentitems", "Sent Items"),
    ("serverfailures", "Server Failures"),
    ("syncissues", "Sync Issues"),
];

/// The key of the RSS Feeds folder in [`well_known_folder_id`]; not a name Graph accepts.
pub const RSS_FEEDS: &str = "rssfeeds";
/// Ids of folders the user made.
const USER_FOLDER: &str = "AAMkAGI2";

/// A mail folder of one mailbox.
pub struct Folder {
    pub id: String,
    pub display_name: String,
}

/// Why a folder is not there.
pub enum Refusal {
    /// Neither a well-known name nor an id.
    Malformed,
    /// An id of no folder of this mailbox.
    NotFound,
}

/// The folder `name_or_id` names in the mailbox of `user_id`.
pub fn folder(user_id: &str, name_or_id: &str) -> Result<Folder, Refusal> {
    let lower = name_or_id.to_ascii_lowercase();
    if let Some((name, display)) = WELL_KNOWN.iter().find(|(name, _)| *name == lower) {
        return Ok(Folder {
            id: well_known_folder_id(user_id, name),
            display_name: (*display).to_owned(),
        });
    }
    let by_id = WELL_KNOWN
        .iter()
        .copied()
        .chain([(RSS_FEEDS, "RSS Feeds")])
        .find(|(name, _)| well_known_folder_id(user_id, name) == name_or_id);
    if let Some((_, display)) = by_id {
        return Ok(Folder {
            id: name_or_id.to_owned(),
            display_name: display.to_owned(),
        });
    }
    match name_or_id.strip_prefix(USER_FOLDER) {
        Some(made) if !made.is_empty() => Ok(Folder {
            id: name_or_id.to_owned(),
            display_name: made.to_owned(),
        }),
        _ if name_or_id.starts_with("AAMk") => Err(Refusal::NotFound),
        _ => Err(Refusal::Malformed),
    }
}
