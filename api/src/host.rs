//! Strict parsing of session hosts: `s-<slug>.<domain>` where the domain is the
//! external domain, the internal domain or the base domain (an alias of the
//! external one). Case-insensitive; a port and one trailing dot are accepted;
//! anything else (extra labels, IP literals, odd characters, a wrong slug) is not
//! a session host.

use medforge_crds::Exposure;

use crate::config::{ApiConfig, normalize_domain};

/// Length of a slug.
pub const SLUG_LEN: usize = medforge_crds::slug::LEN;

/// A parsed session host.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SessionHost {
    /// The slug, lower case.
    pub slug: [u8; SLUG_LEN],
    /// The exposure the host's domain serves.
    pub exposure: Exposure,
}

impl SessionHost {
    /// The slug as a string.
    pub fn slug(&self) -> &str {
        // Only [a-z0-9] are ever stored.
        std::str::from_utf8(&self.slug).unwrap_or_default()
    }
}

/// Knows the configured domains.
#[derive(Clone, Debug)]
pub struct HostParser {
    base: String,
    external: String,
    internal: String,
}

/// Whether a string is a valid slug: 8 characters of `[a-z0-9]`.
pub use medforge_crds::slug::is_valid as is_valid_slug;

impl HostParser {
    /// A parser for the configured domains.
    pub fn new(config: &ApiConfig) -> Self {
        Self::from_domains(
            &config.domain,
            &config.external_domain,
            &config.internal_domain,
        )
    }

    /// A parser for explicit domains.
    pub fn from_domains(base: &str, external: &str, internal: &str) -> Self {
        Self {
            base: normalize_domain(base),
            external: normalize_domain(external),
            internal: normalize_domain(internal),
        }
    }

    /// The host of a session on its exposure's domain.
    pub fn host_for(&self, slug: &str, exposure: Exposure) -> String {
        match exposure {
            Exposure::External => format!("s-{slug}.{}", self.external),
            Exposure::Internal => format!("s-{slug}.{}", self.internal),
        }
    }

    /// Parses a `Host` header value; `None` when it is not a session host.
    pub fn parse(&self, host: &str) -> Option<SessionHost> {
        if host.is_empty() || host.len() > 300 || !host.is_ascii() {
            return None;
        }
        let host = strip_port(host)?;
        let host = host.strip_suffix('.').unwrap_or(host);
        // "s-" + slug + "." + domain
        let (label, domain) = host.split_once('.')?;
        if label.len() != 2 + SLUG_LEN || !label[..2].eq_ignore_ascii_case("s-") {
            return None;
        }
        let mut slug = [0u8; SLUG_LEN];
        for (dst, b) in slug.iter_mut().zip(label[2..].bytes()) {
            let b = b.to_ascii_lowercase();
            if !(b.is_ascii_lowercase() || b.is_ascii_digit()) {
                return None;
            }
            *dst = b;
        }
        let exposure = if domain.eq_ignore_ascii_case(&self.external)
            || domain.eq_ignore_ascii_case(&self.base)
        {
            Exposure::External
        } else if domain.eq_ignore_ascii_case(&self.internal) {
            Exposure::Internal
        } else {
            return None;
        };
        Some(SessionHost { slug, exposure })
    }
}

/// Removes a `:port` suffix (1 to 5 digits, at most 65535). IPv6 literals are refused.
fn strip_port(host: &str) -> Option<&str> {
    match host.rsplit_once(':') {
        None => Some(host),
        Some((name, port)) => {
            let valid_port = !port.is_empty()
                && port.len() <= 5
                && port.bytes().all(|b| b.is_ascii_digit())
                && port.parse::<u32>().is_ok_and(|p| p <= 65535);
            (valid_port && !name.contains(':')).then_some(name)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn parser() -> HostParser {
        HostParser::from_domains(
            "medforge.example.org",
            "external.medforge.example.org",
            "internal.medforge.example.org",
        )
    }

    fn ok(host: &str) -> Option<(String, Exposure)> {
        parser()
            .parse(host)
            .map(|h| (h.slug().to_owned(), h.exposure))
    }

    #[test]
    fn accepts_session_hosts_on_each_domain() {
        let ext = Some(("abcd1234".to_owned(), Exposure::External));
        let int = Some(("abcd1234".to_owned(), Exposure::Internal));
        assert_eq!(ok("s-abcd1234.external.medforge.example.org"), ext);
        assert_eq!(ok("s-abcd1234.medforge.example.org"), ext);
        assert_eq!(ok("s-abcd1234.internal.medforge.example.org"), int);
        assert_eq!(ok("S-ABCD1234.External.MedForge.Example.Org"), ext);
        assert_eq!(ok("s-abcd1234.external.medforge.example.org:443"), ext);
        assert_eq!(ok("s-abcd1234.external.medforge.example.org.:8443"), ext);
        assert_eq!(ok("s-abcd1234.internal.medforge.example.org."), int);
    }

    #[test]
    fn refuses_everything_else() {
        for host in [
            "",
            "medforge.example.org",
            "api.medforge.example.org",
            "s-abcd123.medforge.example.org",
            "s-abcd12345.medforge.example.org",
            "s-abcd_123.medforge.example.org",
            "s-abcd1234.other.example.org",
            "s-abcd1234.medforge.example.org.evil.com",
            "x.s-abcd1234.medforge.example.org",
            "s-abcd1234.x.medforge.example.org",
            "s-abcd1234.medforge.example.org..",
            "s-abcd1234.medforge.example.org:",
            "s-abcd1234.medforge.example.org:99999",
            "s-abcd1234.medforge.example.org:80:80",
            "s-abcd1234.medforge.example.org:+80",
            "[::1]:443",
            "s-abcd1234.medforge.example.org\0",
            "s-abcd1234.medförge.example.org",
            "t-abcd1234.medforge.example.org",
            "s_abcd1234.medforge.example.org",
        ] {
            assert_eq!(ok(host), None, "{host:?}");
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

        #[test]
        fn never_panics(host in "\\PC{0,80}") {
            let _ = parser().parse(&host);
        }

        #[test]
        fn never_panics_near_valid_hosts(
            prefix in "[sS]-?[a-zA-Z0-9_.:-]{0,12}",
            rest in "(\\.(medforge|external|internal|example|org|x|)){0,5}\\.?(:[0-9]{0,6})?",
        ) {
            let _ = parser().parse(&format!("{prefix}{rest}"));
        }

        #[test]
        fn every_valid_host_round_trips(
            slug in "[a-z0-9]{8}",
            upper in any::<bool>(),
            dot in any::<bool>(),
            port in proptest::option::of(0u16..),
            internal in any::<bool>(),
        ) {
            let exposure = if internal { Exposure::Internal } else { Exposure::External };
            let mut host = parser().host_for(&slug, exposure);
            if upper { host = host.to_ascii_uppercase(); }
            if dot { host.push('.'); }
            if let Some(p) = port { host.push_str(&format!(":{p}")); }
            let parsed = parser().parse(&host).expect("valid host");
            prop_assert_eq!(parsed.slug(), slug.as_str());
            prop_assert_eq!(parsed.exposure, exposure);
        }

        #[test]
        fn a_parsed_slug_is_always_valid(host in "s-[a-zA-Z0-9]{6,10}\\.(external\\.)?medforge\\.example\\.org") {
            if let Some(parsed) = parser().parse(&host) {
                prop_assert!(is_valid_slug(parsed.slug()));
            }
        }
    }
}
