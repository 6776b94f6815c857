//! A browser for the consent flow: it opens a URL and follows every redirect, as an administrator's
//! browser follows Microsoft's and Picket's. Where Entra would show its sign-in page (graph-sim's
//! admin-consent and authorize endpoints), it signs in as its account by adding `login_hint`, which
//! graph-sim takes in place of a password page.

/// The keys that seal forwarded consent links in the tests (scanner and notifier alike), and only
/// there; a macro so that settings written with `concat!` can hold them.
#[macro_export]
macro_rules! consent_link_test_keys {
    () => {
        "test-links-1:3u0n2mYQ7o9Jm2k4bqg8fV0sZc6Hh1Lr5tWx8yP2aDk="
    };
}

/// The scanner's `[scanner]` settings for a consent callback on a free port, and the redirect URI
/// that sends the browser there (the URI must be known before the scanner binds it), with the
/// tests' consent-link keys and a short wait for consent to propagate (a refused consent fails in
/// seconds, not a minute).
pub fn consent_callback_settings() -> String {
    let port = callback_port();
    format!(
        "consent_listen = \"127.0.0.1:{port}\"\nconsent_redirect_uri = \"http://127.0.0.1:{port}/consent/callback\"\nconsent_link_keys = \"{}\"\nconsent_propagation_timeout = \"5s\"\n",
        consent_link_test_keys!()
    )
}

/// Ports for consent callbacks, below Linux's ephemeral range (32768-60999): a port the kernel
/// hands out for `127.0.0.1:0` or an outgoing connection cannot take it between this pick and the
/// scanner's bind, as one from `:0` could.
const CALLBACK_PORTS: std::ops::Range<u16> = 20000..32000;

/// A free callback port: each pick in this process takes the next one, from an offset of the
/// process id so concurrent test binaries start apart.
fn callback_port() -> u16 {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let span = u32::from(CALLBACK_PORTS.end - CALLBACK_PORTS.start);
    let start = std::process::id().wrapping_mul(7919) % span;
    loop {
        let offset = (start + NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)) % span;
        let port = CALLBACK_PORTS.start + u16::try_from(offset).expect("within the range");
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// Redirects followed at most, as browsers cap them.
const MAX_REDIRECTS: usize = 20;

/// The page a browser ended on.
#[derive(Debug, Clone)]
pub struct Page {
    pub status: u16,
    pub url: String,
    pub body: String,
}

impl Page {
    /// Whether Picket's consent callback said the tenant is connected.
    pub fn connected(&self) -> bool {
        self.status == 200 && self.body.contains("<h1>Connected</h1>")
    }
}

pub struct Browser {
    http: reqwest::Client,
    account: String,
}

fn asks_to_sign_in(url: &url::Url) -> bool {
    let path = url.path();
    path.ends_with("/v2.0/adminconsent") || path.ends_with("/oauth2/v2.0/authorize")
}

impl Browser {
    /// A browser whose user signs in as `account` (a user principal name of a simulated tenant).
    pub fn signed_in_as(account: &str) -> Browser {
        picket_platform::runtime::install_crypto_provider();
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("an http client builds");
        Browser {
            http,
            account: account.to_owned(),
        }
    }

    /// Opens `url` and follows redirects to the page they end on.
    pub async fn open(&self, url: &str) -> anyhow::Result<Page> {
        let mut next = url::Url::parse(url)?;
        for _ in 0..MAX_REDIRECTS {
            if asks_to_sign_in(&next) {
                next.query_pairs_mut()
                    .append_pair("login_hint", &self.account);
            }
            let response = self.http.get(next.clone()).send().await?;
            let status = response.status();
            if status.is_redirection() {
                let location = response
                    .headers()
                    .get(reqwest::header::LOCATION)
                    .and_then(|value| value.to_str().ok())
                    .ok_or_else(|| anyhow::anyhow!("{status} without a location from {next}"))?;
                next = next.join(location)?;
                continue;
            }
            return Ok(Page {
                status: status.as_u16(),
                url: next.to_string(),
                body: response.text().await?,
            });
        }
        anyhow::bail!("more than {MAX_REDIRECTS} redirects from {url}")
    }
}
