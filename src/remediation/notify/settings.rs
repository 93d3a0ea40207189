//! Notification receivers, from the `notify.*` keys of the operator's
//! ConfigMap (read live with the `remediate.*` keys):
//!
//! ```yaml
//! notify.receivers: |
//!   - name: oncall-slack
//!     format: slack                   # slack (incoming-webhook JSON) or webhook (the operator's JSON)
//!     urlSecret: {name: aiops-operator-notify, key: slack-url}   # in the operator's namespace
//!     events: [ReadyForReview, Verified, RolledBack, Failed]   # default: all four
//!   - name: audit-log
//!     format: webhook
//!     url: https://audit.example.com/aiops   # a URL that is no secret may stand here
//! notify.consoleURL: https://aiops.example.com   # links in messages; omitted: none
//! ```
//!
//! Webhook URLs of chat tools are credentials (whoever has one can post),
//! so `urlSecret` is the normal way; the URL is read from the Secret at
//! send time and never logged. The operator's Role may read only the Secret
//! `aiops-operator-notify` (and its approval key): least privilege by
//! default, a wider list by choice.
use std::collections::{BTreeMap, BTreeSet};

use serde::Deserialize;

/// ConfigMap key: the receivers.
pub const KEY_RECEIVERS: &str = "notify.receivers";
/// ConfigMap key: the console's base URL for links.
pub const KEY_CONSOLE_URL: &str = "notify.consoleURL";

/// The moments a receiver can be told about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
pub enum NotifyEvent {
    /// A guarded, dry-run fix waits for approval.
    ReadyForReview,
    Verified,
    RolledBack,
    Failed,
}

impl NotifyEvent {
    pub const ALL: [NotifyEvent; 4] = [
        NotifyEvent::ReadyForReview,
        NotifyEvent::Verified,
        NotifyEvent::RolledBack,
        NotifyEvent::Failed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            NotifyEvent::ReadyForReview => "ReadyForReview",
            NotifyEvent::Verified => "Verified",
            NotifyEvent::RolledBack => "RolledBack",
            NotifyEvent::Failed => "Failed",
        }
    }
}

/// How the message is shaped.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// Slack's incoming-webhook body (`text` and `blocks`); Mattermost and
    /// Rocket.Chat take it too.
    Slack,
    /// The operator's own JSON (see `notify::message`).
    Webhook,
}

/// Where a receiver's URL comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UrlSource {
    Literal(String),
    /// A key of a Secret in the operator's namespace.
    Secret {
        name: String,
        key: String,
    },
}

/// One receiver.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Receiver {
    pub name: String,
    pub format: Format,
    pub url: UrlSource,
    pub events: BTreeSet<NotifyEvent>,
}

/// What the notifier reads.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NotifySettings {
    pub receivers: Vec<Receiver>,
    pub console_url: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ReceiverText {
    name: String,
    format: Format,
    #[serde(default)]
    url: Option<String>,
    #[serde(default)]
    url_secret: Option<SecretRef>,
    #[serde(default)]
    events: Option<Vec<NotifyEvent>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SecretRef {
    name: String,
    key: String,
}

/// Parses the `notify.*` keys; `Err` names the key and what is wrong.
pub fn parse_notify(
    data: &BTreeMap<String, String>,
) -> Result<NotifySettings, (&'static str, String)> {
    let mut settings = NotifySettings::default();
    if let Some(text) = data
        .get(KEY_CONSOLE_URL)
        .map(|t| t.trim())
        .filter(|t| !t.is_empty())
    {
        let parsed = reqwest::Url::parse(text)
            .map_err(|e| (KEY_CONSOLE_URL, format!("{text:?} is not a URL: {e}")))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err((KEY_CONSOLE_URL, format!("{text:?} is not http(s)")));
        }
        settings.console_url = Some(text.trim_end_matches('/').to_string());
    }
    let Some(text) = data.get(KEY_RECEIVERS) else {
        return Ok(settings);
    };
    let parsed: Option<Vec<ReceiverText>> = serde_yaml::from_str(text)
        .map_err(|e| (KEY_RECEIVERS, format!("not a YAML list of receivers: {e}")))?;
    let mut names = BTreeSet::new();
    for receiver in parsed.unwrap_or_default() {
        let name = receiver.name.trim().to_string();
        if name.is_empty() || !names.insert(name.clone()) {
            return Err((
                KEY_RECEIVERS,
                format!("receiver name {name:?} is empty or used twice"),
            ));
        }
        let url = match (receiver.url, receiver.url_secret) {
            (Some(url), None) => {
                let parsed = reqwest::Url::parse(url.trim())
                    .map_err(|e| (KEY_RECEIVERS, format!("receiver {name}: bad url: {e}")))?;
                if !matches!(parsed.scheme(), "http" | "https") {
                    return Err((
                        KEY_RECEIVERS,
                        format!("receiver {name}: url is not http(s)"),
                    ));
                }
                UrlSource::Literal(url.trim().to_string())
            }
            (None, Some(secret)) => UrlSource::Secret {
                name: secret.name,
                key: secret.key,
            },
            _ => {
                return Err((
                    KEY_RECEIVERS,
                    format!("receiver {name}: give exactly one of url and urlSecret"),
                ));
            }
        };
        let events = match receiver.events {
            Some(events) if !events.is_empty() => events.into_iter().collect(),
            Some(_) => {
                return Err((KEY_RECEIVERS, format!("receiver {name}: events is empty")));
            }
            None => NotifyEvent::ALL.into_iter().collect(),
        };
        settings.receivers.push(Receiver {
            name,
            format: receiver.format,
            url,
            events,
        });
    }
    Ok(settings)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn receivers_take_a_secret_or_a_url_and_default_to_every_event() {
        let settings = parse_notify(&data(&[
            (
                KEY_RECEIVERS,
                "- name: chat\n  format: slack\n  urlSecret: {name: aiops-notify, key: slack}\n- name: log\n  format: webhook\n  url: http://127.0.0.1:9/hook\n  events: [Verified]\n",
            ),
            (KEY_CONSOLE_URL, "https://aiops.example.com/"),
        ]))
        .unwrap();
        assert_eq!(settings.receivers.len(), 2);
        assert_eq!(
            settings.receivers[0].url,
            UrlSource::Secret {
                name: "aiops-notify".into(),
                key: "slack".into()
            }
        );
        assert_eq!(settings.receivers[0].events.len(), 4);
        assert_eq!(
            settings.receivers[1].events,
            BTreeSet::from([NotifyEvent::Verified])
        );
        assert_eq!(
            settings.console_url.as_deref(),
            Some("https://aiops.example.com")
        );
    }

    #[test]
    fn a_bad_receiver_is_refused_with_its_name() {
        for (text, needle) in [
            (
                "- name: a\n  format: slack\n",
                "exactly one of url and urlSecret",
            ),
            (
                "- name: a\n  format: slack\n  url: ftp://x\n",
                "not http(s)",
            ),
            ("- name: a\n  format: teams\n  url: http://x\n", "format"),
            (
                "- name: a\n  format: slack\n  url: http://x\n- name: a\n  format: slack\n  url: http://y\n",
                "used twice",
            ),
            (
                "- name: a\n  format: slack\n  url: http://x\n  events: [Approved]\n",
                "Approved",
            ),
        ] {
            let (key, reason) = parse_notify(&data(&[(KEY_RECEIVERS, text)])).unwrap_err();
            assert_eq!(key, KEY_RECEIVERS);
            assert!(reason.contains(needle), "{text}: {reason}");
        }
    }
}
