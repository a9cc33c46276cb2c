//! Content negotiation: which media type an answer is written in, from the
//! request's `Accept` header.

use crate::protobuf;

/// The media type of an answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    Json,
    Protobuf,
}

/// Chooses the media type of the answer as kube-apiserver does: the media
/// ranges of `Accept` in the client's order of preference (by `q`, then as
/// listed; `q=0` is not acceptable), the first one this server can write for
/// the kind. JSON for `application/json`, `application/*` and `*/*` (with the
/// `;as=Table` and `;as=PartialObjectMetadata` conversions, JSON only here);
/// protobuf for a plain object, list or Status of a built-in kind. Returns
/// the chosen range, or `None` when nothing acceptable can be written.
pub fn negotiate(accept: Option<&str>, builtin: bool) -> Option<(Output, String)> {
    let Some(accept) = accept.map(str::trim).filter(|a| !a.is_empty()) else {
        return Some((Output::Json, String::new()));
    };
    let mut ranges: Vec<(f32, &str)> = accept
        .split(',')
        .map(str::trim)
        .filter(|r| !r.is_empty())
        .filter_map(|r| {
            let q = r
                .split(';')
                .skip(1)
                .filter_map(|p| p.split_once('='))
                .find(|(k, _)| k.trim().eq_ignore_ascii_case("q"))
                .map_or(Some(1.0), |(_, v)| v.trim().parse::<f32>().ok())?;
            (q > 0.0).then_some((q, r))
        })
        .collect();
    // A stable sort: equal preferences keep the client's order.
    ranges.sort_by(|a, b| b.0.total_cmp(&a.0));
    ranges.into_iter().find_map(|(_, range)| {
        let mut parts = range.split(';');
        let media = parts.next().unwrap_or("").trim().to_ascii_lowercase();
        let converts = parts.any(|p| p.trim().starts_with("as="));
        match media.as_str() {
            "application/json" | "application/*" | "*/*" => Some((Output::Json, range.to_string())),
            protobuf::PROTOBUF if builtin && !converts => {
                Some((Output::Protobuf, range.to_string()))
            }
            _ => None,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chosen(accept: Option<&str>, builtin: bool) -> Option<(Output, String)> {
        negotiate(accept, builtin)
    }

    #[test]
    fn negotiation_follows_the_clients_preferences() {
        const PB: &str = "application/vnd.kubernetes.protobuf";
        assert_eq!(chosen(None, true), Some((Output::Json, String::new())));
        assert_eq!(chosen(Some(""), false), Some((Output::Json, String::new())));
        assert_eq!(chosen(Some(PB), true), Some((Output::Protobuf, PB.into())));
        // Custom resources are JSON only.
        assert_eq!(chosen(Some(PB), false), None);
        let both = "application/vnd.kubernetes.protobuf, application/json";
        assert_eq!(chosen(Some(both), true).unwrap().0, Output::Protobuf);
        assert_eq!(chosen(Some(both), false).unwrap().0, Output::Json);
        let json_first = "application/json, application/vnd.kubernetes.protobuf";
        assert_eq!(chosen(Some(json_first), true).unwrap().0, Output::Json);
        // q orders the ranges; q=0 rules one out.
        let q = "application/json;q=0.5, application/vnd.kubernetes.protobuf";
        assert_eq!(chosen(Some(q), true).unwrap().0, Output::Protobuf);
        let q0 = "application/vnd.kubernetes.protobuf;q=0, */*;q=0.1";
        assert_eq!(chosen(Some(q0), true).unwrap().0, Output::Json);
        assert_eq!(chosen(Some("application/json;q=0"), true), None);
        assert_eq!(chosen(Some("text/html"), true), None);
        assert_eq!(chosen(Some("application/*"), true).unwrap().0, Output::Json);
        // Tables are JSON only: the protobuf Table range is passed over.
        let table = "application/vnd.kubernetes.protobuf;as=Table;v=v1;g=meta.k8s.io, \
                     application/json;as=Table;v=v1;g=meta.k8s.io, application/json";
        assert_eq!(
            chosen(Some(table), true),
            Some((
                Output::Json,
                "application/json;as=Table;v=v1;g=meta.k8s.io".into()
            ))
        );
    }
}
