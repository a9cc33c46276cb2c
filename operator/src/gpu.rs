//! GPU inventory: what GPUs a node has and whether they are healthy.
//!
//! Two sources: NVML (through nvml-wrapper, which loads `libnvidia-ml.so.1` at
//! run time, so this compiles everywhere) on real GPU hosts, and a static
//! inventory from configuration on hosts without NVIDIA GPUs (tests, CI).

use std::sync::Mutex;

use medforge_crds::{GpuHealth, GpuInfo};

/// Why the inventory could not be read.
#[derive(Debug, thiserror::Error)]
pub enum GpuError {
    #[error(
        "NVML is not available ({cause}): install the NVIDIA driver (it provides libnvidia-ml.so.1), \
         or run the node agent with a static GPU inventory (--gpus static:N)"
    )]
    NvmlUnavailable { cause: String },
    #[error("NVML failed while {action}: {cause}")]
    Nvml { action: String, cause: String },
    #[error("invalid static GPU inventory {spec:?}: {why}")]
    InvalidStatic { spec: String, why: String },
}

/// A source of GPU facts for one node.
pub trait GpuInventory: Send + Sync {
    /// The GPUs of the node, sorted by index.
    fn gpus(&self) -> Result<Vec<GpuInfo>, GpuError>;
    /// Where the facts come from (`nvml` or `static`), for status and logs.
    fn source(&self) -> &'static str;
}

/// A fixed list of GPUs, for hosts without NVIDIA hardware.
#[derive(Debug, Clone, PartialEq)]
pub struct StaticInventory {
    gpus: Vec<GpuInfo>,
}

impl StaticInventory {
    pub fn new(mut gpus: Vec<GpuInfo>) -> Self {
        gpus.sort_by_key(|g| g.index);
        StaticInventory { gpus }
    }

    /// `count` identical healthy GPUs with UUIDs `GPU-static-<node>-<index>`.
    pub fn uniform(node: &str, count: u32) -> Self {
        let safe: String = node
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
            .collect();
        StaticInventory::new(
            (0..count)
                .map(|index| GpuInfo {
                    index,
                    uuid: format!("GPU-static-{safe}-{index}"),
                    model: "Simulated GPU (static inventory)".to_string(),
                    memory_bytes: 80 * 1024 * 1024 * 1024,
                    health: GpuHealth::Healthy,
                })
                .collect(),
        )
    }

    /// Parses the `--gpus` setting: `static:N` (N uniform GPUs), `none`, or a
    /// JSON list of GpuInfo objects (`[{"index":0,"uuid":"GPU-…",…}]`).
    pub fn parse(node: &str, spec: &str) -> Result<Self, GpuError> {
        let invalid = |why: String| GpuError::InvalidStatic {
            spec: spec.to_string(),
            why,
        };
        let spec_t = spec.trim();
        if spec_t == "none" {
            return Ok(StaticInventory::new(Vec::new()));
        }
        if let Some(n) = spec_t.strip_prefix("static:") {
            let count: u32 = n
                .parse()
                .map_err(|_| invalid(format!("{n:?} is not a GPU count")))?;
            if count > 64 {
                return Err(invalid(format!(
                    "{count} GPUs is more than a node can hold (64)"
                )));
            }
            return Ok(StaticInventory::uniform(node, count));
        }
        if spec_t.starts_with('[') {
            let gpus: Vec<GpuInfo> =
                serde_json::from_str(spec_t).map_err(|e| invalid(e.to_string()))?;
            let mut seen = std::collections::HashSet::new();
            for g in &gpus {
                if !g.uuid.starts_with("GPU-") {
                    return Err(invalid(format!("uuid {:?} must start with GPU-", g.uuid)));
                }
                if !seen.insert((g.index, g.uuid.clone())) {
                    return Err(invalid(format!("GPU {} listed twice", g.uuid)));
                }
            }
            return Ok(StaticInventory::new(gpus));
        }
        Err(invalid(
            "expected `static:N`, `none` or a JSON list of GPUs".to_string(),
        ))
    }
}

