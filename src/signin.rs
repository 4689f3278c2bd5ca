//! Signing in with an identity provider: OpenID Connect (authorization code with PKCE, `state`
//! and `nonce`), GitHub's OAuth web flow, and Cloudflare Access's assertion. Everything here is
//! decided without the network: the settings, the secrets an attempt carries, the URLs sent to
//! the provider, what a callback must bring back, and the user name a first sign-in gets. The
//! Worker's glue (`edge::signin`) fetches, verifies tokens (`jwt`) and stores (`directory`).
//!
//! The rules (`docs/access.md`, "Signing in with an identity"): an attempt's `state` is handed
//! to the provider and kept in an HttpOnly cookie of the browser that started it, while D1 keeps
//! its hash with the nonce and the verifier for [`ATTEMPT_SECONDS`]; a callback counts only if
//! its `state` is the cookie's and names an attempt of the same provider that is still there,
//! which it then takes, so no callback counts twice and none from another browser counts at all.

use base64::Engine;
use sha2::{Digest, Sha256};

use crate::directory::SignInAttemptRow;
use crate::names::check_channel_name;
use crate::session::{random_secret, secret_from_cookies};

/// How long a started sign-in waits for its callback.
pub const ATTEMPT_SECONDS: u64 = 600;

/// The attempt cookie's name over plain http (the local server).
pub const ATTEMPT_COOKIE: &str = "condaflare_signin";
/// Its name over https: a `__Secure-` cookie is kept only when `Secure`, so plain http cannot
/// set it.
pub const SECURE_ATTEMPT_COOKIE: &str = "__Secure-condaflare_signin";
/// Where the attempt cookie goes: the callbacks only.
pub const ATTEMPT_COOKIE_PATH: &str = "/api/v1/signin";

/// An identity provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Provider {
    Oidc,
    Github,
    Access,
}

impl Provider {
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "oidc" => Some(Self::Oidc),
            "github" => Some(Self::Github),
            "access" => Some(Self::Access),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Oidc => "oidc",
            Self::Github => "github",
            Self::Access => "access",
        }
    }

    /// How a subject of this provider is compared: Access vouches for an email address, whose
    /// case does not matter; the others' subjects are opaque.
    pub fn normalize_subject(self, subject: &str) -> String {
        match self {
            Self::Access => subject.trim().to_ascii_lowercase(),
            Self::Oidc | Self::Github => subject.to_owned(),
        }
    }
}

/// An OpenID Connect provider (`OIDC_*`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OidcSettings {
    /// The issuer, exactly as its tokens' `iss` says it; discovery is at
    /// `<issuer>/.well-known/openid-configuration`.
    pub issuer: String,
    pub client_id: String,
    pub client_secret: String,
    pub scopes: String,
    /// The sign-in button's name for it ("Sign in with <label>").
    pub label: String,
}

/// GitHub's OAuth app (`GITHUB_*`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GithubSettings {
    pub client_id: String,
    pub client_secret: String,
    /// Where its authorize and access-token endpoints are (`https://github.com`).
    pub web_url: String,
    /// Where its REST API is (`https://api.github.com`).
    pub api_url: String,
}

/// A Cloudflare Access application in front of the deployment (`ACCESS_*`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessSettings {
    /// `https://<team>.cloudflareaccess.com`, its assertions' `iss`.
    pub issuer: String,
    /// The application's AUD tag, its assertions' `aud`.
    pub audience: String,
    /// The team's signing keys.
    pub certs_url: String,
}

/// The sign-in methods besides API keys, each off unless configured, and the identities that
/// are site admins.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SignInConfig {
    pub oidc: Option<OidcSettings>,
    pub github: Option<GithubSettings>,
    pub access: Option<AccessSettings>,
    /// `ADMIN_IDENTITIES`: provider and normalized subject.
    pub admins: Vec<(Provider, String)>,
}

/// A sign-in method the pages offer.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Method {
    pub method: &'static str,
    pub label: String,
}

