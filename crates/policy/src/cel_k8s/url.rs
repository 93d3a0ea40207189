//! The `url` library: `url(s)`, `isURL(s)` and, on a URL, `getScheme`,
//! `getHost`, `getHostname`, `getPort`, `getEscapedPath` and `getQuery`.
//!
//! A URL is an absolute URI or an absolute path, as the API server requires.
//! The `url` crate decides what is valid; the components are then read from
//! the text as written, because the API server reports them that way (an
//! explicit `:443` stays, `https://a.example` has the empty path, a host
//! keeps its case) where the crate's WHATWG normal form would not.

use std::collections::HashMap;

use cel::common::types::{CelList, CelMap, CelMapKey, CelString, STRING_TYPE};
use cel::common::value::{CowVal, Val};
use cel::objects::Opaque;
use cel::{DeclarationError, Env, ExecutionError};

use super::{boolean, opaque_type, owned, read, string, take, text, wrap};

const URL: &str = "kubernetes.URL";

/// A parsed URL's components, as written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KubeUrl {
    scheme: String,
    /// `host[:port]`, without user information.
    host: String,
    path: String,
    query: String,
}

impl Opaque for KubeUrl {
    fn runtime_type_name(&self) -> &str {
        URL
    }
}

#[derive(Debug, thiserror::Error)]
pub enum UrlError {
    #[error("{0:?} contains a control character")]
    ControlCharacter(String),
    #[error("{0:?} is neither an absolute URI nor an absolute path: {1}")]
    Invalid(String, ::url::ParseError),
    #[error("{0:?} has a malformed percent escape")]
    BadEscape(String),
}

/// Prefixed to an absolute path so the crate parses all of it as a path
/// (`//a/b` included, which alone would name host `a`).
const PATH_BASE: &str = "http://path.invalid";

impl KubeUrl {
    pub fn parse(text: &str) -> Result<KubeUrl, UrlError> {
        // The crate silently drops tabs and newlines and trims spaces; the
        // API server refuses such text.
        if text.chars().any(|c| c.is_control()) {
            return Err(UrlError::ControlCharacter(text.to_string()));
        }
        if text.starts_with(' ') {
            return Err(UrlError::Invalid(
                text.to_string(),
                ::url::ParseError::RelativeUrlWithoutBase,
            ));
        }
        let is_path = text.starts_with('/');
        let checked = if is_path {
            ::url::Url::parse(&format!("{PATH_BASE}{text}"))
        } else {
            ::url::Url::parse(text)
        };
        let parsed = checked.map_err(|e| UrlError::Invalid(text.to_string(), e))?;
        let without_fragment = text.split('#').next().unwrap_or_default();
        let (rest, query) = without_fragment
            .split_once('?')
            .unwrap_or((without_fragment, ""));
        let (scheme, host, path) = if is_path {
            (String::new(), "", rest)
        } else {
            // The crate accepted a scheme, so the text has its colon.
            let after_scheme = rest.split_once(':').map_or("", |(_, after)| after);
            let (host, path) = match after_scheme.strip_prefix("//") {
                Some(authority_and_path) => {
                    let end = authority_and_path
                        .find('/')
                        .unwrap_or(authority_and_path.len());
                    let (authority, path) = authority_and_path.split_at(end);
                    let host = authority.rsplit('@').next().unwrap_or_default();
                    (host, path)
                }
                // `scheme:/path` has a path; `mailto:x` only opaque text.
                None if after_scheme.starts_with('/') => ("", after_scheme),
                None => ("", ""),
            };
            (parsed.scheme().to_string(), host, path)
        };
        if !escapes_are_well_formed(path) || !escapes_are_well_formed(query) {
            return Err(UrlError::BadEscape(text.to_string()));
        }
        Ok(KubeUrl {
            scheme,
            host: host.to_string(),
            path: path.to_string(),
            query: query.to_string(),
        })
    }

    /// The host without port; an IPv6 address without its brackets.
    fn hostname(&self) -> &str {
        match self.host.strip_prefix('[') {
            Some(bracketed) => bracketed.split(']').next().unwrap_or_default(),
            None => self.host.rsplit_once(':').map_or(&self.host, |(h, _)| h),
        }
    }

    fn port(&self) -> &str {
        let after_address = match self.host.rfind(']') {
            Some(end) => &self.host[end + 1..],
            None => &self.host,
        };
        after_address.rsplit_once(':').map_or("", |(_, port)| port)
    }

