//! Mapping `/workspace/<file>` request paths onto the workspace directory, safely.

use std::path::{Path, PathBuf};

/// Why a request path was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathError {
    /// Empty, absolute, or containing `.`/`..`/empty components, NUL or a backslash.
    Invalid,
    /// A `%` escape that is not two hex digits, or bytes that are not UTF-8.
    BadEscape,
}

/// Decodes `%XX` escapes.
pub fn percent_decode(s: &str) -> Result<String, PathError> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3).ok_or(PathError::BadEscape)?;
            let hex = std::str::from_utf8(hex).map_err(|_| PathError::BadEscape)?;
            let b = u8::from_str_radix(hex, 16).map_err(|_| PathError::BadEscape)?;
            out.push(b);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| PathError::BadEscape)
}

/// Validates a relative file name taken from the URL (already without the
/// `/workspace/` prefix) and joins it onto `root`.
///
/// Nested names (`a/b.txt`) are allowed; absolute names, `.` and `..`
/// components, empty components, NUL and backslashes are refused, also when
/// they are percent-encoded.
pub fn workspace_path(root: &Path, raw: &str) -> Result<PathBuf, PathError> {
    let rel = percent_decode(raw)?;
    if rel.is_empty() || rel.starts_with('/') || rel.contains('\0') || rel.contains('\\') {
        return Err(PathError::Invalid);
    }
    let mut path = root.to_path_buf();
    for component in rel.split('/') {
        if component.is_empty() || component == "." || component == ".." {
            return Err(PathError::Invalid);
        }
        path.push(component);
    }
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_plain_and_nested_names() {
        let root = Path::new("/workspace");
        assert_eq!(
            workspace_path(root, "hello.txt").unwrap(),
            PathBuf::from("/workspace/hello.txt")
        );
        assert_eq!(
            workspace_path(root, "a/b%20c.txt").unwrap(),
            PathBuf::from("/workspace/a/b c.txt")
        );
        assert_eq!(
            workspace_path(root, "..x").unwrap(),
            PathBuf::from("/workspace/..x")
        );
    }

    #[test]
    fn refuses_traversal_and_absolute_names() {
        let root = Path::new("/workspace");
        for bad in [
            "",
            "/etc/passwd",
            "..",
            "../etc/passwd",
            "a/../../b",
            "a/./b",
            "a//b",
            "a/",
            "%2e%2e/x",
            "%2Fetc%2Fpasswd",
            "a%00b",
            "a\\b",
        ] {
            assert!(
                workspace_path(root, bad).is_err(),
                "{bad:?} must be refused"
            );
        }
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("a%41%2f").unwrap(), "aA/");
        assert_eq!(percent_decode("%4").unwrap_err(), PathError::BadEscape);
        assert_eq!(percent_decode("%zz").unwrap_err(), PathError::BadEscape);
        assert_eq!(percent_decode("%ff").unwrap_err(), PathError::BadEscape);
    }
}