impl SignInConfig {
    /// Reads the settings through `var` (vars and secrets alike; an empty value is unset). A
    /// method is on when its client id (Access: its AUD tag) is set; its other settings are
    /// then required, and a missing or malformed one is an error naming it.
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Result<Self, String> {
        let get = |name: &str| {
            var(name)
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty())
        };
        let required = |name: &str, method: &str| {
            get(name).ok_or_else(|| format!("{name} is needed for {method} sign-in"))
        };
        let url = |name: &str, value: String| {
            if value.starts_with("https://") || value.starts_with("http://") {
                Ok(value)
            } else {
                Err(format!("{name} is '{value}', not an http(s) URL"))
            }
        };
        let oidc = match get("OIDC_CLIENT_ID") {
            None => None,
            Some(client_id) => Some(OidcSettings {
                issuer: url("OIDC_ISSUER", required("OIDC_ISSUER", "OpenID Connect")?)?,
                client_id,
                client_secret: required("OIDC_CLIENT_SECRET", "OpenID Connect")?,
                scopes: get("OIDC_SCOPES").unwrap_or_else(|| "openid profile email".to_owned()),
                label: get("OIDC_LABEL").unwrap_or_else(|| "single sign-on".to_owned()),
            }),
        };
        let github = match get("GITHUB_CLIENT_ID") {
            None => None,
            Some(client_id) => Some(GithubSettings {
                client_id,
                client_secret: required("GITHUB_CLIENT_SECRET", "GitHub")?,
                web_url: url(
                    "GITHUB_URL",
                    get("GITHUB_URL").unwrap_or_else(|| "https://github.com".to_owned()),
                )?
                .trim_end_matches('/')
                .to_owned(),
                api_url: url(
                    "GITHUB_API_URL",
                    get("GITHUB_API_URL").unwrap_or_else(|| "https://api.github.com".to_owned()),
                )?
                .trim_end_matches('/')
                .to_owned(),
            }),
        };
        let access = match get("ACCESS_AUD") {
            None => None,
            Some(audience) => {
                let team = required("ACCESS_TEAM_DOMAIN", "Cloudflare Access")?;
                let host = team
                    .trim_start_matches("https://")
                    .trim_end_matches('/')
                    .to_owned();
                if host.is_empty() || host.contains(['/', ':', '?', '#']) {
                    return Err(format!(
                        "ACCESS_TEAM_DOMAIN is '{team}', not a host name such as <team>.cloudflareaccess.com"
                    ));
                }
                let issuer = format!("https://{host}");
                let certs_url = match get("ACCESS_CERTS_URL") {
                    Some(certs) => url("ACCESS_CERTS_URL", certs)?,
                    None => format!("{issuer}/cdn-cgi/access/certs"),
                };
                Some(AccessSettings {
                    issuer,
                    audience,
                    certs_url,
                })
            }
        };
        let admins = get("ADMIN_IDENTITIES")
            .unwrap_or_default()
            .split(',')
            .map(str::trim)
            .filter(|entry| !entry.is_empty())
            .map(|entry| {
                let bad =
                    || format!("ADMIN_IDENTITIES: '{entry}' is not <oidc|github|access>:<subject>");
                let (provider, subject) = entry.split_once(':').ok_or_else(bad)?;
                let provider = Provider::parse(provider.trim()).ok_or_else(bad)?;
                let subject = provider.normalize_subject(subject.trim());
                if subject.is_empty() {
                    return Err(bad());
                }
                Ok((provider, subject))
            })
            .collect::<Result<_, String>>()?;
        Ok(Self {
            oidc,
            github,
            access,
            admins,
        })
    }

    /// Whether `ADMIN_IDENTITIES` names this identity (its subject as [`Provider::normalize_subject`]
    /// gives it).
    pub fn names_admin(&self, provider: Provider, subject: &str) -> bool {
        self.admins
            .iter()
            .any(|(p, s)| *p == provider && s == subject)
    }

    /// The methods that are on, in the order the sign-in page shows them.
    pub fn methods(&self) -> Vec<Method> {
        let mut methods = Vec::new();
        if let Some(oidc) = &self.oidc {
            methods.push(Method {
                method: "oidc",
                label: oidc.label.clone(),
            });
        }
        if self.github.is_some() {
            methods.push(Method {
                method: "github",
                label: "GitHub".to_owned(),
            });
        }
        if self.access.is_some() {
            methods.push(Method {
                method: "access",
                label: "Cloudflare Access".to_owned(),
            });
        }
        methods
    }
}

/// Why a sign-in with a provider was refused. The callback sends the browser to the sign-in
/// page with [`Refusal::code`], which the page words (`web/public/-/pages/signin.js`); nothing
/// was stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The method is not configured.
    Disabled,
    /// The callback's `state` is missing, not this browser's, of another provider, or was
    /// used already.
    State,
    /// The attempt waited longer than [`ATTEMPT_SECONDS`].
    Expired,
    /// The provider answered with an error (the person cancelled, or it refused).
    Denied,
    /// The provider did not exchange the code (used already, or not its own).
    Exchange,
    /// The provider's identity token did not verify, or its nonce is not the attempt's.
    Token,
    /// The provider could not be reached, or answered what it should not.
    Unavailable,
}

impl Refusal {
    pub fn code(self) -> &'static str {
        match self {
            Self::Disabled => "disabled",
            Self::State => "state",
            Self::Expired => "expired",
            Self::Denied => "denied",
            Self::Exchange => "exchange",
            Self::Token => "token",
            Self::Unavailable => "unavailable",
        }
    }

    /// The sign-in page that tells the person why.
    pub fn page(self) -> String {
        format!("/-/signin?error={}", self.code())
    }
}

/// The secrets of one attempt: `state` (which the browser's cookie holds and the callback must
/// bring back), the OIDC `nonce` (which the id_token must carry) and the PKCE verifier (which
/// only the token request sends).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttemptSecrets {
    pub state: String,
    pub nonce: String,
    pub verifier: String,
}

impl AttemptSecrets {
    pub fn new() -> Self {
        Self {
            state: random_secret(),
            nonce: random_secret(),
            verifier: random_secret(),
        }
    }
}

impl Default for AttemptSecrets {
    fn default() -> Self {
        Self::new()
    }
}

/// The PKCE `code_challenge` of a verifier (method `S256`, RFC 7636).
pub fn pkce_challenge(verifier: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}

/// `application/x-www-form-urlencoded`'s encoding of one value: all but the unreserved
/// characters percent-encoded.
pub fn form_encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for byte in value.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// `pairs` as a form body (or query).
pub fn form(pairs: &[(&str, &str)]) -> String {
    pairs
        .iter()
        .map(|(name, value)| format!("{}={}", form_encode(name), form_encode(value)))
        .collect::<Vec<_>>()
        .join("&")
}

/// `base` with `pairs` added to its query.
fn with_query(base: &str, pairs: &[(&str, &str)]) -> String {
    let separator = if base.contains('?') { '&' } else { '?' };
    format!("{base}{separator}{}", form(pairs))
}

/// Where the provider sends the browser back: `<origin>/api/v1/signin/<provider>/callback`
/// (the URL to register with it).
pub fn callback_url(origin: &str, provider: Provider) -> String {
    format!(
        "{origin}{ATTEMPT_COOKIE_PATH}/{}/callback",
        provider.as_str()
    )
}

