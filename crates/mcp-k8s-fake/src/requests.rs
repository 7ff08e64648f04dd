//! The request log: every HTTP request the fake received, with its query decoded on demand.

use http::Method;

/// One HTTP request the fake received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedRequest {
    /// The HTTP method.
    pub method: Method,
    /// The URL path, e.g. `/api/v1/namespaces/default/pods`.
    pub path: String,
    /// The raw query string, if any.
    pub query: Option<String>,
}

impl RecordedRequest {
    /// The (last) value of a query parameter, percent-decoded.
    pub fn query_param(&self, name: &str) -> Option<String> {
        let query = self.query.as_deref()?;
        let pairs: Vec<(String, String)> = serde_urlencoded_pairs(query);
        pairs
            .into_iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v)
    }
}

/// Decodes `a=b&c=d` with `+` and percent escapes.
fn serde_urlencoded_pairs(query: &str) -> Vec<(String, String)> {
    fn decode(part: &str) -> String {
        let bytes = part.as_bytes();
        let mut out = Vec::with_capacity(bytes.len());
        let mut i = 0;
        while i < bytes.len() {
            match bytes[i] {
                b'+' => out.push(b' '),
                b'%' if i + 2 < bytes.len() => {
                    let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
                    match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                        Some(b) => {
                            out.push(b);
                            i += 2;
                        }
                        None => out.push(b'%'),
                    }
                }
                other => out.push(other),
            }
            i += 1;
        }
        String::from_utf8_lossy(&out).into_owned()
    }
    query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (decode(k), decode(v))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_params_are_decoded() {
        let request = RecordedRequest {
            method: Method::GET,
            path: "/api/v1/pods".to_owned(),
            query: Some("&labelSelector=app%3Dweb%2Ctier+in+%28a%29&limit=2&bad=%zz".to_owned()),
        };
        assert_eq!(
            request.query_param("labelSelector").as_deref(),
            Some("app=web,tier in (a)")
        );
        assert_eq!(request.query_param("limit").as_deref(), Some("2"));
        assert_eq!(request.query_param("bad").as_deref(), Some("%zz"));
        assert_eq!(request.query_param("missing"), None);
    }
}
