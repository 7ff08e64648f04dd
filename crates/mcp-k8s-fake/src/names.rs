//! Name, label and identifier rules of the Kubernetes API (DNS-1123, DNS-1035, qualified names),
//! plus the random parts the apiserver invents (generateName suffixes, uids).

/// Alphabet of `generateName` suffixes: the apiserver avoids vowels and easily confused characters.
const SUFFIX_ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
/// Length of the random suffix appended to `metadata.generateName`.
pub(crate) const GENERATED_SUFFIX_LEN: usize = 5;
/// Longest name a DNS-1123 label or DNS-1035 label may have.
pub(crate) const DNS1123_LABEL_MAX: usize = 63;
/// Longest name a DNS-1123 subdomain may have.
pub(crate) const DNS1123_SUBDOMAIN_MAX: usize = 253;

/// Returns `prefix` followed by a random 5-character suffix, truncating the prefix so that the
/// result stays within a 63-character label like the apiserver does.
pub(crate) fn generate_name(prefix: &str) -> String {
    let keep = DNS1123_LABEL_MAX - GENERATED_SUFFIX_LEN;
    let mut name: String = prefix.chars().take(keep).collect();
    let random = uuid::Uuid::new_v4();
    for byte in random.as_bytes().iter().take(GENERATED_SUFFIX_LEN) {
        let index = usize::from(*byte) % SUFFIX_ALPHABET.len();
        name.push(char::from(SUFFIX_ALPHABET[index]));
    }
    name
}

/// A fresh object uid.
pub(crate) fn new_uid() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// A fresh hex identifier of `len` characters (container ids, image digests).
pub(crate) fn random_hex(len: usize) -> String {
    let mut out = String::with_capacity(len);
    while out.len() < len {
        out.push_str(&uuid::Uuid::new_v4().simple().to_string());
    }
    out.truncate(len);
    out
}

fn is_lower_alnum(c: char) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit()
}

/// Checks one DNS-1123 label; returns the apiserver's error text when invalid.
pub(crate) fn dns1123_label(value: &str) -> Result<(), String> {
    const MSG: &str = "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')";
    if value.len() > DNS1123_LABEL_MAX {
        return Err(format!(
            "must be no more than {DNS1123_LABEL_MAX} characters"
        ));
    }
    if !label_shape(value, is_lower_alnum, |c| is_lower_alnum(c) || c == '-') {
        return Err(MSG.to_owned());
    }
    Ok(())
}

/// Checks a DNS-1123 subdomain (dot-separated labels); returns the apiserver's error text.
pub(crate) fn dns1123_subdomain(value: &str) -> Result<(), String> {
    const MSG: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')";
    if value.len() > DNS1123_SUBDOMAIN_MAX {
        return Err(format!(
            "must be no more than {DNS1123_SUBDOMAIN_MAX} characters"
        ));
    }
    if value.is_empty()
        || !value
            .split('.')
            .all(|part| label_shape(part, is_lower_alnum, |c| is_lower_alnum(c) || c == '-'))
    {
        return Err(MSG.to_owned());
    }
    Ok(())
}

/// Checks a DNS-1035 label (service names: must start with a letter).
pub(crate) fn dns1035_label(value: &str) -> Result<(), String> {
    const MSG: &str = "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  or 'abc-123', regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')";
    if value.len() > DNS1123_LABEL_MAX {
        return Err(format!(
            "must be no more than {DNS1123_LABEL_MAX} characters"
        ));
    }
    let starts_with_letter = value.chars().next().is_some_and(|c| c.is_ascii_lowercase());
    if !starts_with_letter || !label_shape(value, is_lower_alnum, |c| is_lower_alnum(c) || c == '-')
    {
        return Err(MSG.to_owned());
    }
    Ok(())
}

/// `true` when `value` is non-empty, starts and ends with `edge` characters and only has
/// `inner` characters in between.
/// `path.IsValidPathSegmentName`: the minimal rule for RBAC object names (any text that can
/// be one URL path segment).
pub(crate) fn path_segment_name(value: &str) -> Result<(), String> {
    for bad in [".", ".."] {
        if value == bad {
            return Err(format!("may not be '{bad}'"));
        }
    }
    for bad in ['/', '%'] {
        if value.contains(bad) {
            return Err(format!("may not contain '{bad}'"));
        }
    }
    Ok(())
}