/// The OIDC authorization request: the code flow, with the attempt's state, nonce and PKCE
/// challenge.
pub fn oidc_authorization_url(
    authorization_endpoint: &str,
    settings: &OidcSettings,
    redirect_uri: &str,
    secrets: &AttemptSecrets,
) -> String {
    with_query(
        authorization_endpoint,
        &[
            ("response_type", "code"),
            ("client_id", &settings.client_id),
            ("redirect_uri", redirect_uri),
            ("scope", &settings.scopes),
            ("state", &secrets.state),
            ("nonce", &secrets.nonce),
            ("code_challenge", &pkce_challenge(&secrets.verifier)),
            ("code_challenge_method", "S256"),
        ],
    )
}

/// The OIDC token request's body (the client authenticates with [`basic_credentials`]).
pub fn oidc_token_request(code: &str, redirect_uri: &str, verifier: &str) -> String {
    form(&[
        ("grant_type", "authorization_code"),
        ("code", code),
        ("redirect_uri", redirect_uri),
        ("code_verifier", verifier),
    ])
}

/// `Authorization: Basic` of a client (RFC 6749 §2.3.1: id and secret form-encoded first).
pub fn basic_credentials(client_id: &str, client_secret: &str) -> String {
    let pair = format!("{}:{}", form_encode(client_id), form_encode(client_secret));
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(pair)
    )
}

/// GitHub's authorize URL for an attempt.
pub fn github_authorization_url(
    settings: &GithubSettings,
    redirect_uri: &str,
    secrets: &AttemptSecrets,
) -> String {
    with_query(
        &format!("{}/login/oauth/authorize", settings.web_url),
        &[
            ("client_id", &settings.client_id),
            ("redirect_uri", redirect_uri),
            ("state", &secrets.state),
            ("allow_signup", "false"),
        ],
    )
}

/// GitHub's access-token request's URL and body.
pub fn github_token_request(
    settings: &GithubSettings,
    code: &str,
    redirect_uri: &str,
) -> (String, String) {
    (
        format!("{}/login/oauth/access_token", settings.web_url),
        form(&[
            ("client_id", &settings.client_id),
            ("client_secret", &settings.client_secret),
            ("code", code),
            ("redirect_uri", redirect_uri),
        ]),
    )
}

/// The authorization and token endpoints of a provider's discovery document, which the code
/// flow follows; a document without them, or naming one that is not http(s), is
/// [`Refusal::Unavailable`].
pub fn flow_endpoints(
    authorization: Option<&str>,
    token: Option<&str>,
) -> Result<(String, String), Refusal> {
    let web = |url: Option<&str>| {
        url.filter(|url| url.starts_with("https://") || url.starts_with("http://"))
            .map(str::to_owned)
            .ok_or(Refusal::Unavailable)
    };
    Ok((web(authorization)?, web(token)?))
}

/// A token endpoint's answer: the token it issued, or its refusal.
#[derive(Debug, Clone, Default, serde::Deserialize)]
struct TokenAnswer {
    id_token: Option<String>,
    access_token: Option<String>,
    error: Option<String>,
}

/// The id_token of an OIDC token endpoint's answer; a refusal of the code is
/// [`Refusal::Exchange`].
pub fn id_token_of(status: u16, body: &str) -> Result<String, Refusal> {
    token_answer(status, body)?
        .id_token
        .ok_or(Refusal::Unavailable)
}

/// The access token of GitHub's answer (which is 200 with an `error` when it refuses).
pub fn access_token_of(status: u16, body: &str) -> Result<String, Refusal> {
    token_answer(status, body)?
        .access_token
        .filter(|token| !token.is_empty())
        .ok_or(Refusal::Unavailable)
}

fn token_answer(status: u16, body: &str) -> Result<TokenAnswer, Refusal> {
    let answer: Option<TokenAnswer> = serde_json::from_str(body).ok();
    match answer {
        Some(answer) if answer.error.is_some() => Err(Refusal::Exchange),
        Some(answer) if (200..300).contains(&status) => Ok(answer),
        // An OAuth error status without an error body, or one that is not JSON.
        _ if (400..500).contains(&status) => Err(Refusal::Exchange),
        _ => Err(Refusal::Unavailable),
    }
}

/// The `code` and `state` of a callback's query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Callback {
    pub code: String,
    pub state: String,
}

impl Callback {
    /// The callback's code and state, if its `state` is the one this browser's attempt cookie
    /// holds. A provider's `error` is [`Refusal::Denied`]; anything else amiss is
    /// [`Refusal::State`]. Neither takes the attempt.
    pub fn read<K: AsRef<str>, V: AsRef<str>>(
        query: impl IntoIterator<Item = (K, V)>,
        cookie_state: Option<&str>,
    ) -> Result<Self, Refusal> {
        let (mut code, mut state, mut error) = (None, None, false);
        for (name, value) in query {
            let value = value.as_ref();
            match name.as_ref() {
                "code" if !value.is_empty() => code = Some(value.to_owned()),
                "state" if !value.is_empty() => state = Some(value.to_owned()),
                "error" => error = true,
                _ => {}
            }
        }
        // A refusal is told as such, whoever's attempt it names: it changes nothing either way
        // (and some providers leave the state out of their error answers).
        if error {
            return Err(Refusal::Denied);
        }
        let state = state.ok_or(Refusal::State)?;
        let ours = cookie_state.is_some_and(|cookie| same_secret(cookie, &state));
        if !ours {
            return Err(Refusal::State);
        }
        Ok(Self {
            code: code.ok_or(Refusal::State)?,
            state,
        })
    }
}

