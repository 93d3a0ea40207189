//! An object's age the way kubectl prints it (`45s`, `12m`, `3h`), for
//! `kubectl aiops list` and the console's table alike.
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

/// The time since `created`, or `-` when the object has no creation time.
pub fn short_age(created: Option<&Time>) -> String {
    let Some(created) = created else {
        return "-".into();
    };
    let secs = Timestamp::now().duration_since(created.0).as_secs().max(0);
    match secs {
        0..120 => format!("{secs}s"),
        120..7200 => format!("{}m", secs / 60),
        _ => format!("{}h", secs / 3600),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_are_seconds_then_minutes_then_hours() {
        let ago = |secs: i64| {
            let at = Timestamp::now()
                .checked_sub(k8s_openapi::jiff::SignedDuration::from_secs(secs))
                .unwrap_or_else(|e| panic!("{e}"));
            short_age(Some(&Time(at)))
        };
        assert_eq!(ago(30), "30s");
        assert_eq!(ago(600), "10m");
        assert_eq!(ago(3 * 3600 + 5), "3h");
        assert_eq!(short_age(None), "-");
    }
}