impl GpuInventory for StaticInventory {
    fn gpus(&self) -> Result<Vec<GpuInfo>, GpuError> {
        Ok(self.gpus.clone())
    }
    fn source(&self) -> &'static str {
        "static"
    }
}

/// The facts NVML reports of one device, before mapping to [`GpuInfo`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NvmlDeviceFacts {
    pub index: u32,
    pub uuid: Result<String, String>,
    pub name: Result<String, String>,
    pub memory_total: Result<u64, String>,
    /// Pages waiting to be retired after ECC errors: the GPU needs a reset.
    pub pages_pending_retirement: Result<bool, String>,
}

/// Maps what NVML said of a device to its status entry. A device whose
/// identity or memory cannot be read, or with pages pending retirement, is
/// unhealthy; a missing retirement query (consumer GPUs lack it) is not.
pub fn map_nvml_device(facts: &NvmlDeviceFacts) -> GpuInfo {
    let uuid = match &facts.uuid {
        Ok(u) if u.starts_with("GPU-") => u.clone(),
        Ok(u) => format!("GPU-{u}"),
        Err(_) => format!("GPU-unknown-{}", facts.index),
    };
    let healthy = facts.uuid.is_ok()
        && facts.name.is_ok()
        && facts.memory_total.is_ok()
        && !matches!(facts.pages_pending_retirement, Ok(true));
    GpuInfo {
        index: facts.index,
        uuid,
        model: facts.name.clone().unwrap_or_default(),
        memory_bytes: *facts.memory_total.as_ref().unwrap_or(&0),
        health: if healthy {
            GpuHealth::Healthy
        } else {
            GpuHealth::Unhealthy
        },
    }
}

/// GPUs as NVML reports them.
pub struct NvmlInventory {
    // NVML handles are thread-safe, but Device borrows Nvml; a mutex keeps the
    // queries serial, which NVML prefers anyway.
    nvml: Mutex<nvml_wrapper::Nvml>,
}

impl NvmlInventory {
    /// Loads NVML. Fails with [`GpuError::NvmlUnavailable`] when the library
    /// or the driver is absent.
    pub fn init() -> Result<Self, GpuError> {
        let nvml = nvml_wrapper::Nvml::init().map_err(|e| GpuError::NvmlUnavailable {
            cause: e.to_string(),
        })?;
        Ok(NvmlInventory {
            nvml: Mutex::new(nvml),
        })
    }

    /// The driver version, for the node's status.
    pub fn driver_version(&self) -> Option<String> {
        self.nvml.lock().ok()?.sys_driver_version().ok()
    }
}

impl GpuInventory for NvmlInventory {
    fn gpus(&self) -> Result<Vec<GpuInfo>, GpuError> {
        let nvml = self.nvml.lock().map_err(|_| GpuError::Nvml {
            action: "locking the NVML handle".into(),
            cause: "a previous query panicked".into(),
        })?;
        let count = nvml.device_count().map_err(|e| GpuError::Nvml {
            action: "counting devices".into(),
            cause: e.to_string(),
        })?;
        let mut out = Vec::with_capacity(count as usize);
        for index in 0..count {
            let facts = match nvml.device_by_index(index) {
                Ok(dev) => NvmlDeviceFacts {
                    index,
                    uuid: dev.uuid().map_err(|e| e.to_string()),
                    name: dev.name().map_err(|e| e.to_string()),
                    memory_total: dev
                        .memory_info()
                        .map(|m| m.total)
                        .map_err(|e| e.to_string()),
                    pages_pending_retirement: dev
                        .are_pages_pending_retired()
                        .map_err(|e| e.to_string()),
                },
                Err(e) => NvmlDeviceFacts {
                    index,
                    uuid: Err(e.to_string()),
                    name: Err(e.to_string()),
                    memory_total: Err(e.to_string()),
                    pages_pending_retirement: Err(e.to_string()),
                },
            };
            out.push(map_nvml_device(&facts));
        }
        Ok(out)
    }
    fn source(&self) -> &'static str {
        "nvml"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(index: u32) -> NvmlDeviceFacts {
        NvmlDeviceFacts {
            index,
            uuid: Ok("GPU-2b6f7e3a-0000-1111-2222-333344445555".into()),
            name: Ok("NVIDIA H100 80GB HBM3".into()),
            memory_total: Ok(85_520_809_984),
            pages_pending_retirement: Ok(false),
        }
    }