/// Compares two secrets in time that does not depend on where they differ.
fn same_secret(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |diff, (x, y)| diff | (x ^ y))
            == 0
}

/// The attempt a callback took from D1 (`None`: there was none, or it was taken already), if
/// it is one of `provider`'s that is still waiting at `now` (milliseconds).
pub fn check_attempt(
    attempt: Option<SignInAttemptRow>,
    provider: Provider,
    now: u64,
) -> Result<SignInAttemptRow, Refusal> {
    let attempt = attempt.ok_or(Refusal::State)?;
    if attempt.provider != provider.as_str() {
        return Err(Refusal::State);
    }
    if (attempt.expires_at as u64) <= now {
        return Err(Refusal::Expired);
    }
    Ok(attempt)
}

/// Whether an id_token's `nonce` claim is the attempt's.
pub fn check_nonce(claimed: Option<&serde_json::Value>, expected: &str) -> Result<(), Refusal> {
    match claimed.and_then(serde_json::Value::as_str) {
        Some(nonce) if same_secret(nonce, expected) => Ok(()),
        _ => Err(Refusal::Token),
    }
}

/// Whether an id_token with several audiences names this client as the party it was issued
/// to (`azp`, OpenID Connect Core §3.1.3.7); one with a single audience needs none.
pub fn check_authorized_party(
    audiences: &[String],
    azp: Option<&str>,
    client_id: &str,
) -> Result<(), Refusal> {
    if audiences.len() <= 1 || azp == Some(client_id) {
        Ok(())
    } else {
        Err(Refusal::Token)
    }
}

/// A random suffix that makes a user name free: 8 hex digits.
pub fn name_suffix() -> String {
    let mut bytes = [0u8; 4];
    getrandom::fill(&mut bytes).expect("the platform provides randomness");
    hex::encode(bytes)
}

/// Who a provider says signed in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Profile {
    pub provider: Provider,
    /// The OIDC issuer; '' for the others.
    pub issuer: String,
    /// The provider's name for the person, normalized ([`Provider::normalize_subject`]).
    pub subject: String,
    /// What listings show of the identity: a login or an email address.
    pub label: String,
    /// What a new user's name is made from, best first.
    pub name_hints: Vec<String>,
}

