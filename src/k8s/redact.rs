//! Redaction: masks values that look like credentials in any text that goes
//! into evidence (logs, command and args, event messages, probe commands).
//!
//! Evidence is stored in the Remediation's status, shown to reviewers and
//! sent to a model, so a leaked token there is a leak to all of them.
//! Redaction works on shapes, not on knowledge of the secrets: bearer
//! tokens, JWTs, cloud and SaaS key formats, private key blocks, `password=…`-style pairs, credentials in URLs and long
//! high-entropy strings. It errs towards masking: a masked harmless value
//! costs a little context, a leaked secret cannot be taken back.
use std::borrow::Cow;
use std::sync::LazyLock;

use regex::{Captures, Regex};

/// What every masked value becomes.
pub const MASK: &str = "[REDACTED]";

/// Words that make a key, flag or header name a credential's name.
const SENSITIVE_NAME: &str = r"(?:passw(?:or)?d|passwd|pwd|secret|token|api[_-]?key|apikey|access[_-]?key|private[_-]?key|credentials?|authorization|session[_-]?id|cookie)";

struct Patterns {
    /// `-----BEGIN … PRIVATE KEY-----` up to its END line, or to the end of
    /// the text when the block is cut off (a log tail, a truncated message).
    private_key: Regex,
    /// `scheme://user:password@host`: keeps the user, masks the password.
    url_credentials: Regex,
    /// `Bearer …` / `Basic …` authorization values.
    auth_scheme: Regex,
    /// `eyJ….eyJ….sig`: JSON Web Tokens.
    jwt: Regex,
    /// Access key ids of AWS and token formats of common services.
    known_token: Regex,
    /// `password=…`, `token: …`, `"apiKey": "…"`, `--secret=…`.
    key_value: Regex,
    /// `--password hunter2`: a sensitive flag followed by its value.
    flag_value: Regex,
    /// Candidate long opaque strings, judged by [`looks_random`].
    opaque: Regex,
}

static PATTERNS: LazyLock<Option<Patterns>> = LazyLock::new(|| {
    let key_value = format!(
        r#"(?i)(?P<key>[A-Za-z0-9_.-]*{SENSITIVE_NAME}[A-Za-z0-9_.-]*)(?P<sep>["']?[ \t]*[:=][ \t]*)(?P<value>"[^"\n]*"|'[^'\n]*'|[^\s"',;&]+)"#
    );
    let flag_value = format!(
        r"(?i)(?P<flag>--?[A-Za-z0-9_-]*{SENSITIVE_NAME}[A-Za-z0-9_-]*)[ \t]+(?P<value>[^\s-][^\s]*)"
    );
    Some(Patterns {
        private_key: Regex::new(
            r"(?s)-----BEGIN [A-Z0-9 ]*PRIVATE KEY( BLOCK)?-----.*?(-----END [A-Z0-9 ]*PRIVATE KEY( BLOCK)?-----|\z)",
        )
        .ok()?,
        url_credentials: Regex::new(
            r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.-]*://)(?P<user>[^:/?#@\s]*):(?P<password>[^@/?#\s]+)@",
        )
        .ok()?,
        auth_scheme: Regex::new(r"(?i)\b(?P<scheme>bearer|basic|token)[ \t]+(?P<value>[A-Za-z0-9\-._~+/]{8,}=*)").ok()?,
        jwt: Regex::new(r"\beyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*").ok()?,
        known_token: Regex::new(concat!(
            r"\b(?:",
            r"(?:AKIA|ASIA|AGPA|AIDA|AROA|ANPA|ANVA|AIPA)[A-Z0-9]{16}", // AWS access key ids
            r"|(?:sk|pk|rk)_(?:live|test)_[A-Za-z0-9]{10,}",          // Stripe
            r"|sk-[A-Za-z0-9_-]{16,}",                                  // OpenAI-style and similar
            r"|gh[pousr]_[A-Za-z0-9]{30,}",                             // GitHub
            r"|github_pat_[A-Za-z0-9_]{30,}",
            r"|glpat-[A-Za-z0-9_-]{20,}",                               // GitLab
            r"|xox[abprs]-[A-Za-z0-9-]{10,}",                           // Slack
            r"|AIza[0-9A-Za-z_-]{35}",                                  // Google API keys
            r")"
        ))
        .ok()?,
        key_value: Regex::new(&key_value).ok()?,
        flag_value: Regex::new(&flag_value).ok()?,
        opaque: Regex::new(r"[A-Za-z0-9+/_-]{32,}={0,2}").ok()?,
    })
});

