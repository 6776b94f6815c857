//! `picketctl token login`: a token from the operator's OpenID Connect issuer (Entra ID, Okta,
//! Keycloak) by the device-code flow (RFC 8628), for a terminal with no browser of its own: the
//! issuer's discovery document names its device and token endpoints, the user opens the page it
//! shows and enters the code, and picketctl polls until the issuer answers with an access token.

use std::time::{Duration, Instant};

use serde::Deserialize;

use crate::Context;
use crate::output::{Format, print_json, write_stdout};

#[derive(Debug, Deserialize)]
struct Discovery {
    issuer: String,
    token_endpoint: String,
    device_authorization_endpoint: Option<String>,
}

#[derive(Debug, Deserialize)]
struct DeviceAuthorization {
    device_code: String,
    user_code: String,
    verification_uri: String,
    expires_in: u64,
    #[serde(default)]
    interval: Option<u64>,
    #[serde(default)]
    message: Option<String>,
}

#[derive(Debug, Deserialize)]
struct TokenAnswer {
    access_token: Option<String>,
    error: Option<String>,
    error_description: Option<String>,
}

async fn json<T: serde::de::DeserializeOwned>(
    response: reqwest::Response,
    what: &str,
) -> anyhow::Result<T> {
    let status = response.status();
    let body = response.bytes().await?;
    serde_json::from_slice(&body).map_err(|error| {
        anyhow::anyhow!(
            "{what} answered {status} with something that is not what OAuth says: {error}"
        )
    })
}

/// Signs in at `issuer` as the public client `client_id` for `scope`; prints the access token.
pub async fn login(
    context: &Context,
    issuer: &str,
    client_id: &str,
    scope: &str,
) -> anyhow::Result<()> {
    picket_platform::runtime::install_crypto_provider();
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()?;
    let issuer = issuer.trim_end_matches('/');
    let discovery: Discovery = json(
        http.get(format!("{issuer}/.well-known/openid-configuration"))
            .send()
            .await
            .map_err(|error| anyhow::anyhow!("cannot reach the issuer {issuer}: {error}"))?,
        "the discovery document",
    )
    .await?;
    if discovery.issuer.trim_end_matches('/') != issuer {
        anyhow::bail!(
            "the discovery document names issuer {}, not {issuer}",
            discovery.issuer
        );
    }
    let device_endpoint = discovery
        .device_authorization_endpoint
        .ok_or_else(|| anyhow::anyhow!("the issuer {issuer} offers no device-code sign-in"))?;
    let authorization: DeviceAuthorization = json(
        http.post(&device_endpoint)
            .form(&[("client_id", client_id), ("scope", scope)])
            .send()
            .await?,
        "the device authorization endpoint",
    )
    .await?;
    // The instructions go to the terminal, the token alone to standard output.
    eprintln!(
        "{}",
        authorization.message.clone().unwrap_or_else(|| format!(
            "To sign in, open {} and enter the code {}",
            authorization.verification_uri, authorization.user_code
        ))
    );
    let deadline = Instant::now() + Duration::from_secs(authorization.expires_in);
    let mut interval = Duration::from_secs(authorization.interval.unwrap_or(5).max(1));
    loop {
        if Instant::now() >= deadline {
            anyhow::bail!("the code expired before the sign-in completed");
        }
        tokio::time::sleep(interval).await;
        let answer: TokenAnswer = json(
            http.post(&discovery.token_endpoint)
                .form(&[
                    ("grant_type", "urn:ietf:params:oauth:grant-type:device_code"),
                    ("client_id", client_id),
                    ("device_code", authorization.device_code.as_str()),
                ])
                .send()
                .await?,
            "the token endpoint",
        )
        .await?;
        match (answer.access_token, answer.error.as_deref()) {
            (Some(token), _) => {
                return match context.output.format {
                    Format::Json => print_json(&serde_json::json!({ "token": token })),
                    Format::Table => write_stdout(&format!("{token}\n")),
                };
            }
            (None, Some("authorization_pending")) => {}
            // RFC 8628 §3.5: wait five seconds more between polls from now on.
            (None, Some("slow_down")) => interval += Duration::from_secs(5),
            (None, error) => anyhow::bail!(
                "the sign-in failed: {}: {}",
                error.unwrap_or("no error code"),
                answer.error_description.unwrap_or_default()
            ),
        }
    }
}