impl Profile {
    /// The person an id_token (already verified) names: its `sub`, with `preferred_username`
    /// and `email` for the name.
    pub fn of_id_token(
        issuer: &str,
        sub: Option<&str>,
        extra: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<Self, Refusal> {
        let sub = sub.filter(|s| !s.is_empty()).ok_or(Refusal::Token)?;
        let claim = |name: &str| extra.get(name).and_then(|v| v.as_str()).map(str::to_owned);
        let hints: Vec<String> = ["preferred_username", "email", "name"]
            .into_iter()
            .filter_map(claim)
            .collect();
        Ok(Self {
            provider: Provider::Oidc,
            issuer: issuer.to_owned(),
            subject: sub.to_owned(),
            label: claim("email")
                .or_else(|| claim("preferred_username"))
                .unwrap_or_else(|| sub.to_owned()),
            name_hints: hints,
        })
    }

    /// The person GitHub's `GET /user` answered with.
    pub fn of_github_user(body: &str) -> Result<Self, Refusal> {
        #[derive(serde::Deserialize)]
        struct User {
            id: u64,
            login: String,
        }
        let user: User = serde_json::from_str(body).map_err(|_| Refusal::Unavailable)?;
        Ok(Self {
            provider: Provider::Github,
            issuer: String::new(),
            subject: user.id.to_string(),
            label: user.login.clone(),
            name_hints: vec![user.login],
        })
    }

    /// The person a (verified) Access assertion vouches for, by its `email` claim.
    pub fn of_access_claims(
        extra: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<Self, Refusal> {
        let email = extra
            .get("email")
            .and_then(|v| v.as_str())
            .map(|email| Provider::Access.normalize_subject(email))
            .filter(|email| email.contains('@'))
            .ok_or(Refusal::Token)?;
        Ok(Self {
            provider: Provider::Access,
            issuer: String::new(),
            subject: email.clone(),
            label: email.clone(),
            name_hints: vec![email],
        })
    }
}

/// The user names a first sign-in tries, in order, until one is free: the first hint that
/// makes a valid user name (an email address gives its local part; other characters become
/// '-'), else "user"; then with `-2` to `-9`, then with `-<suffix>` (random, so the last always
/// finds a free name).
pub fn user_name_candidates(hints: &[String], suffix: &str) -> Vec<String> {
    let base = hints
        .iter()
        .filter_map(|hint| user_name_of(hint))
        .next()
        .unwrap_or_else(|| "user".to_owned());
    let mut names = vec![base.clone()];
    names.extend((2..=9).map(|n| format!("{base}-{n}")));
    names.push(format!("{base}-{suffix}"));
    names
}

/// `hint` made into a user name (the channel name rule), if anything of it is left.
fn user_name_of(hint: &str) -> Option<String> {
    let local = hint.split('@').next().unwrap_or_default();
    let mut name = String::new();
    for c in local.trim().to_lowercase().chars() {
        let c = if c.is_ascii_lowercase() || c.is_ascii_digit() || "_.".contains(c) {
            c
        } else {
            '-'
        };
        let repeats = name.ends_with(['-', '.']) && matches!(c, '-' | '.');
        if !repeats {
            name.push(c);
        }
    }
    let name: String = name
        .trim_start_matches(|c: char| !c.is_ascii_alphanumeric())
        .trim_end_matches(['-', '.'])
        .chars()
        .take(40)
        .collect();
    let name = name.trim_end_matches(['-', '.']).to_owned();
    check_channel_name(&name).ok().map(|()| name)
}

/// The path of this site to go to after signing in: `next` if it is one, else `/`.
pub fn safe_next(next: Option<&str>) -> String {
    match next {
        Some(path)
            if path.starts_with('/')
                && !path.starts_with("//")
                && !path.starts_with("/\\")
                && path.len() <= 512
                && !path.chars().any(|c| c.is_control() || c == '\\') =>
        {
            path.to_owned()
        }
        _ => "/".to_owned(),
    }
}

fn attempt_cookie_name(https: bool) -> &'static str {
    if https {
        SECURE_ATTEMPT_COOKIE
    } else {
        ATTEMPT_COOKIE
    }
}

/// The `Set-Cookie` that binds an attempt to the browser that started it. `SameSite=Lax`, as
/// the callback is a navigation from the provider's site (a `Strict` cookie would not come
/// along); `Path` limits it to the sign-in routes.
pub fn attempt_cookie(state: &str, https: bool) -> String {
    let secure = if https { "; Secure" } else { "" };
    format!(
        "{}={state}; HttpOnly; SameSite=Lax; Path={ATTEMPT_COOKIE_PATH}; Max-Age={ATTEMPT_SECONDS}{secure}",
        attempt_cookie_name(https)
    )
}

/// The `Set-Cookie` that drops the attempt cookie.
pub fn cleared_attempt_cookie(https: bool) -> String {
    let secure = if https { "; Secure" } else { "" };
    format!(
        "{}=; HttpOnly; SameSite=Lax; Path={ATTEMPT_COOKIE_PATH}; Max-Age=0{secure}",
        attempt_cookie_name(https)
    )
}

/// The state in a `Cookie` header's attempt cookie, if it holds one of [`random_secret`]'s form.
pub fn attempt_from_cookies(cookie_header: &str, https: bool) -> Option<&str> {
    secret_from_cookies(cookie_header, attempt_cookie_name(https))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::test_vars as vars;
    use serde_json::json;

    #[test]
    fn every_method_is_off_unless_configured() {
        let config = SignInConfig::from_vars(vars(&[])).unwrap();
        assert_eq!(config, SignInConfig::default());
        assert!(config.methods().is_empty());
        // wrangler.toml's empty values are unset too.
        let empty = SignInConfig::from_vars(vars(&[
            ("OIDC_CLIENT_ID", ""),
            ("GITHUB_CLIENT_ID", " "),
            ("ACCESS_AUD", ""),
            ("ADMIN_IDENTITIES", ""),
        ]))
        .unwrap();
        assert_eq!(empty, SignInConfig::default());
    }

    #[test]
    fn each_method_reads_its_settings_with_defaults() {
        let config = SignInConfig::from_vars(vars(&[
            ("OIDC_ISSUER", "https://idp.example/realms/x"),
            ("OIDC_CLIENT_ID", "condaflare"),
            ("OIDC_CLIENT_SECRET", "s3cret"),
            ("GITHUB_CLIENT_ID", "Iv1.abc"),
            ("GITHUB_CLIENT_SECRET", "gh-secret"),
            ("ACCESS_TEAM_DOMAIN", "myteam.cloudflareaccess.com"),
            ("ACCESS_AUD", "aud-tag"),
        ]))
        .unwrap();
        let oidc = config.oidc.as_ref().unwrap();
        assert_eq!(oidc.issuer, "https://idp.example/realms/x");
        assert_eq!(oidc.scopes, "openid profile email");
        assert_eq!(oidc.label, "single sign-on");
        let github = config.github.as_ref().unwrap();
        assert_eq!(github.web_url, "https://github.com");
        assert_eq!(github.api_url, "https://api.github.com");
        let access = config.access.as_ref().unwrap();
        assert_eq!(access.issuer, "https://myteam.cloudflareaccess.com");
        assert_eq!(
            access.certs_url,
            "https://myteam.cloudflareaccess.com/cdn-cgi/access/certs"
        );
        let methods: Vec<&str> = config.methods().iter().map(|m| m.method).collect();
        assert_eq!(methods, ["oidc", "github", "access"]);
    }

    #[test]
    fn base_urls_and_the_label_can_be_set() {
        let config = SignInConfig::from_vars(vars(&[
            ("OIDC_ISSUER", "http://127.0.0.1:9000"),
            ("OIDC_CLIENT_ID", "c"),
            ("OIDC_CLIENT_SECRET", "s"),
            ("OIDC_LABEL", "Okta"),
            ("OIDC_SCOPES", "openid email"),
            ("GITHUB_CLIENT_ID", "c"),
            ("GITHUB_CLIENT_SECRET", "s"),
            ("GITHUB_URL", "http://127.0.0.1:9001/"),
            ("GITHUB_API_URL", "http://127.0.0.1:9001/api"),
            ("ACCESS_TEAM_DOMAIN", "https://team.cloudflareaccess.com/"),
            ("ACCESS_AUD", "a"),
            ("ACCESS_CERTS_URL", "http://127.0.0.1:9002/certs"),
        ]))
        .unwrap();
        assert_eq!(config.methods()[0].label, "Okta");
        assert_eq!(config.oidc.unwrap().scopes, "openid email");
        let github = config.github.unwrap();
        assert_eq!(github.web_url, "http://127.0.0.1:9001");
        assert_eq!(github.api_url, "http://127.0.0.1:9001/api");
        let access = config.access.unwrap();
        assert_eq!(access.issuer, "https://team.cloudflareaccess.com");
        assert_eq!(access.certs_url, "http://127.0.0.1:9002/certs");
    }

    #[test]
    fn a_half_configured_method_is_an_error_naming_what_is_missing() {
        for (pairs, named) in [
            (
                &[("OIDC_CLIENT_ID", "c"), ("OIDC_CLIENT_SECRET", "s")][..],
                "OIDC_ISSUER",
            ),
            (
                &[("OIDC_CLIENT_ID", "c"), ("OIDC_ISSUER", "https://i")][..],
                "OIDC_CLIENT_SECRET",
            ),
            (
                &[
                    ("OIDC_CLIENT_ID", "c"),
                    ("OIDC_ISSUER", "idp.example"),
                    ("OIDC_CLIENT_SECRET", "s"),
                ][..],
                "OIDC_ISSUER",
            ),
            (&[("GITHUB_CLIENT_ID", "c")][..], "GITHUB_CLIENT_SECRET"),
            (
                &[
                    ("GITHUB_CLIENT_ID", "c"),
                    ("GITHUB_CLIENT_SECRET", "s"),
                    ("GITHUB_URL", "github.com"),
                ][..],
                "GITHUB_URL",
            ),
            (&[("ACCESS_AUD", "a")][..], "ACCESS_TEAM_DOMAIN"),
            (
                &[
                    ("ACCESS_AUD", "a"),
                    ("ACCESS_TEAM_DOMAIN", "team.example/path"),
                ][..],
                "ACCESS_TEAM_DOMAIN",
            ),
            (
                &[("ADMIN_IDENTITIES", "github12345")][..],
                "ADMIN_IDENTITIES",
            ),
            (&[("ADMIN_IDENTITIES", "gitlab:1")][..], "ADMIN_IDENTITIES"),
            (&[("ADMIN_IDENTITIES", "github:")][..], "ADMIN_IDENTITIES"),
        ] {
            let error = SignInConfig::from_vars(vars(pairs)).unwrap_err();
            assert!(error.contains(named), "{pairs:?}: {error}");
        }
    }

    #[test]
    fn admins_are_named_by_identity() {
        let config = SignInConfig::from_vars(vars(&[(
            "ADMIN_IDENTITIES",
            " github:12345, oidc:0a1b-c ,access:Alice@Example.com,",
        )]))
        .unwrap();
        assert!(config.names_admin(Provider::Github, "12345"));
        assert!(config.names_admin(Provider::Oidc, "0a1b-c"));
        assert!(config.names_admin(Provider::Access, "alice@example.com"));
        // Another provider's subject of the same text is someone else.
        assert!(!config.names_admin(Provider::Oidc, "12345"));
        assert!(!config.names_admin(Provider::Github, "123456"));
        assert!(!config.names_admin(Provider::Oidc, "0A1B-C"));
    }

    #[test]
    fn the_pkce_challenge_is_rfc_7636s() {
        // RFC 7636, appendix B.
        assert_eq!(
            pkce_challenge("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
    }

    #[test]
    fn attempt_secrets_are_random_and_distinct() {
        let (one, two) = (AttemptSecrets::new(), AttemptSecrets::new());
        assert_ne!(one, two);
        assert_eq!(one.state.len(), 43);
        assert_ne!(one.state, one.nonce);
        assert_ne!(one.nonce, one.verifier);
        // RFC 7636: 43 to 128 unreserved characters.
        assert!(one
            .verifier
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b)));
    }

    fn oidc() -> OidcSettings {
        OidcSettings {
            issuer: "https://idp.example".into(),
            client_id: "condaflare app".into(),
            client_secret: "s3:cret&".into(),
            scopes: "openid profile email".into(),
            label: "IdP".into(),
        }
    }

    #[test]
    fn the_authorization_request_carries_state_nonce_and_challenge() {
        let secrets = AttemptSecrets {
            state: "st".into(),
            nonce: "no".into(),
            verifier: "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk".into(),
        };
        let redirect = callback_url("https://conda.example.com", Provider::Oidc);
        assert_eq!(
            redirect,
            "https://conda.example.com/api/v1/signin/oidc/callback"
        );
        assert_eq!(
            oidc_authorization_url("https://idp.example/auth", &oidc(), &redirect, &secrets),
            "https://idp.example/auth?response_type=code&client_id=condaflare%20app\
             &redirect_uri=https%3A%2F%2Fconda.example.com%2Fapi%2Fv1%2Fsignin%2Foidc%2Fcallback\
             &scope=openid%20profile%20email&state=st&nonce=no\
             &code_challenge=E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM&code_challenge_method=S256"
        );
        // An endpoint with a query of its own keeps it.
        assert!(oidc_authorization_url(
            "https://idp.example/auth?tenant=x",
            &oidc(),
            "r",
            &secrets
        )
        .starts_with("https://idp.example/auth?tenant=x&response_type=code&"));
        // The verifier itself goes only to the token endpoint.
        let token = oidc_token_request("c/d", &redirect, &secrets.verifier);
        assert!(token.starts_with("grant_type=authorization_code&code=c%2Fd&redirect_uri="));
        assert!(token.ends_with("&code_verifier=dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"));
        assert_eq!(
            basic_credentials("condaflare app", "s3:cret&"),
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode("condaflare%20app:s3%3Acret%26")
            )
        );
    }

