//! Which of a session's snapshots retention deletes. Pure.

use std::collections::BTreeSet;

use k8s_openapi::jiff::{SignedDuration, Timestamp};
use medforge_crds::Retention;

/// One of a session's snapshots, as retention sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kept {
    /// The record's name.
    pub name: String,
    /// The ZFS snapshot (`<dataset>@<name>`).
    pub snapshot: String,
    pub taken_at: Timestamp,
}

/// The snapshots of one session that retention deletes: all but the newest
/// `keep_last`, those younger than `keep_days`, and those a dataset was
/// cloned from (`origins`). The newest is always kept. Oldest first.
pub fn expired(
    snapshots: &[Kept],
    origins: &BTreeSet<String>,
    policy: Retention,
    now: Timestamp,
) -> Vec<Kept> {
    let mut newest_first: Vec<&Kept> = snapshots.iter().collect();
    newest_first.sort_by(|a, b| {
        b.taken_at
            .cmp(&a.taken_at)
            .then_with(|| b.name.cmp(&a.name))
    });
    let young = SignedDuration::from_hours(24 * i64::from(policy.keep_days));
    let mut out: Vec<Kept> = newest_first
        .into_iter()
        .enumerate()
        .filter(|(i, k)| {
            let by_count = *i < policy.keep_last.max(1) as usize;
            let by_age = now.duration_since(k.taken_at) < young;
            !(by_count || by_age || origins.contains(&k.snapshot))
        })
        .map(|(_, k)| k.clone())
        .collect();
    out.reverse();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snap(i: i64) -> Kept {
        Kept {
            name: format!("web-stop-{i}"),
            snapshot: format!("p/alice/u1@stop-{i}"),
            taken_at: Timestamp::from_second(i * 86_400).unwrap(),
        }
    }

    #[test]
    fn the_newest_n_and_the_young_stay_and_clone_origins_never_go() {
        let five: Vec<Kept> = (1..=5).map(snap).collect();
        let now = Timestamp::from_second(30 * 86_400).unwrap();
        let keep_two = Retention {
            keep_last: 2,
            keep_days: 0,
        };
        let names = |v: Vec<Kept>| v.into_iter().map(|k| k.name).collect::<Vec<_>>();
        assert_eq!(
            names(expired(&five, &BTreeSet::new(), keep_two, now)),
            ["web-stop-1", "web-stop-2", "web-stop-3"]
        );
        // Snapshot 2 is a clone's origin.
        let origins = BTreeSet::from(["p/alice/u1@stop-2".to_string()]);
        assert_eq!(
            names(expired(&five, &origins, keep_two, now)),
            ["web-stop-1", "web-stop-3"]
        );
        // Younger than 28 days: day 3 (27 days old) stays too.
        let by_age = Retention {
            keep_last: 1,
            keep_days: 28,
        };
        assert_eq!(
            names(expired(&five, &BTreeSet::new(), by_age, now)),
            ["web-stop-1", "web-stop-2"]
        );
        // The newest stays whatever the policy, in any order given.
        let mut shuffled = five.clone();
        shuffled.reverse();
        let all_but_newest = names(expired(
            &shuffled,
            &BTreeSet::new(),
            Retention {
                keep_last: 1,
                keep_days: 0,
            },
            now,
        ));
        assert_eq!(all_but_newest.len(), 4);
        assert!(!all_but_newest.contains(&"web-stop-5".to_string()));
        assert!(expired(&[], &BTreeSet::new(), keep_two, now).is_empty());
    }
}