fn label_shape(value: &str, edge: impl Fn(char) -> bool, inner: impl Fn(char) -> bool) -> bool {
    let (Some(first), Some(last)) = (value.chars().next(), value.chars().last()) else {
        return false;
    };
    edge(first) && edge(last) && value.chars().all(inner)
}

fn is_name_part(value: &str) -> bool {
    label_shape(
        value,
        |c| c.is_ascii_alphanumeric(),
        |c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'),
    )
}

/// Checks a qualified name such as a label or annotation key (`[prefix/]name`).
pub(crate) fn qualified_name(value: &str) -> Result<(), String> {
    const NAME_MSG: &str = "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')";
    let (prefix, name) = match value.split_once('/') {
        Some((prefix, name)) => (Some(prefix), name),
        None => (None, value),
    };
    if let Some(prefix) = prefix {
        if prefix.is_empty() {
            return Err("prefix part must be non-empty".to_owned());
        }
        if let Err(message) = dns1123_subdomain(prefix) {
            return Err(format!("prefix part {message}"));
        }
    }
    if name.is_empty() {
        return Err("name part must be non-empty".to_owned());
    }
    if name.len() > DNS1123_LABEL_MAX {
        return Err(format!(
            "name part must be no more than {DNS1123_LABEL_MAX} characters"
        ));
    }
    if !is_name_part(name) {
        return Err(NAME_MSG.to_owned());
    }
    Ok(())
}

/// Checks a label value (may be empty).
pub(crate) fn label_value(value: &str) -> Result<(), String> {
    const MSG: &str = "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')";
    if value.len() > DNS1123_LABEL_MAX {
        return Err(format!(
            "must be no more than {DNS1123_LABEL_MAX} characters"
        ));
    }
    if !value.is_empty() && !is_name_part(value) {
        return Err(MSG.to_owned());
    }
    Ok(())
}

/// Checks an IANA service name (named ports): at most 15 lower-case alphanumerics or '-', at
/// least one letter, no leading, trailing or doubled '-'.
pub(crate) fn iana_svc_name(value: &str) -> Result<(), String> {
    if value.is_empty() || value.len() > 15 {
        return Err("must be no more than 15 characters".to_owned());
    }
    if !value.chars().all(|c| is_lower_alnum(c) || c == '-') {
        return Err(
            "must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)".to_owned(),
        );
    }
    if value.contains("--") {
        return Err("must not contain consecutive hyphens".to_owned());
    }
    if !value.chars().any(|c| c.is_ascii_lowercase()) {
        return Err("must contain at least one letter (a-z)".to_owned());
    }
    if value.starts_with('-') || value.ends_with('-') {
        return Err("must not begin or end with a hyphen".to_owned());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_names_have_a_five_char_suffix_from_the_alphabet() {
        let name = generate_name("web-");
        assert_eq!(name.len(), 9);
        assert!(name.starts_with("web-"));
        assert!(
            name[4..].bytes().all(|b| SUFFIX_ALPHABET.contains(&b)),
            "{name}"
        );
        assert_ne!(generate_name("web-"), generate_name("web-"));
        let long = generate_name(&"a".repeat(100));
        assert_eq!(long.len(), 63);
    }

    #[test]
    fn dns_rules() {
        assert!(dns1123_label("abc-1").is_ok());
        assert!(dns1123_label("Abc").is_err());
        assert!(dns1123_label("-abc").is_err());
        assert!(dns1123_label("abc-").is_err());
        assert!(dns1123_label(&"a".repeat(64)).is_err());
        assert!(dns1123_subdomain("a.b-c.d").is_ok());
        assert!(dns1123_subdomain("a..b").is_err());
        assert!(dns1123_subdomain("").is_err());
        assert!(dns1123_subdomain("bad_name").is_err());
        assert!(dns1035_label("svc-1").is_ok());
        assert!(dns1035_label("1svc").is_err());
    }

    #[test]
    fn label_rules() {
        assert!(qualified_name("app").is_ok());
        assert!(qualified_name("app.kubernetes.io/name").is_ok());
        assert!(qualified_name("Bad Key").is_err());
        assert!(qualified_name("/x").is_err());
        assert!(qualified_name("UPPER.example/x").is_err());
        assert!(label_value("").is_ok());
        assert!(label_value("My_value.1").is_ok());
        assert!(label_value("-x").is_err());
        assert!(iana_svc_name("http").is_ok());
        assert!(iana_svc_name("80").is_err());
        assert!(iana_svc_name("a--b").is_err());
    }
}
