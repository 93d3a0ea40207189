//! Server-side sessions: a signed-in user's Kubernetes client (the only
//! place their token lives), their name, a CSRF token and an expiry, found
//! by a random 256-bit id carried in the `aiops_console` cookie. Also the
//! checks every POST passes: session, CSRF token, same origin.
use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, Uri, header};
use cookie::{Cookie, SameSite};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// The session cookie's name (the page contract names it).
pub const COOKIE_NAME: &str = "aiops_console";

/// How long a session lasts at most, whatever the token's own lifetime.
pub const SESSION_LIFETIME: Duration = Duration::from_secs(8 * 3600);

/// Sessions kept at most: signing in needs a token the API server accepts,
/// so this bounds memory against a flood of valid sign-ins, not guesses.
const MAX_SESSIONS: usize = 10_000;

/// Why a session could not be made.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error("no random bytes for a session id: {0}")]
    Random(String),
    #[error("too many sessions are open; try again later")]
    Full,
}

/// One signed-in user.
pub struct Session {
    /// The user's name as the API server reported it (SelfSubjectReview).
    pub user: String,
    /// A client that authenticates with the user's token and nothing else.
    pub client: kube::Client,
    /// The form token bound to this session (hex, 256 bits).
    pub csrf: String,
    expires: Instant,
}

impl std::fmt::Debug for Session {
    // The client holds the token; nothing of it may reach a log.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("user", &self.user)
            .finish_non_exhaustive()
    }
}

impl Session {
    /// Whether the session is past its lifetime.
    pub fn expired(&self) -> bool {
        Instant::now() >= self.expires
    }

    /// Time left before the session expires.
    pub fn remaining(&self) -> Duration {
        self.expires.saturating_duration_since(Instant::now())
    }

    /// Whether `presented` is this session's CSRF token, compared in
    /// constant time so the comparison leaks nothing about the token.
    pub fn csrf_matches(&self, presented: &str) -> bool {
        !presented.is_empty() && bool::from(self.csrf.as_bytes().ct_eq(presented.as_bytes()))
    }
}

/// The open sessions, keyed by the SHA-256 of their id: the map never holds
/// a usable cookie value, and a lookup compares digests, not secrets.
#[derive(Default)]
pub struct Sessions {
    open: Mutex<HashMap<[u8; 32], Arc<Session>>>,
}

impl Sessions {
    /// Opens a session for `user` acting through `client`; returns the id
    /// for the cookie and the session.
    pub fn open(
        &self,
        user: String,
        client: kube::Client,
        lifetime: Duration,
    ) -> Result<(String, Arc<Session>), SessionError> {
        let id = random_hex()?;
        let session = Arc::new(Session {
            user,
            client,
            csrf: random_hex()?,
            expires: Instant::now() + lifetime,
        });
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        if open.len() >= MAX_SESSIONS {
            open.retain(|_, s| !s.expired());
            if open.len() >= MAX_SESSIONS {
                return Err(SessionError::Full);
            }
        }
        open.insert(digest(&id), Arc::clone(&session));
        Ok((id, session))
    }

    /// The live session with this id; an expired one is removed.
    pub fn find(&self, id: &str) -> Option<Arc<Session>> {
        let key = digest(id);
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        let session = open.get(&key)?;
        if session.expired() {
            open.remove(&key);
            return None;
        }
        Some(Arc::clone(session))
    }

    /// Ends the session with this id (sign-out, or the token stopped working).
    pub fn end(&self, id: &str) {
        self.open
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&digest(id));
    }

    /// How many sessions are open (expired ones included until looked up).
    pub fn len(&self) -> usize {
        self.open
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// Whether no session is open.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn digest(id: &str) -> [u8; 32] {
    Sha256::digest(id.as_bytes()).into()
}

/// 256 random bits as 64 hex digits.
fn random_hex() -> Result<String, SessionError> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| SessionError::Random(e.to_string()))?;
    Ok(hex::encode(bytes))
}

/// The `Set-Cookie` value that carries a new session: never readable by
/// scripts, sent only over HTTPS and only with same-site requests.
pub fn session_cookie(id: &str, lifetime: Duration) -> String {
    let max_age = cookie::time::Duration::seconds(i64::try_from(lifetime.as_secs()).unwrap_or(0));
    Cookie::build((COOKIE_NAME, id.to_string()))
        .secure(true)
        .http_only(true)
        .same_site(SameSite::Strict)
        .path("/")
        .max_age(max_age)
        .build()
        .to_string()
}

