//! The password file (`PGPASSFILE`, else `~/.pgpass`) for the money transactions' pool, read as
//! sqlx reads it for the other pool when the URL and `PGPASSWORD` give no password: lines
//! `host:port:database:user:password`, `*` matching anything, `\` escaping `:` and `\`, and a
//! file others can read ignored.

use std::io::BufRead;

/// The password the file gives for this connection, if any.
pub fn password(host: &str, port: u16, database: &str, user: &str) -> Option<String> {
    let from = |path: std::path::PathBuf| read(&path, host, port, database, user);
    if let Some(path) = std::env::var_os("PGPASSFILE") {
        if let Some(password) = from(path.into()) {
            return Some(password);
        }
    }
    from(std::path::PathBuf::from(std::env::var_os("HOME")?).join(".pgpass"))
}

fn read(path: &std::path::Path, host: &str, port: u16, db: &str, user: &str) -> Option<String> {
    use std::os::unix::fs::PermissionsExt;
    let file = std::fs::File::open(path).ok()?;
    if file.metadata().ok()?.permissions().mode() & 0o77 != 0 {
        tracing::warn!(path = %path.display(), "ignoring a password file others can read");
        return None;
    }
    let port = port.to_string();
    std::io::BufReader::new(file)
        .lines()
        .map_while(Result::ok)
        .find_map(|line| matching(&line, [host, &port, db, user]))
}

/// The password of `line` when its first four fields match `wanted`.
fn matching(line: &str, wanted: [&str; 4]) -> Option<String> {
    if line.trim_start().starts_with('#') || line.trim().is_empty() {
        return None;
    }
    let mut fields = vec![String::new()];
    let mut chars = line.trim_end_matches(['\r', '\n']).chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => fields.last_mut()?.extend(chars.next()),
            ':' if fields.len() < 5 => fields.push(String::new()),
            c => fields.last_mut()?.push(c),
        }
    }
    let password = fields.pop().filter(|_| fields.len() == 4)?;
    wanted
        .iter()
        .zip(&fields)
        .all(|(want, field)| field == "*" || field == want)
        .then_some(password)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_match_exactly_or_by_star_and_escapes_are_undone() {
        let want = ["db.example", "5432", "aex", "app"];
        assert_eq!(
            matching("db.example:5432:aex:app:s3cret", want).as_deref(),
            Some("s3cret")
        );
        assert_eq!(
            matching("*:*:*:app:a\\:b\\\\c", want).as_deref(),
            Some("a:b\\c")
        );
        assert_eq!(matching("db.example:5433:aex:app:x", want), None);
        assert_eq!(matching("# db.example:5432:aex:app:x", want), None);
        assert_eq!(matching("db.example:5432:aex", want), None);
    }
}
