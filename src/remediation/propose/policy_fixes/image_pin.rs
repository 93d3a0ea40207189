//! `disallow-latest-tag`: an image with the tag `latest` (or none, which
//! means `latest`) is pinned to the digest its running pods report in
//! `status.containerStatuses[].imageID`. That is the code already running,
//! so pinning changes nothing but the name; when the pods report different
//! digests (some pulled `latest` before it moved) or none yet, nobody can
//! say which one was meant, and a person decides.
use serde_json::json;

use super::{Change, FixContext, RuleVerdict, container_change};

/// Whether an image names no tag, or the tag `latest`, and no digest.
pub fn floats(image: &str) -> bool {
    if image.contains('@') {
        return false;
    }
    let last = image.rsplit('/').next().unwrap_or(image);
    match last.split_once(':') {
        None => true,
        Some((_, tag)) => tag == "latest",
    }
}

/// The repository of an image: the name without tag or digest.
pub fn repository(image: &str) -> &str {
    let image = image.split('@').next().unwrap_or(image);
    let last = image.rsplit('/').next().unwrap_or(image);
    match last.find(':') {
        Some(at) => &image[..image.len() - last.len() + at],
        None => image,
    }
}

/// The digest in a kubelet's `imageID` (`docker.io/library/nginx@sha256:…`,
/// or a bare `sha256:…`), if it is one.
pub fn digest_of(image_id: &str) -> Option<&str> {
    let digest = image_id.rsplit('@').next().unwrap_or(image_id);
    let hex = digest.strip_prefix("sha256:")?;
    (hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit())).then_some(digest)
}

/// The containers of a pod spec whose image floats and for which no pod
/// reports an `imageID` yet: pods that are still starting. A pin proposed
/// now would be a diagnosis that a few seconds would have made a fix.
pub fn awaiting_digests(spec: &serde_json::Value, reported: &super::ReportedImages) -> Vec<String> {
    ["initContainers", "containers"]
        .iter()
        .filter_map(|list| spec.get(list)?.as_array())
        .flatten()
        .filter_map(|c| Some((c.get("name")?.as_str()?, c.get("image")?.as_str()?)))
        .filter(|(name, image)| {
            floats(image)
                && !reported
                    .get(*name)
                    .is_some_and(|ids| ids.iter().any(|id| digest_of(id).is_some()))
        })
        .map(|(name, _)| name.to_string())
        .collect()
}

pub fn pin_latest_images(ctx: &FixContext) -> RuleVerdict {
    let mut verdict = RuleVerdict {
        confidence: 0.9,
        ..RuleVerdict::default()
    };
    for (list, name, container) in ctx.containers() {
        let image = container
            .get("image")
            .and_then(|i| i.as_str())
            .unwrap_or_default();
        if !floats(image) {
            continue;
        }
        let field = ctx.path(&format!("{list}[{name}].image"));
        let reported = ctx.reported.get(name);
        let digests: Vec<&str> = reported
            .into_iter()
            .flatten()
            .filter_map(|id| digest_of(id))
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        match digests.as_slice() {
            [digest] => {
                let pinned = format!("{}@{digest}", repository(image));
                verdict.changes.push(Change {
                    image_only: true,
                    ..container_change(
                        list,
                        name,
                        json!({"image": pinned}),
                        format!("pin {field} from {image} to {pinned}, the digest its pods run"),
                    )
                });
            }
            [] => verdict.needs_human.push(format!(
                "{field} is {image} and no running pod reports its digest yet; pin it by hand"
            )),
            several => verdict.needs_human.push(format!(
                "{field} is {image} and its pods run different digests ({}); choose one",
                several.join(", ")
            )),
        }
    }
    if !verdict.changes.is_empty() {
        verdict.risks.push(
            "none for the running code (the digest is what runs now); later updates need a new tag or digest"
                .into(),
        );
    }
    verdict
}