/// The `Set-Cookie` value that removes the session cookie.
pub fn cleared_cookie() -> String {
    Cookie::build((COOKIE_NAME, ""))
        .secure(true)
        .http_only(true)
        .same_site(SameSite::Strict)
        .path("/")
        .max_age(cookie::time::Duration::ZERO)
        .build()
        .to_string()
}

/// The session id the request's cookies carry, if any.
pub fn session_id(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(Cookie::split_parse)
        .filter_map(Result::ok)
        .find(|c| c.name() == COOKIE_NAME && !c.value().is_empty())
        .map(|c| c.value().to_string())
}

/// Whether a state-changing request comes from the console's own pages:
/// its `Origin` must be this server's `https://` origin as the browser
/// addressed it. A page on another site can make the browser POST here,
/// but not with our origin on it.
///
/// Under our own `Referrer-Policy: no-referrer` a browser sends a form
/// POST with `Origin: null` and no `Referer` (the Fetch standard's rule),
/// so then the browser's `Sec-Fetch-Site: same-origin` must vouch for it:
/// no page can set that header. Without `Origin` at all (an older client),
/// a `Referer` from our origin does.
pub fn same_origin(headers: &HeaderMap, uri: &Uri) -> bool {
    let Some(own) = own_authority(headers, uri) else {
        return false;
    };
    let text = |name| {
        headers
            .get(name)
            .and_then(|v: &axum::http::HeaderValue| v.to_str().ok())
    };
    match text(header::ORIGIN.as_str()) {
        Some("null") => text(SEC_FETCH_SITE) == Some("same-origin"),
        Some(origin) => origin_is(origin, &own),
        None => {
            text(SEC_FETCH_SITE) == Some("same-origin")
                || text(header::REFERER.as_str())
                    .and_then(|r| r.parse::<Uri>().ok())
                    .and_then(|r| Some(format!("{}://{}", r.scheme_str()?, r.authority()?)))
                    .is_some_and(|origin| origin_is(&origin, &own))
        }
    }
}

/// The Fetch Metadata header browsers set on every request.
const SEC_FETCH_SITE: &str = "sec-fetch-site";

/// Whether the serialised origin `claimed` is `https://` + `own`.
fn origin_is(claimed: &str, own: &str) -> bool {
    let Ok(claimed) = claimed.parse::<Uri>() else {
        return false;
    };
    claimed.scheme_str() == Some("https")
        && claimed.path_and_query().is_none_or(|p| p.as_str() == "/")
        && claimed
            .authority()
            .is_some_and(|a| normalise(a.as_str()) == own)
}

/// The authority the client addressed: HTTP/2 carries it in the URI, HTTP/1.1 in `Host`.
fn own_authority(headers: &HeaderMap, uri: &Uri) -> Option<String> {
    let authority = match uri.authority() {
        Some(authority) => authority.as_str().to_string(),
        None => headers.get(header::HOST)?.to_str().ok()?.to_string(),
    };
    Some(normalise(&authority))
}

