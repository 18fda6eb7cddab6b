//! Database URLs as `accrue` prints and derives them: a password redacted
//! for a message, another database on the same server.

/// `url` with any password (in its user info or a `password` query
/// parameter) replaced by `***`, for printing.
pub fn redact(url: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (url, None),
    };
    let base = match base.find("://").map(|i| i + 3) {
        Some(scheme_end) => {
            let rest = &base[scheme_end..];
            let authority = &rest[..rest.find('/').unwrap_or(rest.len())];
            match authority.rfind('@').and_then(|at| authority[..at].find(':').map(|colon| (colon, at))) {
                Some((colon, at)) => format!("{}{}:***{}", &base[..scheme_end], &rest[..colon], &rest[at..]),
                None => base.to_string(),
            }
        }
        None => base.to_string(),
    };
    let Some(query) = query else { return base };
    let query = query
        .split('&')
        .map(|pair| if pair.starts_with("password=") { "password=***" } else { pair })
        .collect::<Vec<_>>()
        .join("&");
    format!("{base}?{query}")
}

/// `url` with its database (the path) replaced by `name`; scheme, user
/// info, host, port and query are kept.
/// `postgres://u:p@db:5432/postgres?sslmode=require` becomes
/// `postgres://u:p@db:5432/<name>?sslmode=require`.
pub fn with_database(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (url, None),
    };
    let authority_start = base.find("://").map_or(0, |i| i + 3);
    let path_start = base[authority_start..].find('/').map_or(base.len(), |i| authority_start + i);
    let mut out = format!("{}/{name}", &base[..path_start]);
    if let Some(query) = query {
        out.push('?');
        out.push_str(query);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_the_database_of_a_url() {
        assert_eq!(with_database("postgres://u:p@h:5432/postgres", "b"), "postgres://u:p@h:5432/b");
        assert_eq!(with_database("postgres://h:5432?sslmode=require", "b"), "postgres://h:5432/b?sslmode=require");
        assert_eq!(with_database("postgres://h/x?a=1&b=2", "b"), "postgres://h/b?a=1&b=2");
    }

    #[test]
    fn redacts_passwords() {
        assert_eq!(redact("postgres://u:secret@h:5432/db"), "postgres://u:***@h:5432/db");
        assert_eq!(redact("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(redact("postgres://h/db"), "postgres://h/db");
        assert_eq!(redact("postgres://u:p%40ss@h/db?sslmode=require"), "postgres://u:***@h/db?sslmode=require");
        assert_eq!(redact("postgres:///db?user=u&password=secret&x=1"), "postgres:///db?user=u&password=***&x=1");
    }
}