    #[test]
    fn healthy_nvml_device_maps_every_field() {
        let g = map_nvml_device(&facts(3));
        assert_eq!(g.index, 3);
        assert_eq!(g.uuid, "GPU-2b6f7e3a-0000-1111-2222-333344445555");
        assert_eq!(g.model, "NVIDIA H100 80GB HBM3");
        assert_eq!(g.memory_bytes, 85_520_809_984);
        assert_eq!(g.health, GpuHealth::Healthy);
    }

    #[test]
    fn failing_or_retiring_devices_are_unhealthy() {
        let mut f = facts(0);
        f.pages_pending_retirement = Ok(true);
        assert_eq!(map_nvml_device(&f).health, GpuHealth::Unhealthy);

        let mut f = facts(1);
        f.memory_total = Err("GPU is lost".into());
        let g = map_nvml_device(&f);
        assert_eq!(g.health, GpuHealth::Unhealthy);
        assert_eq!(g.memory_bytes, 0);

        let mut f = facts(2);
        f.uuid = Err("Unknown".into());
        assert_eq!(map_nvml_device(&f).uuid, "GPU-unknown-2");

        // Consumer GPUs do not support page retirement queries: still healthy.
        let mut f = facts(4);
        f.pages_pending_retirement = Err("NotSupported".into());
        assert_eq!(map_nvml_device(&f).health, GpuHealth::Healthy);
    }

    #[test]
    fn static_inventory_specs() {
        let inv = StaticInventory::parse("node-a", "static:3").unwrap();
        let gpus = inv.gpus().unwrap();
        assert_eq!(gpus.len(), 3);
        assert_eq!(gpus[2].uuid, "GPU-static-node-a-2");
        assert!(gpus.iter().all(|g| g.health == GpuHealth::Healthy));
        assert!(
            StaticInventory::parse("n", "none")
                .unwrap()
                .gpus()
                .unwrap()
                .is_empty()
        );

        let json = r#"[{"index":1,"uuid":"GPU-b","model":"X","memoryBytes":1,"health":"Unhealthy"},{"index":0,"uuid":"GPU-a"}]"#;
        let gpus = StaticInventory::parse("n", json).unwrap().gpus().unwrap();
        assert_eq!(gpus[0].uuid, "GPU-a");
        assert_eq!(gpus[1].health, GpuHealth::Unhealthy);

        for (bad, why) in [
            ("static:x", "not a GPU count"),
            ("static:100", "more than a node can hold"),
            ("4", "expected `static:N`"),
            (r#"[{"index":0,"uuid":"nope"}]"#, "must start with GPU-"),
            (
                r#"[{"index":0,"uuid":"GPU-a"},{"index":0,"uuid":"GPU-a"}]"#,
                "listed twice",
            ),
        ] {
            let e = StaticInventory::parse("n", bad).unwrap_err().to_string();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }

    /// Runs against real NVML where a GPU exists; elsewhere it checks the
    /// error is the clear one and says why it skipped the rest.
    #[test]
    fn nvml_inventory_on_this_host() {
        match NvmlInventory::init() {
            Ok(inv) => {
                let gpus = inv.gpus().expect("NVML loaded but could not list GPUs");
                assert!(!gpus.is_empty(), "NVML loaded but reports no GPU");
                for (i, g) in gpus.iter().enumerate() {
                    assert_eq!(g.index as usize, i);
                    assert!(g.uuid.starts_with("GPU-"));
                    assert!(!g.model.is_empty());
                    assert!(g.memory_bytes > 0);
                }
                println!("NVML reports {} GPU(s): {gpus:?}", gpus.len());
            }
            Err(e) => {
                let msg = e.to_string();
                assert!(msg.contains("NVML is not available"), "{msg}");
                assert!(msg.contains("--gpus static:N"), "{msg}");
                println!("skipped the NVML part: no NVIDIA GPU here ({msg})");
            }
        }
    }
}