/// Lower case, without the default HTTPS port (browsers leave it out of `Origin`).
fn normalise(authority: &str) -> String {
    let lower = authority.to_ascii_lowercase();
    lower
        .strip_suffix(":443")
        .map(str::to_string)
        .unwrap_or(lower)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(
                axum::http::HeaderName::from_bytes(name.as_bytes())
                    .unwrap_or_else(|e| panic!("{e}")),
                HeaderValue::from_str(value).unwrap_or_else(|e| panic!("{e}")),
            );
        }
        map
    }

    fn path() -> Uri {
        Uri::from_static("/remediations/shop/web/approve")
    }

    #[test]
    fn only_the_consoles_own_https_origin_may_post() {
        let host = ("host", "127.0.0.1:9445");
        let good = headers(&[host, ("origin", "https://127.0.0.1:9445")]);
        assert!(same_origin(&good, &path()));
        let by_referer = headers(&[host, ("referer", "https://127.0.0.1:9445/remediations/a/b")]);
        assert!(same_origin(&by_referer, &path()));
        // What Chromium sends for our own form under `Referrer-Policy: no-referrer`.
        let no_referrer = headers(&[host, ("origin", "null"), ("sec-fetch-site", "same-origin")]);
        assert!(same_origin(&no_referrer, &path()));
        for bad in [
            vec![host, ("origin", "https://evil.example")],
            vec![host, ("origin", "http://127.0.0.1:9445")],
            vec![host, ("origin", "https://127.0.0.1:9446")],
            vec![host, ("origin", "null")],
            vec![host, ("referer", "https://evil.example/127.0.0.1:9445")],
            // A foreign Origin wins over a matching Referer.
            vec![
                host,
                ("origin", "https://evil.example"),
                ("referer", "https://127.0.0.1:9445/"),
            ],
            // Neither header: nothing shows the request came from our page.
            vec![host],
            vec![("origin", "https://127.0.0.1:9445")],
            // `null` (a sandboxed frame, a no-referrer page) vouched for by
            // nothing, or by a browser that saw another site.
            vec![host, ("origin", "null")],
            vec![host, ("origin", "null"), ("sec-fetch-site", "cross-site")],
            vec![host, ("origin", "null"), ("sec-fetch-site", "same-site")],
            vec![host, ("sec-fetch-site", "same-site")],
            // A foreign Origin is not excused by any other header.
            vec![
                host,
                ("origin", "https://evil.example"),
                ("sec-fetch-site", "same-origin"),
            ],
        ] {
            assert!(!same_origin(&headers(&bad), &path()), "{bad:?}");
        }
        // HTTP/2: the authority is in the URI; the default port is implied.
        let h2 = Uri::from_static("https://console.example/session");
        assert!(same_origin(
            &headers(&[("origin", "https://Console.example:443")]),
            &h2
        ));
    }

    #[test]
    fn the_session_cookie_is_secure_http_only_strict_and_site_wide() {
        let cookie = session_cookie("abc", SESSION_LIFETIME);
        for part in [
            "aiops_console=abc",
            "Secure",
            "HttpOnly",
            "SameSite=Strict",
            "Path=/",
            "Max-Age=28800",
        ] {
            assert!(cookie.contains(part), "{part} missing from {cookie}");
        }
        assert!(
            cleared_cookie().contains("Max-Age=0"),
            "{}",
            cleared_cookie()
        );
        let sent = headers(&[("cookie", "other=1; aiops_console=abc; x=y")]);
        assert_eq!(session_id(&sent).as_deref(), Some("abc"));
        assert_eq!(session_id(&headers(&[("cookie", "other=1")])), None);
    }

    #[tokio::test]
    async fn sessions_are_random_bound_to_their_csrf_token_and_expire() {
        let sessions = Sessions::default();
        let client = test_client();
        let (id, session) = sessions
            .open("alice".into(), client.clone(), SESSION_LIFETIME)
            .unwrap_or_else(|e| panic!("{e}"));
        let (other_id, other) = sessions
            .open("bob".into(), client.clone(), SESSION_LIFETIME)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(id.len(), 64, "256 bits as hex");
        assert_ne!(id, other_id);
        assert_ne!(session.csrf, other.csrf);
        assert!(session.csrf_matches(&session.csrf.clone()));
        assert!(!session.csrf_matches(&other.csrf));
        assert!(!session.csrf_matches(""));
        assert!(!session.csrf_matches(&session.csrf[..10]));
        assert_eq!(
            sessions.find(&id).map(|s| s.user.clone()).as_deref(),
            Some("alice")
        );
        assert!(sessions.find("not-a-session").is_none());
        sessions.end(&id);
        assert!(sessions.find(&id).is_none(), "signed out");
        let (short_id, _) = sessions
            .open("carol".into(), client, Duration::ZERO)
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(sessions.find(&short_id).is_none(), "expired");
        assert_eq!(sessions.len(), 1, "only bob's is left");
        assert!(!format!("{other:?}").contains(&other.csrf));
    }

    /// A client that is never called: sessions only store it.
    fn test_client() -> kube::Client {
        let config = kube::Config::new(Uri::from_static("https://127.0.0.1:1"));
        kube::Client::try_from(config).unwrap_or_else(|e| panic!("{e}"))
    }
}
