//! `metav1.Condition` bookkeeping shared by every controller.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

/// `True`, `False` or `Unknown`, as conditions spell them.
pub fn status_str(value: Option<bool>) -> &'static str {
    match value {
        Some(true) => "True",
        Some(false) => "False",
        None => "Unknown",
    }
}

/// Sets a condition in a list, keyed on `type`. `lastTransitionTime` changes
/// only when the status changes; reason, message and observedGeneration are
/// always refreshed. Returns whether anything changed, so callers can skip a
/// write that would change nothing.
pub fn set_condition(
    conditions: &mut Vec<Condition>,
    type_: impl AsRef<str>,
    status: Option<bool>,
    reason: impl AsRef<str>,
    message: &str,
    observed_generation: Option<i64>,
    now: Time,
) -> bool {
    let (type_, reason) = (type_.as_ref(), reason.as_ref());
    let status = status_str(status);
    match conditions.iter_mut().find(|c| c.type_ == type_) {
        Some(c) => {
            let mut changed = false;
            if c.status != status {
                c.status = status.to_string();
                c.last_transition_time = now;
                changed = true;
            }
            if c.reason != reason {
                c.reason = reason.to_string();
                changed = true;
            }
            if c.message != message {
                c.message = message.to_string();
                changed = true;
            }
            if c.observed_generation != observed_generation {
                c.observed_generation = observed_generation;
                changed = true;
            }
            changed
        }
        None => {
            conditions.push(Condition {
                type_: type_.to_string(),
                status: status.to_string(),
                reason: reason.to_string(),
                message: message.to_string(),
                observed_generation,
                last_transition_time: now,
            });
            true
        }
    }
}

/// Whether the condition of that type is `True`.
pub fn is_true(conditions: &[Condition], type_: impl AsRef<str>) -> bool {
    let type_ = type_.as_ref();
    conditions
        .iter()
        .any(|c| c.type_ == type_ && c.status == "True")
}

/// The condition of that type.
pub fn find(conditions: &[Condition], type_: impl AsRef<str>) -> Option<&Condition> {
    let type_ = type_.as_ref();
    conditions.iter().find(|c| c.type_ == type_)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(secs: i64) -> Time {
        Time(k8s_openapi::jiff::Timestamp::from_second(secs).unwrap())
    }

    #[test]
    fn transition_time_moves_only_with_the_status() {
        let mut cs = Vec::new();
        // (status, reason, message, generation, at) → changed, lastTransitionTime after.
        let steps = [
            (Some(false), "Starting", "", Some(1), 10, true, 10),
            (Some(false), "Starting", "", Some(1), 20, false, 10),
            (Some(false), "Pulling", "x", Some(2), 30, true, 10),
            (Some(true), "Running", "", Some(2), 40, true, 40),
        ];
        for (status, reason, message, generation, at, changed, transition) in steps {
            let got = set_condition(&mut cs, "Ready", status, reason, message, generation, t(at));
            assert_eq!(got, changed, "{reason} at {at}");
            assert_eq!(
                cs[0].last_transition_time,
                t(transition),
                "{reason} at {at}"
            );
        }
        assert!(is_true(&cs, "Ready"));
        assert!(set_condition(
            &mut cs,
            "Scheduled",
            None,
            "Waiting",
            "",
            None,
            t(50)
        ));
        assert_eq!(cs.len(), 2);
        assert_eq!(find(&cs, "Scheduled").unwrap().status, "Unknown");
    }
}
