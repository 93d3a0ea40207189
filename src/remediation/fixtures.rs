//! Fixtures for the unit tests of `remediation`: the evidence of an
//! incident about the workload `shop/web`.
//!
//! Every test module that needs evidence starts from [`evidence`] and adds
//! what its case is about with the `with_*` setters (or struct update
//! syntax for bulk data), so a field added to `Evidence` is filled in here
//! once, not in each module.
use crate::remediation::crd::{
    ContainerTemplate, Evidence, LogTail, Remediation, RemediationSpec, Revision, WorkloadRef,
};

/// The namespace of the fixture workload.
pub(crate) const NAMESPACE: &str = "shop";
/// The fixture workload's name.
pub(crate) const NAME: &str = "web";
/// The fixture workload's uid; live objects in tests carry the same one.
pub(crate) const UID: &str = "web-uid";

/// `shop/web` as a `kind`, under the apiVersion that kind is served at.
pub(crate) fn workload(kind: &str) -> WorkloadRef {
    let api_version = match kind {
        "Pod" => "v1",
        "Job" | "CronJob" => "batch/v1",
        _ => "apps/v1",
    };
    WorkloadRef {
        api_version: api_version.into(),
        kind: kind.into(),
        name: NAME.into(),
        uid: UID.into(),
    }
}

/// A Remediation `name` in `shop` about the Deployment `web`, undecided and
/// without a status.
pub(crate) fn remediation(name: &str) -> Remediation {
    let mut r = Remediation::new(
        name,
        RemediationSpec {
            target: workload("Deployment"),
            approved: false,
            rejected: false,
            approval: None,
        },
    );
    r.metadata.namespace = Some(NAMESPACE.into());
    r
}

/// Evidence about `shop/web` as a `kind` with nothing gathered yet.
pub(crate) fn evidence(kind: &str) -> Evidence {
    Evidence {
        workload: workload(kind),
        namespace: NAMESPACE.into(),
        ..Evidence::default()
    }
}

impl Evidence {
    /// Adds a container to the template; the setters below change the
    /// container added last.
    pub(crate) fn with_container(mut self, name: &str, image: &str) -> Evidence {
        self.containers.push(ContainerTemplate {
            name: name.into(),
            image: image.into(),
            ..ContainerTemplate::default()
        });
        self
    }

    pub(crate) fn with_memory_limit(mut self, quantity: &str) -> Evidence {
        self.last_container()
            .limits
            .insert("memory".into(), quantity.into());
        self
    }

    pub(crate) fn with_env_names(mut self, names: &[&str]) -> Evidence {
        self.last_container().env_names = names.iter().map(|n| n.to_string()).collect();
        self
    }

    pub(crate) fn with_args(mut self, args: &[&str]) -> Evidence {
        self.last_container().args = args.iter().map(|a| a.to_string()).collect();
        self
    }

    /// Adds an earlier revision of the template that ran `images`
    /// (container, image) healthily.
    pub(crate) fn with_healthy_revision(
        mut self,
        revision: i64,
        images: &[(&str, &str)],
    ) -> Evidence {
        self.history.push(Revision {
            revision,
            images: images
                .iter()
                .map(|(container, image)| (container.to_string(), image.to_string()))
                .collect(),
            healthy: true,
            ..Revision::default()
        });
        self
    }

    /// Adds the log tail of a container's previous (crashed) run.
    pub(crate) fn with_previous_log(
        mut self,
        pod: &str,
        container: &str,
        lines: Vec<String>,
    ) -> Evidence {
        self.logs.push(LogTail {
            pod: pod.into(),
            container: container.into(),
            previous: true,
            lines,
        });
        self
    }

    fn last_container(&mut self) -> &mut ContainerTemplate {
        self.containers
            .last_mut()
            .expect("a fixture adds a container with `with_container` before setting its fields")
    }
}
