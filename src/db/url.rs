//! `db_url` parsing: `mysql://user[:password]@host[:port]/database`, with
//! `?socket=/path/to/mysqld.sock` for a unix socket. Percent-escapes are
//! decoded (a password may hold `@` as `%40`). The password never appears
//! in messages: [`DbUrl::redacted`] shows it as `***`.

#[derive(Clone, PartialEq, Eq)]
pub struct DbUrl {
    pub user: String,
    pub password: Option<String>,
    pub host: String,
    pub port: u16,
    pub database: String,
    pub socket: Option<String>,
}

impl std::fmt::Debug for DbUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.redacted())
    }
}

fn decode(s: &str, what: &str) -> Result<String, String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = s
                .get(i + 1..i + 3)
                .ok_or_else(|| format!("bad percent-escape in {what}"))?;
            out.push(
                u8::from_str_radix(hex, 16)
                    .map_err(|_| format!("bad percent-escape '%{hex}' in {what}"))?,
            );
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| format!("{what} is not UTF-8"))
}

impl DbUrl {
    pub const DEFAULT_PORT: u16 = 3306;

    /// Parses a db_url; the error says what is wrong without echoing a password.
    pub fn parse(url: &str) -> Result<DbUrl, String> {
        let rest = url
            .trim()
            .strip_prefix("mysql://")
            .ok_or_else(|| "must start with mysql://".to_owned())?;
        let at = rest
            .rfind('@')
            .ok_or_else(|| "missing user@host".to_owned())?;
        let (userinfo, after) = (&rest[..at], &rest[at + 1..]);
        let slash = after
            .find('/')
            .ok_or_else(|| "missing /database".to_owned())?;
        let (hostport, path) = (&after[..slash], &after[slash + 1..]);
        let (user, password) = match userinfo.split_once(':') {
            Some((u, p)) => (decode(u, "user")?, Some(decode(p, "password")?)),
            None => (decode(userinfo, "user")?, None),
        };
        if user.is_empty() {
            return Err("missing user".into());
        }
        let (host, port) = if let Some(h) = hostport.strip_prefix('[') {
            let (h, tail) = h
                .split_once(']')
                .ok_or_else(|| "unclosed [ in host".to_owned())?;
            let port = match tail.strip_prefix(':') {
                Some(p) => p.parse().map_err(|_| format!("bad port '{p}'"))?,
                None if tail.is_empty() => Self::DEFAULT_PORT,
                None => return Err(format!("unexpected '{tail}' after host")),
            };
            (h.to_owned(), port)
        } else {
            match hostport.rsplit_once(':') {
                Some((h, p)) => (
                    h.to_owned(),
                    p.parse().map_err(|_| format!("bad port '{p}'"))?,
                ),
                None => (hostport.to_owned(), Self::DEFAULT_PORT),
            }
        };
        if host.is_empty() {
            return Err("missing host".into());
        }
        if port == 0 {
            return Err("bad port '0'".into());
        }
        let (db, query) = match path.split_once('?') {
            Some((d, q)) => (d, Some(q)),
            None => (path, None),
        };
        let database = decode(db, "database")?;
        if database.is_empty() || database.contains('/') {
            return Err("missing or bad database name".into());
        }
        let mut socket = None;
        for kv in query
            .into_iter()
            .flat_map(|q| q.split('&'))
            .filter(|kv| !kv.is_empty())
        {
            match kv.split_once('=') {
                Some(("socket", v)) if !v.is_empty() => socket = Some(decode(v, "socket")?),
                _ => {
                    return Err(format!(
                        "unknown option '{kv}' (only socket=/path is understood)"
                    ))
                }
            }
        }
        Ok(DbUrl {
            user,
            password,
            host,
            port,
            database,
            socket,
        })
    }

    /// The URL with the password hidden, for logs and errors.
    pub fn redacted(&self) -> String {
        let pw = if self.password.is_some() { ":***" } else { "" };
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        let sock = self
            .socket
            .as_ref()
            .map(|s| format!("?socket={s}"))
            .unwrap_or_default();
        format!(
            "mysql://{}{}@{}:{}/{}{}",
            self.user, pw, host, self.port, self.database, sock
        )
    }
}
