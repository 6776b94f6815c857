//! Development bearer tokens, signed with the key the services verify with.

use std::path::PathBuf;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use clap::Subcommand;
use picket_platform::auth::TokenAuthority;
use picket_platform::{Principal, Role};

use crate::Context;
use crate::output::{Format, print_json, write_stdout};

/// Where `make run` keeps its development signing key.
const DEV_SECRET_FILE: &str = ".dev/jwt-secret";

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Signs a token for development and tests; production tokens come from your identity provider.
    Mint(Mint),
    /// Signs in at the operator's OpenID Connect issuer with a code to enter in a browser
    /// (device-code flow) and prints the access token: `export PICKET_TOKEN=$(picketctl token login)`.
    Login {
        /// The issuer, such as https://login.microsoftonline.com/<tenant>/v2.0.
        #[arg(long, env = "PICKET_ISSUER")]
        issuer: String,
        /// The public client (app registration) picketctl signs in as.
        #[arg(long, env = "PICKET_CLIENT_ID")]
        client_id: String,
        /// What to ask for: Picket's API.
        #[arg(long, env = "PICKET_SCOPE", default_value = "api://picket/.default")]
        scope: String,
    },
}

#[derive(Debug, clap::Args)]
pub struct Mint {
    /// operator, partner, customer or investigator.
    #[arg(long, value_parser = parse_role, default_value = "partner")]
    role: Role,
    /// Who the token is for (recorded on decisions and work entries).
    #[arg(long, default_value = "picketctl")]
    subject: String,
    /// Tenants a customer token may see.
    #[arg(long = "tenant")]
    tenants: Vec<String>,
    /// How long it is valid, such as 8h.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "8h")]
    ttl: std::time::Duration,
    /// The signing key: this file, else PICKET__AUTH__JWT_SECRET, else .dev/jwt-secret.
    #[arg(long)]
    secret_file: Option<PathBuf>,
    #[arg(long, default_value = "picket")]
    issuer: String,
    #[arg(long, default_value = "picket")]
    audience: String,
}

fn parse_role(input: &str) -> Result<Role, String> {
    match input {
        "operator" => Ok(Role::Operator),
        "partner" => Ok(Role::Partner),
        "customer" => Ok(Role::Customer),
        "investigator" => Ok(Role::Investigator),
        _ => Err(format!(
            "`{input}` is not a role: operator, partner, customer or investigator"
        )),
    }
}

pub async fn token(context: &Context, command: TokenCommand) -> anyhow::Result<()> {
    match command {
        TokenCommand::Login {
            issuer,
            client_id,
            scope,
        } => crate::login::login(context, &issuer, &client_id, &scope).await,
        TokenCommand::Mint(mint) => mint_token(context, mint),
    }
}

fn mint_token(context: &Context, mint: Mint) -> anyhow::Result<()> {
    let Mint {
        role,
        subject,
        tenants,
        ttl,
        secret_file,
        issuer,
        audience,
    } = mint;
    let secret = signing_key(secret_file)?;
    if secret.len() < 32 {
        anyhow::bail!("the signing key is shorter than the 32 bytes the services require");
    }
    let partner_id = match role {
        Role::Partner | Role::Customer => Some(context.partner()?),
        Role::Operator | Role::Investigator => None,
    };
    let authority = TokenAuthority::shared_key(&secret, &issuer, &audience, ttl);
    let token = authority.mint(
        &Principal {
            subject,
            role,
            partner_id,
            tenant_ids: tenants,
        },
        ttl,
    )?;
    match context.output.format {
        Format::Json => print_json(&serde_json::json!({ "token": token })),
        Format::Table => write_stdout(&format!("{token}\n")),
    }
}

fn signing_key(file: Option<PathBuf>) -> anyhow::Result<String> {
    if file.is_none()
        && let Ok(secret) = std::env::var("PICKET__AUTH__JWT_SECRET")
    {
        return Ok(secret);
    }
    let path = file.unwrap_or_else(|| PathBuf::from(DEV_SECRET_FILE));
    let secret = std::fs::read_to_string(&path).map_err(|error| {
        anyhow::anyhow!(
            "no signing key: {} ({error}); pass --secret-file or set PICKET__AUTH__JWT_SECRET",
            path.display()
        )
    })?;
    Ok(secret.trim().to_owned())
}

/// The partner a token is scoped to, read (not verified: the services verify) from its claims.
pub fn partner_of(token: &str) -> Option<String> {
    let payload = token.trim().split('.').nth(1)?;
    let claims: serde_json::Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).ok()?).ok()?;
    claims
        .get("partner_id")?
        .as_str()
        .filter(|partner| !partner.is_empty())
        .map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_minted_token_verifies_and_names_its_partner() {
        let authority = TokenAuthority::shared_key(
            "0123456789abcdef0123456789abcdef",
            "picket",
            "picket",
            std::time::Duration::from_secs(3600),
        );
        let principal = Principal {
            subject: "staff".into(),
            role: Role::Partner,
            partner_id: Some("p-1".into()),
            tenant_ids: Vec::new(),
        };
        let token = authority
            .mint(&principal, std::time::Duration::from_secs(60))
            .expect("mint");
        assert_eq!(authority.verify(&token).ok(), Some(principal));
        assert_eq!(partner_of(&token).as_deref(), Some("p-1"));
        assert_eq!(partner_of("not-a-token"), None);
        assert!(parse_role("admin").is_err());
    }
}