/// `text` with every credential-looking value replaced by [`MASK`].
///
/// Fails closed: if the patterns could not be built, the whole text is masked.
pub fn redact(text: &str) -> String {
    let Some(patterns) = PATTERNS.as_ref() else {
        return MASK.to_string();
    };
    // Order matters: whole-structure patterns first, so the generic
    // key/value and entropy passes do not cut a key block or URL in half.
    let text = patterns.private_key.replace_all(text, MASK);
    let text = patterns.url_credentials.replace_all(&text, |c: &Captures| {
        format!("{}{}:{MASK}@", &c["scheme"], &c["user"])
    });
    let text = patterns.auth_scheme.replace_all(&text, |c: &Captures| {
        let value = &c["value"];
        // "token validation failed" is prose; credentials carry digits or are long.
        if value.bytes().any(|b| b.is_ascii_digit()) || value.len() >= 20 {
            format!("{} {MASK}", &c["scheme"])
        } else {
            c[0].to_string()
        }
    });
    let text = patterns.jwt.replace_all(&text, MASK);
    let text = patterns.known_token.replace_all(&text, MASK);
    let text = patterns.key_value.replace_all(&text, |c: &Captures| {
        format!("{}{}{MASK}", &c["key"], &c["sep"])
    });
    let text = patterns
        .flag_value
        .replace_all(&text, |c: &Captures| format!("{} {MASK}", &c["flag"]));
    let text = patterns.opaque.replace_all(&text, |c: &Captures| {
        let token = &c[0];
        let start = c.get(0).map(|m| m.start()).unwrap_or(0);
        if is_digest(&text[..start]) || !looks_random(token) {
            token.to_string()
        } else {
            MASK.to_string()
        }
    });
    match text {
        Cow::Borrowed(unchanged) => unchanged.to_string(),
        Cow::Owned(changed) => changed,
    }
}

/// Redacts each element of a command or args list. A sensitive flag given
/// as its own element (`["--password", "hunter2"]`) masks the next element.
pub fn redact_args(args: &[String]) -> Vec<String> {
    let mut out = Vec::with_capacity(args.len());
    let mut mask_next = false;
    for arg in args {
        if mask_next {
            out.push(MASK.to_string());
            mask_next = false;
            continue;
        }
        mask_next = is_sensitive_flag(arg);
        out.push(redact(arg));
    }
    out
}

/// Short words that make an env var's name a credential's when they are a
/// whole word of it (`TLS_KEY`, `DB_PASS`, `SENTRY_DSN`), but are too
/// generic to match inside other words (`MONKEY`, `PASSTHROUGH`, `AUTHOR`).
const SENSITIVE_ENV_WORDS: &[&str] = &[
    "KEY",
    "KEYS",
    "PASS",
    "PASSPHRASE",
    "PW",
    "PIN",
    "AUTH",
    "CRED",
    "CREDS",
    "DSN",
    "SALT",
    "SEED",
    "HMAC",
    "SIGNING",
    "PRIVATE",
];

