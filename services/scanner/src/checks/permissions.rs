//! Application permissions as data (the catalogue's `[[api]]`, `[[permission]]`, `[connection]`
//! and `[[source]]` tables, and each fix's `permissions`): what connecting to a tenant, each
//! source Picket reads and each fix it applies needs; whether a tenant's grant (its tokens'
//! `roles`) covers it; and the Entra app registration's `requiredResourceAccess` and
//! `docs/permissions.md`, both generated from it.

use std::collections::{BTreeMap, BTreeSet};

use serde::Deserialize;
use serde_json::{Value, json};

use crate::checks::snapshot::Source;

/// An API whose application permissions Picket's app asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Api {
    /// Microsoft Graph.
    Graph,
    /// Microsoft Defender for Endpoint's API (WindowsDefenderATP).
    Defender,
}

/// The resource application of an API, as Entra names it in `requiredResourceAccess`.
#[derive(Debug, Clone, Deserialize)]
pub struct ResourceApp {
    pub api: Api,
    pub name: String,
    pub app_id: String,
}

/// One application permission (an app role of its API).
#[derive(Debug, Clone, Deserialize)]
pub struct Permission {
    pub name: String,
    pub api: Api,
    /// The app role's id, as Microsoft publishes it.
    pub id: String,
    /// Documented higher-privileged permissions that also allow what this one does.
    #[serde(default)]
    pub implied_by: Vec<String>,
}

/// What connecting to a tenant reads (the organization, its licences), and needs.
#[derive(Debug, Clone, Deserialize)]
pub struct Connection {
    pub requests: Vec<String>,
    pub permissions: Vec<String>,
}

/// The permissions a source's reads need, all of them.
#[derive(Debug, Clone, Deserialize)]
pub struct SourcePermissions {
    pub source: Source,
    #[serde(default)]
    pub permissions: Vec<String>,
}

/// The permissions a tenant granted Picket's app, per API, as its tokens' `roles` claim says. An
/// API whose token does not say (an opaque token) is taken to grant everything: Graph then
/// answers 403 where it does not.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Granted {
    roles: BTreeMap<Api, BTreeSet<String>>,
}

impl Granted {
    /// Records what `api`'s token said (`None`: it did not say).
    pub fn with(mut self, api: Api, roles: Option<BTreeSet<String>>) -> Granted {
        if let Some(roles) = roles {
            self.roles.insert(api, roles);
        }
        self
    }

    fn holds(&self, api: Api, name: &str) -> bool {
        self.roles
            .get(&api)
            .is_none_or(|roles| roles.contains(name))
    }
}

/// The permission tables of the catalogue, validated.
#[derive(Debug, Clone)]
pub struct Permissions {
    apps: Vec<ResourceApp>,
    permissions: BTreeMap<String, Permission>,
    connection: Connection,
    sources: BTreeMap<Source, Vec<String>>,
}

/// A permission's use, for the generated documentation.
struct Use {
    why: BTreeSet<String>,
}

impl Permissions {
    pub fn new(
        apps: Vec<ResourceApp>,
        permissions: Vec<Permission>,
        connection: Connection,
        sources: Vec<SourcePermissions>,
    ) -> Result<Permissions, String> {
        let mut by_name = BTreeMap::new();
        for permission in permissions {
            if !apps.iter().any(|app| app.api == permission.api) {
                return Err(format!("permission {}: unknown api", permission.name));
            }
            let name = permission.name.clone();
            if by_name.insert(name.clone(), permission).is_some() {
                return Err(format!("permission {name} appears twice"));
            }
        }
        let mut by_source = BTreeMap::new();
        for entry in sources {
            if by_source.insert(entry.source, entry.permissions).is_some() {
                return Err(format!("source {} appears twice", entry.source.describe()));
            }
        }
        let known = Permissions {
            apps,
            permissions: by_name,
            connection,
            sources: by_source,
        };
        for (source, names) in &known.sources {
            known.validate(names, source.describe())?;
        }
        known.validate(&known.connection.permissions, "the connection")?;
        Ok(known)
    }

    /// Every name must be a permission of the table.
    pub fn validate(&self, names: &[String], user: &str) -> Result<(), String> {
        match names
            .iter()
            .find(|name| !self.permissions.contains_key(*name))
        {
            Some(name) => Err(format!(
                "{user} needs {name}, which the permission table lacks"
            )),
            None => Ok(()),
        }
    }

    /// Whether the catalogue says what `source` needs.
    pub fn knows(&self, source: Source) -> bool {
        self.sources.contains_key(&source)
    }