    #[test]
    fn githubs_requests() {
        let settings = GithubSettings {
            client_id: "Iv1.abc".into(),
            client_secret: "sec".into(),
            web_url: "https://github.com".into(),
            api_url: "https://api.github.com".into(),
        };
        let secrets = AttemptSecrets {
            state: "st".into(),
            nonce: "n".into(),
            verifier: "v".into(),
        };
        assert_eq!(
            github_authorization_url(&settings, "http://127.0.0.1:8787/cb", &secrets),
            "https://github.com/login/oauth/authorize?client_id=Iv1.abc\
             &redirect_uri=http%3A%2F%2F127.0.0.1%3A8787%2Fcb&state=st&allow_signup=false"
        );
        let (url, body) = github_token_request(&settings, "code1", "http://x/cb");
        assert_eq!(url, "https://github.com/login/oauth/access_token");
        assert_eq!(
            body,
            "client_id=Iv1.abc&client_secret=sec&code=code1&redirect_uri=http%3A%2F%2Fx%2Fcb"
        );
    }

    #[test]
    fn the_flow_follows_only_web_endpoints() {
        assert_eq!(
            flow_endpoints(Some("https://idp.example/auth"), Some("http://idp/token")),
            Ok(("https://idp.example/auth".into(), "http://idp/token".into()))
        );
        for (authorization, token) in [
            (None, Some("https://idp/token")),
            (Some("https://idp/auth"), None),
            (Some("javascript:alert(1)"), Some("https://idp/token")),
            (Some("https://idp/auth"), Some("file:///etc/passwd")),
        ] {
            assert_eq!(
                flow_endpoints(authorization, token),
                Err(Refusal::Unavailable),
                "{authorization:?} {token:?}"
            );
        }
    }