/// Whether an env var with a literal `value` must be treated as a secret:
/// its name reads like a credential's (`POSTGRES_PASSWORD`, `API_TOKEN`,
/// `AWS_SECRET_ACCESS_KEY`, `SESSION_KEY`, `SENTRY_DSN`: the words
/// [`redact`] masks after a key, or a whole word of [`SENSITIVE_ENV_WORDS`]),
/// or the value has a credential's shape wherever it appears (a URL with a
/// password, a JWT, a known token format, a long random string: anything
/// [`redact`] would mask). An empty value hides nothing.
///
/// Such a value is never copied into a Remediation: a fix that needs it
/// back restores it by reference to the revision that holds it.
pub fn is_secret_env(name: &str, value: &str) -> bool {
    if value.is_empty() {
        return false;
    }
    static NAME: LazyLock<Option<Regex>> =
        LazyLock::new(|| Regex::new(&format!("(?i){SENSITIVE_NAME}")).ok());
    let sensitive_name = match NAME.as_ref() {
        Some(pattern) => pattern.is_match(name),
        // Fail closed, as `redact` does.
        None => true,
    };
    sensitive_name
        || name_words(name).any(|word| SENSITIVE_ENV_WORDS.contains(&word.as_str()))
        || redact(value) != value
}

/// The words of a name, upper-cased: split at anything but letters and
/// digits, and where camelCase starts a new word (`sessionKey`).
fn name_words(name: &str) -> impl Iterator<Item = String> + '_ {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut previous_lower = false;
    for c in name.chars() {
        let boundary = !c.is_ascii_alphanumeric() || (c.is_ascii_uppercase() && previous_lower);
        if boundary && !word.is_empty() {
            words.push(std::mem::take(&mut word));
        }
        if c.is_ascii_alphanumeric() {
            word.push(c.to_ascii_uppercase());
        }
        previous_lower = c.is_ascii_lowercase();
    }
    if !word.is_empty() {
        words.push(word);
    }
    words.into_iter()
}

/// `--password`, `-token`, `--api-key` (without `=value`).
fn is_sensitive_flag(arg: &str) -> bool {
    static FLAG: LazyLock<Option<Regex>> = LazyLock::new(|| {
        Regex::new(&format!(
            r"(?i)^--?[A-Za-z0-9_-]*{SENSITIVE_NAME}[A-Za-z0-9_-]*$"
        ))
        .ok()
    });
    match FLAG.as_ref() {
        Some(flag) => flag.is_match(arg),
        // Fail closed, as `redact` does.
        None => arg.starts_with('-'),
    }
}

/// An image or content digest (`sha256:<hex>`) is an identifier, not a secret.
fn is_digest(before: &str) -> bool {
    ["sha256:", "sha384:", "sha512:", "sha1:"]
        .iter()
        .any(|prefix| before.ends_with(prefix))
}

/// Whether a long token looks like key material rather than a word, path or id.
///
/// Hex needs 32+ characters with both digits and letters; other strings need
/// upper case, lower case and digits together and a high character entropy,
/// which words, paths and kebab-case names do not reach.
fn looks_random(token: &str) -> bool {
    let body = token.trim_end_matches('=');
    if body.len() < 32 {
        return false;
    }
    let has_digit = body.bytes().any(|b| b.is_ascii_digit());
    let has_lower = body.bytes().any(|b| b.is_ascii_lowercase());
    let has_upper = body.bytes().any(|b| b.is_ascii_uppercase());
    let is_hex = body.bytes().all(|b| b.is_ascii_hexdigit());
    if is_hex {
        return has_digit && (has_lower || has_upper);
    }
    has_digit && has_lower && has_upper && shannon_entropy(body) >= 4.0
}

/// Bits per character of the string's own character distribution.
fn shannon_entropy(text: &str) -> f64 {
    let mut counts = [0u32; 256];
    for byte in text.bytes() {
        counts[usize::from(byte)] += 1;
    }
    let len = text.len() as f64;
    counts
        .iter()
        .filter(|&&n| n > 0)
        .map(|&n| {
            let p = f64::from(n) / len;
            -p * p.log2()
        })
        .sum()
}