    /// The path with every character that may not stand bare in a path
    /// percent-encoded (a space becomes `%20`); existing escapes stay.
    fn escaped_path(&self) -> String {
        let mut out = String::with_capacity(self.path.len());
        for byte in self.path.bytes() {
            if byte.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@/%".contains(&byte) {
                out.push(char::from(byte));
            } else {
                out.push_str(&format!("%{byte:02X}"));
            }
        }
        out
    }

    /// Each key's values in order. As the API server does, `+` is a space,
    /// and a pair with a `;` or a malformed escape is left out.
    fn query_values(&self) -> HashMap<String, Vec<String>> {
        let mut values: HashMap<String, Vec<String>> = HashMap::new();
        for pair in self.query.split('&') {
            if pair.is_empty() || pair.contains(';') {
                continue;
            }
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            if let (Some(key), Some(value)) = (unescape_query(key), unescape_query(value)) {
                values.entry(key).or_default().push(value);
            }
        }
        values
    }
}

/// Whether every `%` starts a two-hex-digit escape.
fn escapes_are_well_formed(text: &str) -> bool {
    let bytes = text.as_bytes();
    bytes.iter().enumerate().all(|(i, byte)| {
        *byte != b'%'
            || bytes
                .get(i + 1..i + 3)
                .is_some_and(|hex| hex.iter().all(u8::is_ascii_hexdigit))
    })
}

fn unescape_query(text: &str) -> Option<String> {
    let mut bytes = Vec::with_capacity(text.len());
    let mut rest = text.as_bytes();
    while let Some((&byte, tail)) = rest.split_first() {
        match byte {
            b'+' => bytes.push(b' '),
            b'%' => {
                let hex = std::str::from_utf8(tail.get(..2)?).ok()?;
                bytes.push(u8::from_str_radix(hex, 16).ok()?);
                rest = &tail[2..];
                continue;
            }
            other => bytes.push(other),
        }
        rest = tail;
    }
    Some(String::from_utf8_lossy(&bytes).into_owned())
}

pub fn register(env: &mut Env) -> Result<(), DeclarationError> {
    let url = || opaque_type(URL);
    env.add_overload("url", "string_to_url", vec![STRING_TYPE], parse)?;
    env.add_overload("isURL", "is_url_string", vec![STRING_TYPE], is_url)?;
    env.add_member_overload("getScheme", "url_get_scheme", url(), vec![], scheme)?;
    env.add_member_overload("getHost", "url_get_host", url(), vec![], host)?;
    env.add_member_overload("getHostname", "url_get_hostname", url(), vec![], hostname)?;
    env.add_member_overload("getPort", "url_get_port", url(), vec![], port)?;
    env.add_member_overload(
        "getEscapedPath",
        "url_get_escaped_path",
        url(),
        vec![],
        escaped_path,
    )?;
    env.add_member_overload("getQuery", "url_get_query", url(), vec![], query)?;
    Ok(())
}

fn parse<'b, 'v>(args: Vec<CowVal<'b, 'v>>) -> Result<CowVal<'b, 'v>, ExecutionError> {
    let [source] = take("url", args)?;
    let url = KubeUrl::parse(text("url", source.as_ref())?)
        .map_err(|e| ExecutionError::function_error("url", e))?;
    wrap(url)
}

fn is_url<'b, 'v>(args: Vec<CowVal<'b, 'v>>) -> Result<CowVal<'b, 'v>, ExecutionError> {
    let [source] = take("isURL", args)?;
    boolean(KubeUrl::parse(text("isURL", source.as_ref())?).is_ok())
}

/// A string read from the URL receiver.
fn component<'b, 'v>(
    function: &str,
    args: Vec<CowVal<'b, 'v>>,
    get: fn(&KubeUrl) -> String,
) -> Result<CowVal<'b, 'v>, ExecutionError> {
    let [url] = take(function, args)?;
    string(read(function, url.as_ref(), get)?)
}

fn scheme<'b, 'v>(args: Vec<CowVal<'b, 'v>>) -> Result<CowVal<'b, 'v>, ExecutionError> {
    component("getScheme", args, |url| url.scheme.clone())
}

fn host<'b, 'v>(args: Vec<CowVal<'b, 'v>>) -> Result<CowVal<'b, 'v>, ExecutionError> {
    component("getHost", args, |url| url.host.clone())
}

