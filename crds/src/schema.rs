//! The patterns the CRDs put on their string fields, for other crates (the api)
//! to check their own stricter patterns against.

/// Kubernetes' own pattern for a resource quantity (`500m`, `2Gi`, `1e3`).
pub const QUANTITY_PATTERN: &str = r"^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$";
/// A Go-style duration as kube-apiserver and kubectl write them (`90s`, `1h30m`).
pub const DURATION_PATTERN: &str = r"^([0-9]+(\.[0-9]+)?(ns|us|ms|s|m|h))+$";
/// A session slug: 8 characters of `[a-z0-9]`.
pub const SLUG_PATTERN: &str = r"^[a-z0-9]{8}$";
/// A GPU UUID as NVML reports it (`GPU-` followed by a UUID) or as the static inventory names it.
pub const GPU_UUID_PATTERN: &str = r"^GPU-[A-Za-z0-9-]+$";
