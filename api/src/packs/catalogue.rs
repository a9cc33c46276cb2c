//! The rules the catalogue, the create and the views share: which Packs a
//! caller sees, whether a new session may start from a Pack, and a Pack's
//! GPU range for a caller's policy.

use medforge_crds::policy::SessionPolicy;
use medforge_crds::{Exposure, Pack, PackSpec};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::error::FieldError;
use crate::tokens::Principal;
use crate::validate;

/// Whether `principal` may have sessions of `exposure`: everyone external
/// ones; internal ones need the permission (or an admin).
pub fn may_use_exposure(principal: &Principal, exposure: Exposure) -> bool {
    exposure == Exposure::External || principal.user.can_use_internal || principal.is_admin()
}

/// Whether `principal` sees `pack` in `GET /api/v2/packs`: admins see every
/// Pack; anyone else those that take new sessions (not deprecated, with a
/// name a create body can give) on an exposure they may use.
pub fn listed_for(pack: &Pack, principal: &Principal) -> bool {
    if principal.is_admin() {
        return true;
    }
    let name = pack.metadata.name.as_deref().unwrap_or_default();
    !pack.spec.deprecated
        && validate::PACK_NAME.matches(name)
        && pack
            .spec
            .offered()
            .into_iter()
            .any(|e| may_use_exposure(principal, e))
}

/// The Pack a new session of `exposure` may start from, or the error on
/// `pack` saying why not: no Pack of that name, a deprecated one, or one
/// that does not offer the exposure. (Running sessions of a deprecated Pack
/// stop and resume as before: only new ones are refused.)
pub fn may_start_new<'a>(
    name: &str,
    pack: Option<&'a Pack>,
    exposure: Exposure,
) -> Result<&'a Pack, FieldError> {
    let Some(pack) = pack else {
        return Err(FieldError::new(
            "pack",
            format!("no Pack is named `{name}`; GET /api/v2/packs lists the Packs you may use"),
        ));
    };
    if pack.spec.deprecated {
        return Err(FieldError::new(
            "pack",
            format!(
                "Pack `{name}` is deprecated: it takes no new sessions (its sessions run and \
                 resume as before); choose another from GET /api/v2/packs"
            ),
        ));
    }
    if !pack.spec.offers(exposure) {
        let offered: Vec<&str> = pack.spec.offered().iter().map(|e| e.as_str()).collect();
        return Err(FieldError::new(
            "pack",
            format!(
                "Pack `{name}` does not offer {} sessions (it offers: {})",
                exposure.as_str(),
                offered.join(", ")
            ),
        ));
    }
    Ok(pack)
}

/// The GPU counts a session of a Pack may ask for, and what it gets when it
/// names none, under one caller's policy.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq, JsonSchema)]
#[schemars(rename = "PackGpus")]
pub struct GpuRange {
    /// The least: the Pack's `minima.gpus`, else 0.
    pub min: u32,
    /// The most: the lower of the Pack's `maxima.gpus` and the policy's
    /// maximum (the account's own, where an admin set one). Below `min`,
    /// no create can succeed.
    pub max: u32,
    /// What a create without `gpus` gets: the Pack's
    /// `session_defaults.gpus`, else the policy's default, lowered to
    /// `max` and raised to `min`.
    pub default: u32,
}

/// The GPU range of `pack` (none: the policy's alone) under `policy`.
pub fn gpu_range(pack: Option<&PackSpec>, policy: &SessionPolicy) -> GpuRange {
    let min = pack.map_or(0, PackSpec::min_gpus);
    let max = pack
        .and_then(PackSpec::max_gpus)
        .map_or(policy.maxima.gpus, |m| m.min(policy.maxima.gpus));
    let default = pack
        .and_then(|p| p.session_defaults.as_ref()?.gpus)
        .unwrap_or(policy.defaults.gpus)
        .min(max)
        .max(min);
    GpuRange { min, max, default }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pack(spec: serde_json::Value) -> Pack {
        let mut spec = spec;
        spec["image"] = format!("sha256:{}", "a".repeat(64)).into();
        Pack::new("p", serde_json::from_value(spec).unwrap())
    }

    #[test]
    fn a_range_takes_the_packs_bounds_within_the_policy() {
        let policy = SessionPolicy::default(); // default 1, maximum 8
        assert_eq!(
            gpu_range(None, &policy),
            GpuRange {
                min: 0,
                max: 8,
                default: 1
            }
        );
        let p = pack(serde_json::json!({"minima": {"gpus": 2}, "maxima": {"gpus": 4}}));
        assert_eq!(
            gpu_range(Some(&p.spec), &policy),
            GpuRange {
                min: 2,
                max: 4,
                default: 2
            },
            "the default is raised to the minimum"
        );
        let p = pack(serde_json::json!({"maxima": {"gpus": 0}, "sessionDefaults": {"gpus": 2}}));
        assert_eq!(gpu_range(Some(&p.spec), &policy).default, 0);
        let p = pack(serde_json::json!({"maxima": {"gpus": 99}}));
        assert_eq!(gpu_range(Some(&p.spec), &policy).max, 8);
    }

    #[test]
    fn new_sessions_need_a_pack_that_exists_takes_them_and_offers_the_exposure() {
        let any = pack(serde_json::json!({}));
        assert!(may_start_new("p", Some(&any), Exposure::Internal).is_ok());
        let e = may_start_new("nope", None, Exposure::External).unwrap_err();
        assert_eq!(e.field, "pack");
        assert!(e.message.contains("`nope`"), "{e:?}");
        let old = pack(serde_json::json!({"deprecated": true}));
        let e = may_start_new("p", Some(&old), Exposure::External).unwrap_err();
        assert!(e.message.contains("deprecated"), "{e:?}");
        let inside = pack(serde_json::json!({"exposures": ["internal"]}));
        let e = may_start_new("p", Some(&inside), Exposure::External).unwrap_err();
        assert!(
            e.message
                .contains("does not offer external sessions (it offers: internal)"),
            "{e:?}"
        );
    }
}