    pub fn source(&self, source: Source) -> &[String] {
        self.sources.get(&source).map(Vec::as_slice).unwrap_or(&[])
    }

    pub fn connection(&self) -> &[String] {
        &self.connection.permissions
    }

    pub fn id_of(&self, name: &str) -> Option<&str> {
        self.permissions
            .get(name)
            .map(|permission| permission.id.as_str())
    }

    pub fn api_of(&self, name: &str) -> Option<Api> {
        self.permissions.get(name).map(|permission| permission.api)
    }

    /// The names among `needed` that `granted` does not cover, itself or through a
    /// higher-privileged permission.
    pub fn missing<'a>(&self, needed: &'a [String], granted: &Granted) -> Vec<&'a str> {
        needed
            .iter()
            .filter(|name| {
                let Some(permission) = self.permissions.get(name.as_str()) else {
                    return true;
                };
                !std::iter::once(&permission.name)
                    .chain(&permission.implied_by)
                    .any(|held| granted.holds(permission.api, held))
            })
            .map(String::as_str)
            .collect()
    }

    /// The permissions to ask for: every one needed, less those another needed one implies.
    fn reduced<'a>(&'a self, needed: &BTreeSet<&'a str>) -> BTreeSet<&'a str> {
        needed
            .iter()
            .copied()
            .filter(|name| {
                self.permissions[*name]
                    .implied_by
                    .iter()
                    .all(|higher| !needed.contains(higher.as_str()))
            })
            .collect()
    }

    /// Each needed permission and what needs it, given the fixes' `(check, permissions)`.
    fn uses<'a>(&'a self, fixes: &[(&'a str, &'a [String])]) -> BTreeMap<&'a str, Use> {
        let mut uses: BTreeMap<&str, Use> = BTreeMap::new();
        let mut add = |name: &'a str, why: String| {
            uses.entry(name)
                .or_insert_with(|| Use {
                    why: BTreeSet::new(),
                })
                .why
                .insert(why);
        };
        for name in &self.connection.permissions {
            for request in &self.connection.requests {
                add(name, format!("connection: `{request}`"));
            }
        }
        for (source, names) in &self.sources {
            for name in names {
                add(name, format!("reads `{}`", source.describe()));
            }
        }
        for (check, names) in fixes {
            for name in *names {
                add(name, format!("fix of `{check}`"));
            }
        }
        uses
    }

    /// Every permission the catalogue needs: to connect, to read each source, to apply each fix.
    pub fn needed(&self, fixes: &[(&str, &[String])]) -> Vec<String> {
        self.uses(fixes)
            .keys()
            .map(|name| (*name).to_owned())
            .collect()
    }

    /// The permissions the app registration asks for, by name: what a tenant consenting to it
    /// grants.
    pub fn requested(&self, fixes: &[(&str, &[String])]) -> Vec<String> {
        let uses = self.uses(fixes);
        let needed: BTreeSet<&str> = uses.keys().copied().collect();
        self.reduced(&needed)
            .into_iter()
            .map(str::to_owned)
            .collect()
    }

    /// The app registration's `requiredResourceAccess`: one entry per API, its app roles.
    pub fn required_resource_access(&self, fixes: &[(&str, &[String])]) -> Value {
        let uses = self.uses(fixes);
        let needed: BTreeSet<&str> = uses.keys().copied().collect();
        let requested = self.reduced(&needed);
        let entries: Vec<Value> = self
            .apps
            .iter()
            .map(|app| {
                let roles: Vec<Value> = requested
                    .iter()
                    .map(|name| &self.permissions[*name])
                    .filter(|permission| permission.api == app.api)
                    .map(|permission| json!({"id": permission.id, "type": "Role"}))
                    .collect();
                json!({"resourceAppId": app.app_id, "resourceAccess": roles})
            })
            .collect();
        json!({ "requiredResourceAccess": entries })
    }

    /// `docs/permissions.md`: what Picket's app asks for, and why.
    pub fn markdown(&self, fixes: &[(&str, &[String])]) -> String {
        let uses = self.uses(fixes);
        let needed: BTreeSet<&str> = uses.keys().copied().collect();
        let requested = self.reduced(&needed);
        let mut text = String::from(
            "# The application permissions Picket's app needs\n\n\
             Generated from the scanner's check catalogue (`services/scanner/catalogue.toml`) by\n\
             `PICKET_UPDATE_DOCS=1 cargo test -p scanner --test permissions`; the same test fails when\n\
             this page or `deploy/entra/app-manifest.json` no longer matches the catalogue.\n\n\
             Picket's app asks each customer tenant for these application permissions (admin consent\n\
             to `/.default` grants all of `requiredResourceAccess` at once). Where a tenant has not\n\
             granted one, the checks that need it are *not evaluated: missing permission X*, and the\n\
             fixes that need it are refused before they call Microsoft; the rest of the scan goes on.\n\
             The app registration's `requiredResourceAccess` is `deploy/entra/app-manifest.json`.\n\n\
             | Permission | API | App role id | Asked for | Needed for |\n\
             |---|---|---|---|---|\n",
        );
        for (name, usage) in &uses {
            let permission = &self.permissions[*name];
            let app = self
                .apps
                .iter()
                .find(|app| app.api == permission.api)
                .map(|app| app.name.as_str())
                .unwrap_or_default();
            let asked = if requested.contains(name) {
                "yes".to_owned()
            } else {
                let by: Vec<&str> = permission
                    .implied_by
                    .iter()
                    .map(String::as_str)
                    .filter(|higher| needed.contains(higher))
                    .collect();
                format!("through {}", by.join(", "))
            };
            let why: Vec<&str> = usage.why.iter().map(String::as_str).collect();
            text.push_str(&format!(
                "| {name} | {app} | `{}` | {asked} | {} |\n",
                permission.id,
                why.join("; ")
            ));
        }
        text.push_str("\nResource applications:\n\n");
        for app in &self.apps {
            text.push_str(&format!("- {}: `{}`\n", app.name, app.app_id));
        }
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> Permissions {
        let permission = |name: &str, implied_by: &[&str]| Permission {
            name: name.into(),
            api: Api::Graph,
            id: format!("id-{name}"),
            implied_by: implied_by.iter().map(|name| (*name).to_owned()).collect(),
        };
        Permissions::new(
            vec![ResourceApp {
                api: Api::Graph,
                name: "Microsoft Graph".into(),
                app_id: "graph-app".into(),
            }],
            vec![
                permission("Policy.Read.All", &[]),
                permission("Mail.ReadBasic.All", &["Mail.Read"]),
                permission("Mail.Read", &[]),
            ],
            Connection {
                requests: vec!["GET /organization".into()],
                permissions: vec!["Policy.Read.All".into()],
            },
            vec![SourcePermissions {
                source: Source::MailFolders,
                permissions: vec!["Mail.ReadBasic.All".into()],
            }],
        )
        .expect("a valid table")
    }

    #[test]
    fn a_higher_privileged_grant_covers_the_narrower_permission() {
        let table = table();
        let needed = vec![
            "Mail.ReadBasic.All".to_owned(),
            "Policy.Read.All".to_owned(),
        ];
        let granted = |roles: &[&str]| {
            Granted::default().with(
                Api::Graph,
                Some(roles.iter().map(|role| (*role).to_owned()).collect()),
            )
        };
        assert_eq!(
            table.missing(&needed, &granted(&["Mail.Read"])),
            vec!["Policy.Read.All"]
        );
        assert!(
            table
                .missing(
                    &needed,
                    &granted(&["Mail.ReadBasic.All", "Policy.Read.All"])
                )
                .is_empty()
        );
        assert_eq!(table.missing(&needed, &granted(&[])).len(), 2);
        // A token that does not say what it carries is taken at its word: nothing is missing.
        assert!(table.missing(&needed, &Granted::default()).is_empty());
    }

    #[test]
    fn the_manifest_asks_only_for_what_no_other_request_implies() {
        let table = table();
        let fixes: Vec<(&str, &[String])> = Vec::new();
        let manifest = table.required_resource_access(&fixes);
        let roles = manifest["requiredResourceAccess"][0]["resourceAccess"].clone();
        assert_eq!(
            roles,
            json!([
                {"id": "id-Mail.ReadBasic.All", "type": "Role"},
                {"id": "id-Policy.Read.All", "type": "Role"},
            ])
        );
        let write = vec!["Mail.Read".to_owned()];
        let with_fix = table.required_resource_access(&[("mon.x", &write)]);
        let ids: Vec<&str> = with_fix["requiredResourceAccess"][0]["resourceAccess"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|role| role["id"].as_str())
            .collect();
        assert_eq!(ids, vec!["id-Mail.Read", "id-Policy.Read.All"]);
    }

    #[test]
    fn a_name_outside_the_table_is_refused() {
        let table = table();
        let error = table
            .validate(&["Mail.Send".to_owned()], "a fix")
            .expect_err("unknown permission");
        assert!(error.contains("Mail.Send"), "{error}");
    }
}