/// Cuts `text` to at most `max` bytes on a character boundary, marking the cut.
pub fn truncate(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let mut end = max.saturating_sub('…'.len_utf8());
    while end > 0 && !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_masked(input: &str, secret: &str) {
        let out = redact(input);
        assert!(!out.contains(secret), "{secret:?} survived in {out:?}");
        assert!(out.contains(MASK), "no mask in {out:?}");
    }

    #[test]
    fn patterns_compile() {
        assert!(PATTERNS.is_some());
    }

    #[test]
    fn bearer_and_basic_authorization_values() {
        assert_masked(
            "GET /api Authorization: Bearer abcDEF123456ghiJKL789",
            "abcDEF123456ghiJKL789",
        );
        assert_masked(
            "curl -H 'Authorization: Basic dXNlcjpodW50ZXIy'",
            "dXNlcjpodW50ZXIy",
        );
    }

    #[test]
    fn json_web_tokens() {
        let jwt = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U";
        assert_masked(&format!("login ok, session={jwt} user=bob"), jwt);
        assert_masked(&format!("token {jwt}"), "dozjgNryP4J3jVmNHl0w5N");
        assert_masked(jwt, jwt);
    }

    #[test]
    fn cloud_and_service_keys() {
        assert_masked(
            "using key AKIAIOSFODNN7EXAMPLE for s3",
            "AKIAIOSFODNN7EXAMPLE",
        );
        assert_masked(
            "stripe: sk_live_4eC39HqLyjWDarjtT1zdp7dc",
            "sk_live_4eC39HqLyjWDarjtT1zdp7dc",
        );
        assert_masked("API_TOKEN=sk-live-PLANTED123456789", "PLANTED123456789");
        assert_masked(
            "ghp_16C7e42F292c6912E7710c838347Ae178B4a pushed",
            "ghp_16C7e42F292c6912E7710c838347Ae178B4a",
        );
        assert_masked(
            "slack xoxb-123456789012-abcdefghijkl",
            "xoxb-123456789012-abcdefghijkl",
        );
        assert_masked(
            "aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
            "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
        );
    }

    #[test]
    fn private_key_blocks_whole_and_cut_off() {
        let block = "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEA7\nabcdef\n-----END RSA PRIVATE KEY-----";
        let out = redact(&format!("loaded:\n{block}\ndone"));
        assert_eq!(out, format!("loaded:\n{MASK}\ndone"));
        assert_masked(
            "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQ",
            "MIIEvQIBADANBgkqhkiG9w0BAQ",
        );
        assert_masked(
            "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA\n-----END OPENSSH PRIVATE KEY-----",
            "b3BlbnNzaC1rZXktdjEAAAAA",
        );
    }

    #[test]
    fn key_value_pairs_in_many_shapes() {
        for (input, secret) in [
            ("password=hunter2", "hunter2"),
            ("DB_PASSWORD: s3cr3t!", "s3cr3t!"),
            ("token: abc.def", "abc.def"),
            ("client_secret=xyz789&grant_type=x", "xyz789"),
            ("apikey=k-1234", "k-1234"),
            (r#"{"apiKey": "AbC-123 456"}"#, "AbC-123 456"),
            ("--secret=topsecret", "topsecret"),
            ("PGPASSWORD='my pass'", "my pass"),
            ("Password=Pa55;Server=db", "Pa55"),
            ("x-api-key: 0123abcd", "0123abcd"),
        ] {
            assert_masked(input, secret);
        }
        // The key and the rest of the line stay readable.
        assert_eq!(
            redact("connecting with password=hunter2 to db:5432"),
            format!("connecting with password={MASK} to db:5432")
        );
    }

    #[test]
    fn sensitive_flags_with_separate_values() {
        assert_masked("exec app --db-password hunter2 --port 80", "hunter2");
        let args: Vec<String> = ["--token", "abc123", "--port", "8080", "--password=pw"]
            .map(String::from)
            .to_vec();
        assert_eq!(
            redact_args(&args),
            vec![
                "--token",
                MASK,
                "--port",
                "8080",
                &format!("--password={MASK}")
            ]
        );
    }

    #[test]
    fn credentials_in_urls_and_connection_strings() {
        assert_eq!(
            redact("DATABASE_URL=postgres://app:Sup3rS3cret@db.internal:5432/shop"),
            format!("DATABASE_URL=postgres://app:{MASK}@db.internal:5432/shop")
        );
        assert_masked(
            "fetching https://deploy:ghs_pw123@git.example.com/repo.git",
            "ghs_pw123",
        );
        assert_masked("mongodb+srv://root:rootpw@cluster0.example.net", "rootpw");
        assert_masked("redis://:onlypass@cache:6379/0", "onlypass");
    }

    #[test]
    fn long_high_entropy_strings() {
        assert_masked(
            "key loaded: Zm9vYmFyYmF6cXV4MTIzNDU2Nzg5MEFCQ0RFRkdISUpL",
            "Zm9vYmFyYmF6cXV4MTIzNDU2Nzg5MEFCQ0RFRkdISUpL",
        );
        assert_masked(
            "hmac 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08 ok",
            "9f86d081884c7d659a2feaa0c55ad015",
        );
    }

    #[test]
    fn normal_log_lines_survive() {
        for line in [
            "Error: Database is uninitialized and superuser password is not specified.",
            "You must specify POSTGRES_PASSWORD to a non-empty value for the superuser.",
            "2026-01-01 12:00:00.123 UTC [1] LOG:  database system is ready to accept connections",
            "nginx 1.25.5: start worker processes",
            "Redis version=7.2.5, bits=64, started",
            "Failed to pull image \"nginx:does-not-exist\": rpc error: code = NotFound desc = not found",
            "Successfully pulled image \"nginx@sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08\"",
            "Back-off restarting failed container app in pod web-7d9f8c6b5-abcde_shop(0d6f3c8e-1c7e-4a7e-9d51-3f7a2b1c9e10)",
            "GET /api/v1/namespaces/shop/pods?labelSelector=app%3Dweb 200 OK in 12ms",
            "loading /usr/local/lib/python3.12/site-packages/app/handlers/authentication.py",
            "password authentication failed for user \"postgres\"",
            "token bucket refilled: 5 tokens",
            "token validation failed for request",
            "Memory cgroup out of memory: Killed process 42 (redis-server)",
        ] {
            assert_eq!(redact(line), line, "a normal line was changed");
        }
    }

    #[test]
    fn secret_like_env_vars_by_name_or_value_shape() {
        for (name, value) in [
            ("POSTGRES_PASSWORD", "x"),
            ("API_TOKEN", "abc"),
            ("AWS_SECRET_ACCESS_KEY", "abc"),
            ("client_secret", "abc"),
            ("TLS_KEY", "abc"),
            ("DB_PASS", "abc"),
            ("SENTRY_DSN", "abc"),
            ("GITHUB_CREDENTIALS", "abc"),
            ("sessionKey", "k"),
            ("apiKey", "k"),
            // Harmless names, credential-shaped values.
            ("DATABASE_URL", "postgres://app:Sup3rS3cret@db:5432/shop"),
            ("UPSTREAM", "sk_live_4eC39HqLyjWDarjtT1zdp7dc"),
            ("EXTRA", "Zr8Qw3Lk9Tn2Vb7Xc4Mj6Hp1Rs5Yd0Fg8Ka3Ne"),
        ] {
            assert!(is_secret_env(name, value), "{name}={value}");
        }
        for (name, value) in [
            ("POSTGRES_USER", "app"),
            ("LOG_LEVEL", "debug"),
            ("MONKEY_MODE", "on"),
            ("PASSTHROUGH", "1"),
            ("AUTHOR", "me"),
            ("DATABASE_URL", "postgres://db:5432/shop"),
            // Nothing to hide.
            ("POSTGRES_PASSWORD", ""),
        ] {
            assert!(!is_secret_env(name, value), "{name}={value}");
        }
    }

    #[test]
    fn redaction_is_idempotent() {
        let once =
            redact("password=hunter2 Authorization: Bearer abcdefgh12345678 postgres://u:p@h/db");
        assert_eq!(redact(&once), once);
    }

    #[test]
    fn truncate_respects_char_boundaries() {
        assert_eq!(truncate("short", 10), "short");
        let cut = truncate("ééééééééé", 8);
        assert!(cut.len() <= 8, "{cut}");
        assert!(cut.ends_with('…'));
    }
}
