//! A cookie jar that stores and sends cookies the way browsers do (RFC
//! 6265bis, "Storage Model" and "Retrieval Model"), for the tests that
//! attack the login cookie from a session host. It models what matters for
//! that: host-only versus `Domain` cookies and domain matching, the default
//! and given `Path` and path matching, `Secure` (only from and to a secure
//! origin), `Max-Age` removal, the `__Secure-` and `__Host-` prefixes (case
//! insensitive, nameless cookies included), replacement by name, domain and
//! path, and the order of the `Cookie` header (longer paths first, then
//! older). Not modelled: the public suffix list, `Expires` dates, SameSite
//! (every request here is same-site, top-level), size limits.

#![allow(dead_code)]

/// One stored cookie.
#[derive(Clone, Debug)]
struct Stored {
    name: String,
    value: String,
    domain: String,
    host_only: bool,
    path: String,
    secure: bool,
    created: u64,
}

/// The jar.
#[derive(Debug, Default)]
pub struct BrowserJar {
    cookies: Vec<Stored>,
    clock: u64,
}

/// Why a `Set-Cookie` was not stored (for the tests' own checks).
#[derive(Debug, PartialEq, Eq)]
pub enum Ignored {
    Empty,
    SecureFromInsecureOrigin,
    DomainDoesNotMatch,
    SecurePrefix,
    HostPrefix,
}

fn default_path(request_path: &str) -> String {
    let path = request_path.split('?').next().unwrap_or("/");
    if !path.starts_with('/') {
        return "/".into();
    }
    match path.rfind('/') {
        Some(0) | None => "/".into(),
        Some(i) => path[..i].into(),
    }
}

fn domain_matches(host: &str, domain: &str) -> bool {
    host == domain
        || (host.len() > domain.len()
            && host.ends_with(domain)
            && host.as_bytes()[host.len() - domain.len() - 1] == b'.')
}

fn path_matches(request_path: &str, cookie_path: &str) -> bool {
    let path = request_path.split('?').next().unwrap_or("/");
    path == cookie_path
        || (path.starts_with(cookie_path)
            && (cookie_path.ends_with('/') || path.as_bytes()[cookie_path.len()] == b'/'))
}

fn starts_with_ignore_case(s: &str, prefix: &str) -> bool {
    s.len() >= prefix.len() && s[..prefix.len()].eq_ignore_ascii_case(prefix)
}

impl BrowserJar {
    pub fn new() -> Self {
        Self::default()
    }

    /// Stores one `Set-Cookie` line received from `host` for a request to
    /// `request_path`, over https when `secure_origin`.
    pub fn store(
        &mut self,
        host: &str,
        request_path: &str,
        secure_origin: bool,
        line: &str,
    ) -> Result<(), Ignored> {
        let host = host.to_ascii_lowercase();
        let mut parts = line.split(';');
        let pair = parts.next().unwrap_or_default();
        let (name, value) = match pair.split_once('=') {
            Some((n, v)) => (n.trim(), v.trim()),
            None => ("", pair.trim()),
        };
        if name.is_empty() && value.is_empty() {
            return Err(Ignored::Empty);
        }
        let (mut domain_attr, mut path_attr, mut secure, mut max_age) = (None, None, false, None);
        for attr in parts {
            let (k, v) = match attr.split_once('=') {
                Some((k, v)) => (k.trim(), v.trim()),
                None => (attr.trim(), ""),
            };
            match k.to_ascii_lowercase().as_str() {
                "domain" if !v.is_empty() => {
                    domain_attr = Some(v.trim_start_matches('.').to_ascii_lowercase())
                }
                "path" => path_attr = v.starts_with('/').then(|| v.to_string()),
                "secure" => secure = true,
                "max-age" => max_age = v.parse::<i64>().ok(),
                _ => {}
            }
        }
        if secure && !secure_origin {
            return Err(Ignored::SecureFromInsecureOrigin);
        }
        let (domain, host_only) = match domain_attr {
            Some(d) if !domain_matches(&host, &d) => return Err(Ignored::DomainDoesNotMatch),
            Some(d) => (d, false),
            None => (host.clone(), true),
        };
        let path = path_attr
            .clone()
            .unwrap_or_else(|| default_path(request_path));
        // The prefixes bind a nameless cookie's value too.
        let prefixed = |prefix: &str| {
            starts_with_ignore_case(name, prefix)
                || (name.is_empty() && starts_with_ignore_case(value, prefix))
        };
        if prefixed("__Secure-") && !secure {
            return Err(Ignored::SecurePrefix);
        }
        if prefixed("__Host-") && (!secure || !host_only || path_attr.as_deref() != Some("/")) {
            return Err(Ignored::HostPrefix);
        }
        let same = |c: &Stored| c.name == name && c.domain == domain && c.path == path;
        let created = self
            .cookies
            .iter()
            .find(|c| same(c))
            .map(|c| c.created)
            .unwrap_or_else(|| {
                self.clock += 1;
                self.clock
            });
        self.cookies.retain(|c| !same(c));
        if max_age.is_some_and(|a| a <= 0) {
            return Ok(());
        }
        self.cookies.push(Stored {
            name: name.into(),
            value: value.into(),
            domain,
            host_only,
            path,
            secure,
            created,
        });
        Ok(())
    }

