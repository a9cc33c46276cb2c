use medforge_crds::SessionReason;

use super::create::{OTHER_REFUSAL, refusal};
use crate::error::ApiError;

#[test]
fn refusals_become_codes() {
    let code = |reason| match refusal(reason, "") {
        ApiError::Conflict { code, .. } => code,
        other => panic!("{other:?}"),
    };
    assert_eq!(
        code(SessionReason::NoGpuAvailable.as_str()),
        "no_gpu_available"
    );
    assert_eq!(
        code(SessionReason::UserLimitReached.as_str()),
        "user_limit_reached"
    );
    assert_eq!(
        code(SessionReason::SnapshotNotFound.as_str()),
        "snapshot_not_found"
    );
    assert_eq!(code("SomethingNew"), OTHER_REFUSAL);
    // Every reason the scheduler refuses with has a code of its own.
    for reason in SessionReason::REFUSALS {
        assert_ne!(code(reason.as_str()), OTHER_REFUSAL, "{reason}");
    }
}
