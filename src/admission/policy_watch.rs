//! Keeps the policies in force in step with the policy files. In a cluster
//! they come from a ConfigMap mounted as a volume, which the kubelet
//! updates in place; a poll of the files' contents notices that without a
//! restart. A version that does not load is refused and the last good set
//! stays in force ([`crate::admission::refusals`]).
use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::ObjectReference;
use tokio::task::JoinHandle;

use crate::admission::metrics::Metrics;
use crate::admission::policy_files::load_policies;
use crate::admission::refusals::{ConfigSource, RefusalReporter};
use crate::admission::state::PolicyHandle;

/// Where the policy files are and how often to look at them.
#[derive(Debug, Clone)]
pub struct PolicyFiles {
    pub dir: PathBuf,
    pub extra: Vec<PathBuf>,
    pub poll_interval: Duration,
    /// The object the Warning Event of a refused version goes on (this
    /// replica's Pod); `None` logs only.
    pub event_object: Option<ObjectReference>,
}

/// Watches the policy files until the task is aborted.
pub fn spawn_policy_watch(
    files: PolicyFiles,
    policies: PolicyHandle,
    metrics: Arc<Metrics>,
    refusals: RefusalReporter,
) -> JoinHandle<()> {
    // The set in force was loaded from the files as they are now (taken
    // here, not in the task, so an edit before its first poll still counts).
    let mut seen = fingerprint(&files.dir, &files.extra);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(files.poll_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tick.tick().await;
            let now = fingerprint(&files.dir, &files.extra);
            if now == seen {
                continue;
            }
            seen = now;
            reload(&files, &policies, &metrics, &refusals).await;
        }
    })
}

/// Loads the files once more: the new set replaces the one in force, or is
/// refused and the one in force stays.
pub async fn reload(
    files: &PolicyFiles,
    policies: &PolicyHandle,
    metrics: &Metrics,
    refusals: &RefusalReporter,
) {
    // Loading reads and compiles files: off the async workers.
    let (dir, extra) = (files.dir.clone(), files.extra.clone());
    let loaded = tokio::task::spawn_blocking(move || load_policies(&dir, &extra)).await;
    match loaded {
        Ok(Ok(set)) => {
            tracing::info!(
                policies = set.policies().count(),
                dir = %files.dir.display(),
                "policy files changed; the new set is in force"
            );
            policies.replace(set);
            metrics.config_update("policies_applied");
            refusals.accepted(ConfigSource::Policies);
        }
        Ok(Err(error)) => {
            refusals
                .refused(
                    ConfigSource::Policies,
                    error.to_string(),
                    files.event_object.clone(),
                )
                .await;
        }
        Err(error) => {
            refusals
                .refused(
                    ConfigSource::Policies,
                    format!("loading the policy files stopped: {error}"),
                    files.event_object.clone(),
                )
                .await;
        }
    }
}

/// A digest of every file the policies are loaded from (names and
/// contents, so an edit that keeps the size and time still shows). A file
/// that cannot be read counts by its error, so its return is a change too.
pub fn fingerprint(dir: &Path, extra: &[PathBuf]) -> u64 {
    let mut hasher = DefaultHasher::new();
    let mut files = Vec::new();
    list_files(dir, false, &mut files);
    for path in extra {
        list_files(path, true, &mut files);
    }
    files.sort();
    for file in files {
        file.hash(&mut hasher);
        match std::fs::read(&file) {
            Ok(bytes) => bytes.hash(&mut hasher),
            Err(error) => error.kind().to_string().hash(&mut hasher),
        }
    }
    hasher.finish()
}

