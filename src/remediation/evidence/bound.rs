//! The size bound: evidence is cut to a byte budget by dropping the least
//! useful parts first.
use super::*;

pub(super) fn json_len<T: Serialize>(value: &T) -> usize {
    serde_json::to_vec(value).map(|v| v.len()).unwrap_or(0)
}

/// Removes items from `items` (from the back, or the front for log lines)
/// while `size` exceeds `max` and more than `keep` remain, keeping `size`
/// exact: compact JSON arrays spend the item plus one comma per extra item.
pub(super) fn drop_items<T: Serialize>(
    items: &mut Vec<T>,
    keep: usize,
    from_front: bool,
    size: &mut usize,
    max: usize,
) -> bool {
    let mut dropped = false;
    while *size > max && items.len() > keep {
        let comma = usize::from(items.len() > 1);
        let item = if from_front {
            items.remove(0)
        } else {
            match items.pop() {
                Some(item) => item,
                None => break,
            }
        };
        *size = size.saturating_sub(json_len(&item) + comma);
        dropped = true;
    }
    dropped
}

/// Cuts `evidence` to at most `max_bytes` of compact JSON, setting
/// `truncated` when anything is dropped. Drop order, least useful first:
///
/// 1. events beyond the newest 5 (oldest first);
/// 2. log lines beyond the last 10 of each tail (oldest lines first);
/// 3. statuses of further pods for a container already shown;
/// 4. history beyond the newest 3 revisions;
/// 5. the remaining events;
/// 6. log lines beyond the last 3, then whole log tails (last first);
/// 7. the remaining statuses;
/// 8. the remaining history;
/// 9. per container: probes, then args and command, then env names;
/// 10. containers (last first), then management markers.
pub fn bound_evidence(evidence: &mut Evidence, max_bytes: usize) {
    let mut size = json_len(evidence);
    if size <= max_bytes {
        return;
    }
    if !evidence.truncated {
        // `"truncated":true` is one byte shorter than `"truncated":false`.
        evidence.truncated = true;
        size -= 1;
    }
    let max = max_bytes;

    drop_items(&mut evidence.events, 5, false, &mut size, max);
    for tail in &mut evidence.logs {
        drop_items(&mut tail.lines, 10, true, &mut size, max);
    }
    drop_repeated_statuses(evidence, &mut size, max);
    drop_items(&mut evidence.history, 3, false, &mut size, max);
    drop_items(&mut evidence.events, 0, false, &mut size, max);
    for tail in &mut evidence.logs {
        drop_items(&mut tail.lines, 3, true, &mut size, max);
    }
    drop_items(&mut evidence.logs, 0, false, &mut size, max);
    drop_items(&mut evidence.statuses, 0, false, &mut size, max);
    drop_items(&mut evidence.history, 0, false, &mut size, max);
    strip_container_details(evidence, &mut size, max);
    drop_items(&mut evidence.containers, 0, false, &mut size, max);
    if size > max {
        evidence.management.clear();
    }
}

/// Step 3: one status per container is enough to see the failure mode.
pub(super) fn drop_repeated_statuses(evidence: &mut Evidence, size: &mut usize, max: usize) {
    let mut index = evidence.statuses.len();
    while *size > max && index > 0 {
        index -= 1;
        let container = &evidence.statuses[index].container;
        let shown_earlier = evidence.statuses[..index]
            .iter()
            .any(|s| &s.container == container);
        if shown_earlier {
            let removed = evidence.statuses.remove(index);
            let comma = usize::from(!evidence.statuses.is_empty());
            *size = size.saturating_sub(json_len(&removed) + comma);
        }
    }
}

/// Step 9, from the last container backwards.
pub(super) fn strip_container_details(evidence: &mut Evidence, size: &mut usize, max: usize) {
    type Strip = fn(&mut ContainerTemplate);
    let steps: [Strip; 3] = [
        |c| c.probes.clear(),
        |c| {
            c.args.clear();
            c.command.clear();
        },
        |c| c.env_names.clear(),
    ];
    for strip in steps {
        for container in evidence.containers.iter_mut().rev() {
            if *size <= max {
                return;
            }
            let before = json_len(container);
            strip(container);
            *size = size.saturating_sub(before - json_len(container));
        }
    }
}