    #[test]
    fn token_answers() {
        assert_eq!(
            id_token_of(200, r#"{"id_token":"a.b.c","access_token":"x"}"#),
            Ok("a.b.c".into())
        );
        // A used or foreign code: the OAuth error answer.
        assert_eq!(
            id_token_of(400, r#"{"error":"invalid_grant"}"#),
            Err(Refusal::Exchange)
        );
        assert_eq!(id_token_of(401, "Unauthorized"), Err(Refusal::Exchange));
        assert_eq!(
            id_token_of(200, r#"{"access_token":"x"}"#),
            Err(Refusal::Unavailable)
        );
        assert_eq!(id_token_of(502, "Bad gateway"), Err(Refusal::Unavailable));
        assert_eq!(
            access_token_of(200, r#"{"access_token":"gho_x","token_type":"bearer"}"#),
            Ok("gho_x".into())
        );
        // GitHub refuses with a 200 and an error.
        assert_eq!(
            access_token_of(200, r#"{"error":"bad_verification_code"}"#),
            Err(Refusal::Exchange)
        );
        assert_eq!(
            access_token_of(200, r#"{"access_token":""}"#),
            Err(Refusal::Unavailable)
        );
    }

    #[test]
    fn a_callback_counts_only_with_this_browsers_state() {
        let state = "S".repeat(43);
        let read = |query: &[(&str, &str)], cookie: Option<&str>| {
            Callback::read(query.iter().copied(), cookie)
        };
        assert_eq!(
            read(&[("code", "c1"), ("state", &state)], Some(&state)),
            Ok(Callback {
                code: "c1".into(),
                state: state.clone()
            })
        );
        let other = "T".repeat(43);
        for (query, cookie, refusal) in [
            // Another browser's attempt, or none.
            (
                vec![("code", "c1"), ("state", state.as_str())],
                Some(other.as_str()),
                Refusal::State,
            ),
            (
                vec![("code", "c1"), ("state", state.as_str())],
                None,
                Refusal::State,
            ),
            (vec![("code", "c1")], Some(state.as_str()), Refusal::State),
            (
                vec![("code", "c1"), ("state", "")],
                Some(state.as_str()),
                Refusal::State,
            ),
            (
                vec![("state", state.as_str())],
                Some(state.as_str()),
                Refusal::State,
            ),
            // The provider's refusal of this browser's attempt.
            (
                vec![("error", "access_denied"), ("state", state.as_str())],
                Some(state.as_str()),
                Refusal::Denied,
            ),
            // A refusal without the state, or with another browser's: still only a refusal.
            (vec![("error", "access_denied")], None, Refusal::Denied),
            (
                vec![("error", "access_denied"), ("state", state.as_str())],
                None,
                Refusal::Denied,
            ),
        ] {
            assert_eq!(read(&query, cookie), Err(refusal), "{query:?} {cookie:?}");
        }
    }

    fn attempt(provider: &str, expires_at: f64) -> SignInAttemptRow {
        SignInAttemptRow {
            provider: provider.into(),
            nonce: "n".into(),
            verifier: "v".into(),
            next: "/".into(),
            replaces: None,
            expires_at,
        }
    }

    #[test]
    fn an_attempt_counts_once_for_its_provider_while_it_waits() {
        assert!(check_attempt(Some(attempt("oidc", 1000.0)), Provider::Oidc, 999).is_ok());
        // Taken already (a replayed callback), or never made.
        assert_eq!(check_attempt(None, Provider::Oidc, 0), Err(Refusal::State));
        assert_eq!(
            check_attempt(Some(attempt("github", 1000.0)), Provider::Oidc, 0),
            Err(Refusal::State)
        );
        assert_eq!(
            check_attempt(Some(attempt("oidc", 1000.0)), Provider::Oidc, 1000),
            Err(Refusal::Expired)
        );
    }

    #[test]
    fn the_nonce_must_be_the_attempts() {
        assert_eq!(check_nonce(Some(&json!("n1")), "n1"), Ok(()));
        assert_eq!(check_nonce(Some(&json!("n2")), "n1"), Err(Refusal::Token));
        assert_eq!(check_nonce(Some(&json!(1)), "1"), Err(Refusal::Token));
        assert_eq!(check_nonce(None, "n1"), Err(Refusal::Token));
    }

    #[test]
    fn several_audiences_need_this_client_as_authorized_party() {
        let one = vec!["app".to_owned()];
        let two = vec!["app".to_owned(), "other".to_owned()];
        assert_eq!(check_authorized_party(&one, None, "app"), Ok(()));
        assert_eq!(check_authorized_party(&two, Some("app"), "app"), Ok(()));
        assert_eq!(
            check_authorized_party(&two, None, "app"),
            Err(Refusal::Token)
        );
        assert_eq!(
            check_authorized_party(&two, Some("other"), "app"),
            Err(Refusal::Token)
        );
        assert_eq!(name_suffix().len(), 8);
        assert_ne!(name_suffix(), name_suffix());
    }

    #[test]
    fn profiles_of_each_provider() {
        let extra = json!({"preferred_username": "Ann.Lee", "email": "ann@example.com"});
        let extra = extra.as_object().unwrap();
        let oidc = Profile::of_id_token("https://idp.example", Some("sub-1"), extra).unwrap();
        assert_eq!(
            (oidc.subject.as_str(), oidc.label.as_str()),
            ("sub-1", "ann@example.com")
        );
        assert_eq!(oidc.name_hints, ["Ann.Lee", "ann@example.com"]);
        assert_eq!(Profile::of_id_token("i", None, extra), Err(Refusal::Token));
        assert_eq!(
            Profile::of_id_token("i", Some(""), extra),
            Err(Refusal::Token)
        );

        let github =
            Profile::of_github_user(r#"{"id": 583231, "login": "octocat", "email": null}"#)
                .unwrap();
        assert_eq!(
            (
                github.provider,
                github.subject.as_str(),
                github.label.as_str()
            ),
            (Provider::Github, "583231", "octocat")
        );
        assert_eq!(Profile::of_github_user("{}"), Err(Refusal::Unavailable));

        let claims = json!({"email": "Alice@Example.COM", "type": "app"});
        let access = Profile::of_access_claims(claims.as_object().unwrap()).unwrap();
        assert_eq!(access.subject, "alice@example.com");
        let claims = json!({"common_name": "service-token"});
        assert_eq!(
            Profile::of_access_claims(claims.as_object().unwrap()),
            Err(Refusal::Token)
        );
    }

    #[test]
    fn user_names_are_made_from_the_best_hint_and_made_unique() {
        let hints = |list: &[&str]| list.iter().map(|h| h.to_string()).collect::<Vec<_>>();
        let cases: &[(&[&str], &str)] = &[
            (&["octocat"], "octocat"),
            (&["Ann.Lee", "ann@example.com"], "ann.lee"),
            (&["alice@example.com"], "alice"),
            (&["Jürgen Müller"], "j-rgen-m-ller"),
            (&["__x__"], "x__"),
            (&["a..b"], "a.b"),
            (&["-.-", "bob@x"], "bob"),
            (&["@example.com"], "user"),
            (&[], "user"),
            // Reserved names (the web app's `-` prefix, the API's) are not taken.
            (&["api", "carol@x"], "carol"),
        ];
        for (given, expected) in cases {
            let names = user_name_candidates(&hints(given), "f00d");
            assert_eq!(names[0], *expected, "{given:?}");
            assert_eq!(names[1], format!("{expected}-2"));
            assert_eq!(names.last().unwrap(), &format!("{expected}-f00d"));
            assert_eq!(names.len(), 10);
            for name in &names {
                assert!(check_channel_name(name).is_ok(), "{name}");
            }
        }
        let long = "x".repeat(100);
        assert_eq!(user_name_candidates(&[long], "f00d")[0].len(), 40);
    }

    #[test]
    fn next_is_a_path_of_this_site() {
        for (next, expected) in [
            (Some("/team/packages/numpy?x=1"), "/team/packages/numpy?x=1"),
            (Some("/"), "/"),
            (None, "/"),
            (Some("//evil.example/x"), "/"),
            (Some("/\\evil.example"), "/"),
            (Some("https://evil.example/"), "/"),
            (Some("/a\r\nSet-Cookie: x=1"), "/"),
            (Some("team"), "/"),
        ] {
            assert_eq!(safe_next(next), expected, "{next:?}");
        }
    }

    #[test]
    fn the_attempt_cookie_is_http_only_lax_and_limited_to_sign_in() {
        assert_eq!(
            attempt_cookie("abc", false),
            "condaflare_signin=abc; HttpOnly; SameSite=Lax; Path=/api/v1/signin; Max-Age=600"
        );
        assert_eq!(
            attempt_cookie("abc", true),
            "__Secure-condaflare_signin=abc; HttpOnly; SameSite=Lax; Path=/api/v1/signin; Max-Age=600; Secure"
        );
        assert!(cleared_attempt_cookie(false).contains("Max-Age=0"));
        let state = random_secret();
        let header = format!("a=b; {ATTEMPT_COOKIE}={state}");
        assert_eq!(attempt_from_cookies(&header, false), Some(state.as_str()));
        assert_eq!(attempt_from_cookies(&header, true), None);
        let secure = format!("{SECURE_ATTEMPT_COOKIE}={state}");
        assert_eq!(attempt_from_cookies(&secure, true), Some(state.as_str()));
        assert_eq!(
            attempt_from_cookies(&format!("{ATTEMPT_COOKIE}=short"), false),
            None
        );
    }

    #[test]
    fn refusals_send_the_browser_to_the_sign_in_page() {
        assert_eq!(Refusal::State.page(), "/-/signin?error=state");
        assert_eq!(Refusal::Token.page(), "/-/signin?error=token");
    }
}