fn hostname<'b, 'v>(args: Vec<CowVal<'b, 'v>>) -> Result<CowVal<'b, 'v>, ExecutionError> {
    component("getHostname", args, |url| url.hostname().to_string())
}

fn port<'b, 'v>(args: Vec<CowVal<'b, 'v>>) -> Result<CowVal<'b, 'v>, ExecutionError> {
    component("getPort", args, |url| url.port().to_string())
}

fn escaped_path<'b, 'v>(args: Vec<CowVal<'b, 'v>>) -> Result<CowVal<'b, 'v>, ExecutionError> {
    component("getEscapedPath", args, KubeUrl::escaped_path)
}

fn query<'b, 'v>(args: Vec<CowVal<'b, 'v>>) -> Result<CowVal<'b, 'v>, ExecutionError> {
    let [url] = take("getQuery", args)?;
    let values = read("getQuery", url.as_ref(), KubeUrl::query_values)?;
    let entries: HashMap<CelMapKey, Box<dyn Val>> = values
        .into_iter()
        .map(|(key, values)| {
            let list: Vec<Box<dyn Val>> = values
                .into_iter()
                .map(|value| Box::new(CelString::from(value)) as Box<dyn Val>)
                .collect();
            (
                CelMapKey::from(key),
                Box::new(CelList::from(list)) as Box<dyn Val>,
            )
        })
        .collect();
    owned(CelMap::from(entries))
}

#[cfg(test)]
mod tests {
    use crate::cel_k8s::test_support::{all_errors, all_true};

    #[test]
    fn absolute_uris_and_paths_are_urls_relative_ones_are_not() {
        all_true(&[
            "isURL('https://user:pass@example.com:80/path?query=val#fragment')",
            "isURL('/absolute-path') && isURL('mailto:someone@example.com')",
            "!isURL('https://a:b:c/') && !isURL('../relative-path') && !isURL('')",
            "!isURL('https://example.com/\\n') && !isURL(' https://example.com')",
            "!isURL('https://example.com/%zz') && !isURL('example.com')",
        ]);
        all_errors(
            &["url('../relative-path').getScheme() == ''"],
            "neither an absolute URI nor an absolute path",
        );
    }

    #[test]
    fn components_read_as_written() {
        all_true(&[
            "url('/path').getScheme() == '' && url('https://example.com/').getScheme() == 'https'",
            "url('https://example.com:80/').getHost() == 'example.com:80'",
            "url('https://example.com/').getHost() == 'example.com'",
            "url('https://[::1]:80/').getHost() == '[::1]:80' && url('https://[::1]/').getHost() == '[::1]'",
            "url('/path').getHost() == '' && url('/path').getHostname() == ''",
            "url('https://example.com:80/').getHostname() == 'example.com'",
            "url('https://127.0.0.1:80/').getHostname() == '127.0.0.1'",
            "url('https://[::1]:80/').getHostname() == '::1'",
            "url('https://example.com:443/').getPort() == '443'",
            "url('https://example.com/').getPort() == '' && url('/path').getPort() == ''",
            "url('https://user:pw@Example.com/').getHost() == 'Example.com'",
            "url('https://example.com/path').getEscapedPath() == '/path'",
            "url('https://example.com/path with spaces/').getEscapedPath() == '/path%20with%20spaces/'",
            "url('https://example.com').getEscapedPath() == ''",
            "url('https://example.com/a%2Fb#frag').getEscapedPath() == '/a%2Fb'",
        ]);
    }

    #[test]
    fn queries_are_maps_of_value_lists() {
        all_true(&[
            "url('https://example.com/path?k1=a&k2=b&k2=c').getQuery() == {'k1': ['a'], 'k2': ['b', 'c']}",
            "url('https://example.com/path?key with spaces=value+with%20spaces').getQuery() == {'key with spaces': ['value with spaces']}",
            "url('https://example.com/path?').getQuery() == {} && url('https://example.com/path').getQuery() == {}",
            "url('https://example.com/?a=1;b=2&c').getQuery() == {'c': ['']}",
            "url('/p?x=1#y=2').getQuery()['x'] == ['1']",
        ]);
    }

    #[test]
    fn urls_compare_by_their_components() {
        all_true(&[
            "url('https://example.com/a') == url('https://example.com/a#ignored')",
            "url('https://example.com/a') != url('https://example.com/b')",
        ]);
        all_errors(&["url(1).getHost() == ''"], "");
    }
}