    /// The `Cookie` header a browser sends with a request to `host` and
    /// `request_path`; `None` when no cookie goes.
    pub fn header(&self, host: &str, request_path: &str, secure_origin: bool) -> Option<String> {
        let host = host.to_ascii_lowercase();
        let mut chosen: Vec<&Stored> = self
            .cookies
            .iter()
            .filter(|c| {
                if c.host_only {
                    c.domain == host
                } else {
                    domain_matches(&host, &c.domain)
                }
            })
            .filter(|c| path_matches(request_path, &c.path))
            .filter(|c| !c.secure || secure_origin)
            .collect();
        chosen.sort_by(|a, b| {
            b.path
                .len()
                .cmp(&a.path.len())
                .then(a.created.cmp(&b.created))
        });
        let pairs: Vec<String> = chosen
            .iter()
            .map(|c| {
                if c.name.is_empty() {
                    c.value.clone()
                } else {
                    format!("{}={}", c.name, c.value)
                }
            })
            .collect();
        (!pairs.is_empty()).then(|| pairs.join("; "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn it_stores_and_sends_as_a_browser_does() {
        let mut jar = BrowserJar::new();
        let api = "example.test";
        let session = "s-abc.external.example.test";
        jar.store(
            api,
            "/api/v2/auth/login",
            true,
            "__Host-a=1; Path=/; Secure; HttpOnly",
        )
        .unwrap();
        jar.store(
            api,
            "/api/v2/auth/login",
            true,
            "s=1; Path=/; Secure; Domain=.example.test",
        )
        .unwrap();
        assert_eq!(
            jar.header(api, "/api/v2/me", true).unwrap(),
            "__Host-a=1; s=1"
        );
        assert_eq!(jar.header(session, "/", true).unwrap(), "s=1");
        // A more specific path goes first.
        jar.store(
            session,
            "/x",
            true,
            "s=2; Domain=example.test; Path=/api/v2",
        )
        .unwrap();
        assert_eq!(
            jar.header(api, "/api/v2/me", true).unwrap(),
            "s=2; __Host-a=1; s=1"
        );
        assert_eq!(
            jar.header(api, "/api/v22", true).unwrap(),
            "__Host-a=1; s=1"
        );
        // Prefixes, whatever their case, nameless or not.
        for bad in [
            "__Host-a=3; Domain=example.test; Path=/; Secure",
            "__host-a=3; Path=/; Secure; domain=example.test",
            "__Host-a=3; Path=/api; Secure",
            "__Host-a=3; Path=/",
            "=__Host-a=3; Domain=example.test; Path=/; Secure",
            "__Secure-b=1",
        ] {
            assert!(jar.store(session, "/", true, bad).is_err(), "{bad}");
        }
        // Another site's domain, and Secure over http.
        assert_eq!(
            jar.store(session, "/", true, "c=1; Domain=other.test"),
            Err(Ignored::DomainDoesNotMatch)
        );
        assert_eq!(
            jar.store(session, "/", false, "c=1; Secure"),
            Err(Ignored::SecureFromInsecureOrigin)
        );
        // Max-Age=0 removes; the same name, domain and path replaces.
        jar.store(
            session,
            "/x",
            true,
            "s=9; Domain=example.test; Path=/api/v2",
        )
        .unwrap();
        assert_eq!(
            jar.header(api, "/api/v2/me", true).unwrap(),
            "s=9; __Host-a=1; s=1"
        );
        jar.store(
            session,
            "/x",
            true,
            "s=; Domain=example.test; Path=/api/v2; Max-Age=0",
        )
        .unwrap();
        assert_eq!(
            jar.header(api, "/api/v2/me", true).unwrap(),
            "__Host-a=1; s=1"
        );
        assert_eq!(default_path("/a/b/c?x"), "/a/b");
    }
}