/// The YAML files at `path` (itself, if it is a file); `recursive` for
/// the extra directories, which are loaded recursively.
fn list_files(path: &Path, recursive: bool, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(path) else {
        out.push(path.to_path_buf());
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        // The kubelet's `..data` link and its timestamped folders show the
        // same files again; following the top-level names is enough.
        let hidden = path
            .file_name()
            .and_then(|name| name.to_str())
            .is_some_and(|name| name.starts_with('.'));
        if hidden {
            continue;
        }
        if path.is_dir() {
            if recursive {
                list_files(&path, true, out);
            }
        } else if matches!(
            path.extension().and_then(|e| e.to_str()),
            Some("yaml" | "yml")
        ) {
            out.push(path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admission::refusals::ConfigRefusals;
    use crate::policy::PolicySet;
    use kube::runtime::events::Reporter;

    const GOOD: &str = r#"
apiVersion: kyverno.io/v1
kind: ClusterPolicy
metadata:
  name: require-team-label
spec:
  validationFailureAction: Enforce
  rules:
    - name: team
      match:
        any:
          - resources:
              kinds: [Pod]
      validate:
        message: "label team is required"
        pattern:
          metadata:
            labels:
              team: "?*"
"#;

    /// One good policy file in a temp dir, its set in force, and a
    /// reporter without a cluster.
    struct Fixture {
        _dir: tempfile::TempDir,
        file: std::path::PathBuf,
        files: PolicyFiles,
        handle: PolicyHandle,
        metrics: Arc<Metrics>,
        refusals: ConfigRefusals,
        reporter: RefusalReporter,
    }

    fn fixture(poll_interval: Duration) -> Fixture {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let file = dir.path().join("team.yaml");
        std::fs::write(&file, GOOD).unwrap_or_else(|e| panic!("{e}"));
        let files = PolicyFiles {
            dir: dir.path().to_path_buf(),
            extra: Vec::new(),
            poll_interval,
            event_object: None,
        };
        let handle =
            PolicyHandle::new(load_policies(&files.dir, &[]).unwrap_or_else(|e| panic!("{e}")));
        let metrics = Arc::new(Metrics::new());
        let refusals = ConfigRefusals::default();
        let reporter = RefusalReporter::new(
            refusals.clone(),
            Arc::clone(&metrics),
            None,
            Reporter::from("test"),
        );
        Fixture {
            _dir: dir,
            file,
            files,
            handle,
            metrics,
            refusals,
            reporter,
        }
    }

    fn names(set: &PolicySet) -> Vec<String> {
        set.policies().map(|p| p.name().to_string()).collect()
    }

    #[tokio::test]
    async fn a_broken_file_is_refused_and_the_last_good_set_stays() {
        let Fixture {
            _dir,
            file,
            files,
            handle,
            metrics,
            refusals,
            reporter,
        } = fixture(Duration::from_secs(1));

        let before = fingerprint(&files.dir, &files.extra);
        std::fs::write(&file, "kind: ClusterPolicy\nspec: [unclosed")
            .unwrap_or_else(|e| panic!("{e}"));
        assert_ne!(before, fingerprint(&files.dir, &files.extra));
        reload(&files, &handle, &metrics, &reporter).await;
        assert_eq!(names(&handle.current()), vec!["require-team-label"]);
        let listed = refusals.list();
        assert_eq!(listed.len(), 1, "{listed:?}");
        assert_eq!(listed[0].0, ConfigSource::Policies);
        assert!(listed[0].1.contains("team.yaml"), "{listed:?}");
        let text = metrics.encode().unwrap_or_default();
        assert!(
            text.contains("aiops_admission_config_refused{source=\"policies\"} 1"),
            "{text}"
        );

        // A fixed file is taken, and the refusal is over.
        std::fs::write(
            &file,
            GOOD.replace("require-team-label", "require-owner-label"),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        reload(&files, &handle, &metrics, &reporter).await;
        assert_eq!(names(&handle.current()), vec!["require-owner-label"]);
        assert!(refusals.list().is_empty());
        let text = metrics.encode().unwrap_or_default();
        assert!(
            text.contains("aiops_admission_config_refused{source=\"policies\"} 0"),
            "{text}"
        );
    }

    #[tokio::test]
    async fn an_emptied_directory_is_refused() {
        let Fixture {
            _dir,
            file,
            files,
            handle,
            metrics,
            refusals,
            reporter,
        } = fixture(Duration::from_secs(1));
        std::fs::remove_file(&file).unwrap_or_else(|e| panic!("{e}"));
        reload(&files, &handle, &metrics, &reporter).await;
        assert_eq!(names(&handle.current()), vec!["require-team-label"]);
        assert!(
            refusals.list()[0].1.contains("no policy files"),
            "{:?}",
            refusals.list()
        );
    }

    #[tokio::test]
    async fn the_watch_notices_an_edit() {
        let Fixture {
            _dir,
            file,
            files,
            handle,
            metrics,
            reporter,
            ..
        } = fixture(Duration::from_millis(20));
        let task = spawn_policy_watch(files, handle.clone(), metrics, reporter);
        std::fs::write(
            &file,
            GOOD.replace("require-team-label", "require-owner-label"),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let mut waited = Duration::ZERO;
        while names(&handle.current()) != vec!["require-owner-label"] {
            assert!(
                waited < Duration::from_secs(10),
                "the edit was not picked up"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
            waited += Duration::from_millis(20);
        }
        task.abort();
    }
}
