//! The permission documents generated from the catalogue: `docs/permissions.md` and the Entra
//! app registration's `requiredResourceAccess` (`deploy/entra/app-manifest.json`) must say what
//! the catalogue needs. Regenerate with `PICKET_UPDATE_DOCS=1 cargo test -p scanner --test
//! permissions`.

use scanner::checks::catalogue::Catalogue;

const MARKDOWN: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/permissions.md");
const MANIFEST: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../deploy/entra/app-manifest.json"
);

fn matches_committed(path: &str, generated: &str) {
    if std::env::var_os("PICKET_UPDATE_DOCS").is_some() {
        std::fs::write(path, generated).expect("write the document");
    }
    let committed = std::fs::read_to_string(path).unwrap_or_default();
    assert!(
        committed == generated,
        "{path} differs from the catalogue: regenerate it with \
         PICKET_UPDATE_DOCS=1 cargo test -p scanner --test permissions"
    );
}

#[test]
fn the_permission_documents_match_the_catalogue() {
    let catalogue = Catalogue::builtin().expect("the shipped catalogue is valid");
    let fixes = catalogue.fix_permissions();
    let permissions = catalogue.permissions();
    matches_committed(MARKDOWN, &permissions.markdown(&fixes));
    let manifest = permissions.required_resource_access(&fixes);
    matches_committed(
        MANIFEST,
        &(serde_json::to_string_pretty(&manifest).expect("json") + "\n"),
    );
}

#[test]
fn the_manifest_asks_for_every_permission_the_catalogue_needs() {
    let catalogue = Catalogue::builtin().expect("the shipped catalogue is valid");
    let permissions = catalogue.permissions();
    let manifest = permissions.required_resource_access(&catalogue.fix_permissions());
    // What the manifest grants, as a tenant consenting to it would hold it.
    let ids: Vec<&str> = manifest["requiredResourceAccess"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|api| api["resourceAccess"].as_array().into_iter().flatten())
        .filter_map(|role| role["id"].as_str())
        .collect();
    let needed = catalogue.needed_permissions();
    let granted: Vec<String> = needed
        .iter()
        .filter(|name| ids.contains(&permissions.id_of(name).unwrap_or_default()))
        .cloned()
        .collect();
    let granted = scanner::checks::permissions::Granted::default()
        .with(
            scanner::checks::permissions::Api::Graph,
            Some(granted.iter().cloned().collect()),
        )
        .with(
            scanner::checks::permissions::Api::Defender,
            Some(granted.iter().cloned().collect()),
        );
    assert_eq!(
        permissions.missing(&needed, &granted),
        Vec::<&str>::new(),
        "a tenant that granted the manifest lacks these"
    );
    assert!(
        ids.len() < needed.len(),
        "the manifest asks for fewer permissions ({}) than are needed ({}), as write permissions cover reads",
        ids.len(),
        needed.len()
    );
}
