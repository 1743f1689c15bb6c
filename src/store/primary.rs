//! Which PostgreSQL server the store talks to when `store.url` names several.
//!
//! `store.url` may be libpq's multi-host form,
//! `postgres://user@db1:5432,db2:5432/sipdm?target_session_attrs=read-write`, the form a
//! failover manager (pg_auto_failover, Patroni) hands its clients. sqlx connects to one host
//! only, so the store splits the list here, asks each host whether it is in recovery, and points
//! its pool at the writable one. When the failover manager promotes a standby, the store's
//! watcher notices within a check period and moves the pool: no restart.
//!
//! While no host is writable the pool points at a reachable standby instead: reads (the files of
//! known phones, digest passwords) keep working, writes fail as unavailable, and the node says it
//! is *degraded* until a primary is back.

use std::time::Duration;

use sqlx::Connection;

/// How long a probe of one host may take (libpq's `connect_timeout` overrides it).
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// What a host offers right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Access {
    /// Nothing answered.
    Unreachable,
    /// A standby (in recovery): reads only.
    ReadOnly,
    /// A primary.
    Writable,
}

impl Access {
    pub fn as_str(self) -> &'static str {
        match self {
            Access::Unreachable => "unreachable",
            Access::ReadOnly => "read-only",
            Access::Writable => "writable",
        }
    }
}

/// libpq's `target_session_attrs`, as far as sipdm can honour it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionAttrs {
    /// `read-write` or `primary` (the default with several hosts: sipdm writes): the writable
    /// host, or a standby while none is (degraded).
    ReadWrite,
    /// `any`: the first host that answers, kept while it answers.
    Any,
}

/// The hosts of one `store.url`, each as a single-host URL sqlx accepts.
#[derive(Debug, Clone)]
pub struct HostList {
    pub urls: Vec<String>,
    pub attrs: SessionAttrs,
    pub connect_timeout: Duration,
}

impl HostList {
    pub fn is_multi(&self) -> bool {
        self.urls.len() > 1
    }
}

/// Splits a PostgreSQL URL into one URL per host. Parameters sqlx does not know
/// (`target_session_attrs`, `connect_timeout`) are taken out and honoured here.
pub fn parse(url: &str) -> Result<HostList, String> {
    let (scheme, rest) = url
        .split_once("://")
        .ok_or_else(|| "a PostgreSQL URL starts with postgres://".to_owned())?;
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let (userinfo, hosts) = match authority.rfind('@') {
        Some(at) => (Some(&authority[..at]), &authority[at + 1..]),
        None => (None, authority),
    };
    let (path, query) = match tail.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (tail, None),
    };
    let mut attrs = None;
    let mut connect_timeout = DEFAULT_CONNECT_TIMEOUT;
    let mut kept = Vec::new();
    for pair in query.into_iter().flat_map(|q| q.split('&')) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        match key {
            "target_session_attrs" => {
                attrs = Some(match value {
                    "read-write" | "primary" => SessionAttrs::ReadWrite,
                    "any" => SessionAttrs::Any,
                    other => {
                        return Err(format!(
                            "target_session_attrs={other}: sipdm writes, so it takes read-write, \
                             primary or any"
                        ))
                    }
                })
            }
            "connect_timeout" => {
                let secs: u64 = value
                    .parse()
                    .map_err(|_| format!("connect_timeout={value}: a number of seconds"))?;
                connect_timeout = Duration::from_secs(secs.max(1));
            }
            "" => {}
            _ => kept.push(pair),
        }
    }
    let hosts: Vec<&str> = if hosts.is_empty() {
        vec![""]
    } else {
        hosts.split(',').collect()
    };
    if hosts.iter().any(|h| h.is_empty()) && hosts.len() > 1 {
        return Err("an empty host in the host list of store.url".into());
    }
    let query = if kept.is_empty() {
        String::new()
    } else {
        format!("?{}", kept.join("&"))
    };
    let urls = hosts
        .iter()
        .map(|host| match userinfo {
            Some(u) => format!("{scheme}://{u}@{host}{path}{query}"),
            None => format!("{scheme}://{host}{path}{query}"),
        })
        .collect::<Vec<_>>();
    let attrs = attrs.unwrap_or(if urls.len() > 1 {
        SessionAttrs::ReadWrite
    } else {
        SessionAttrs::Any
    });
    Ok(HostList {
        urls,
        attrs,
        connect_timeout,
    })
}

/// Asks one host, on a connection of its own, whether it is a primary.
pub async fn probe(url: &str, timeout: Duration) -> Access {
    let asked = async {
        let mut conn = sqlx::postgres::PgConnection::connect(url).await?;
        let in_recovery: bool = sqlx::query_scalar("SELECT pg_is_in_recovery()")
            .fetch_one(&mut conn)
            .await?;
        let _ = conn.close().await;
        Ok::<_, sqlx::Error>(in_recovery)
    };
    match tokio::time::timeout(timeout, asked).await {
        Ok(Ok(false)) => Access::Writable,
        Ok(Ok(true)) => Access::ReadOnly,
        Ok(Err(e)) => {
            tracing::debug!(host = %host_of(url), error = %e, "database host does not answer");
            Access::Unreachable
        }
        Err(_) => Access::Unreachable,
    }
}

/// The host to use: the first writable one in the list's order, else (degraded) the first
/// standby that answers; with `any`, simply the first that answers. All are asked at once, so
/// a dead host costs one timeout, not one per host.
pub async fn choose(list: &HostList) -> Option<(usize, Access)> {
    let answers =
        futures::future::join_all(list.urls.iter().map(|u| probe(u, list.connect_timeout))).await;
    let best = match list.attrs {
        SessionAttrs::ReadWrite => answers.iter().copied().max()?,
        SessionAttrs::Any => *answers.iter().find(|a| **a != Access::Unreachable)?,
    };
    if best == Access::Unreachable {
        return None;
    }
    answers
        .iter()
        .position(|a| *a == best)
        .map(|i| (i, answers[i]))
}

/// `host:port` of a single-host URL, for logs (never the credentials).
pub fn host_of(url: &str) -> &str {
    let rest = url.split_once("://").map(|(_, r)| r).unwrap_or(url);
    let authority = &rest[..rest.find(['/', '?']).unwrap_or(rest.len())];
    authority
        .rsplit_once('@')
        .map(|(_, h)| h)
        .unwrap_or(authority)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_host_is_one_url_and_any() {
        let l = parse("postgres://postgres@127.0.0.1:5432/test").unwrap();
        assert_eq!(l.urls, ["postgres://postgres@127.0.0.1:5432/test"]);
        assert_eq!(l.attrs, SessionAttrs::Any);
    }

    #[test]
    fn several_hosts_split_keeping_credentials_database_and_parameters() {
        let l = parse(
            "postgresql://u:p%40ss@db1:5432,db2:6432,[::1]:5433/sipdm?sslmode=disable&target_session_attrs=read-write&connect_timeout=3",
        )
        .unwrap();
        assert_eq!(
            l.urls,
            [
                "postgresql://u:p%40ss@db1:5432/sipdm?sslmode=disable",
                "postgresql://u:p%40ss@db2:6432/sipdm?sslmode=disable",
                "postgresql://u:p%40ss@[::1]:5433/sipdm?sslmode=disable",
            ]
        );
        assert_eq!(l.attrs, SessionAttrs::ReadWrite);
        assert_eq!(l.connect_timeout, Duration::from_secs(3));
        assert_eq!(host_of(&l.urls[1]), "db2:6432");
    }

    #[test]
    fn several_hosts_default_to_read_write() {
        let l = parse("postgres://h1,h2/db").unwrap();
        assert_eq!(l.urls, ["postgres://h1/db", "postgres://h2/db"]);
        assert_eq!(l.attrs, SessionAttrs::ReadWrite);
    }

    #[test]
    fn unusable_parameters_are_refused() {
        assert!(parse("postgres://h1,h2/db?target_session_attrs=standby").is_err());
        assert!(parse("postgres://h1,,h2/db").is_err());
        assert!(parse("postgres://h1/db?connect_timeout=soon").is_err());
        assert!(parse("h1:5432/db").is_err());
    }

    #[tokio::test]
    async fn a_closed_port_is_unreachable_and_nothing_is_chosen() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let l = parse(&format!(
            "postgres://u@127.0.0.1:{port}/db?connect_timeout=1"
        ))
        .unwrap();
        assert_eq!(
            probe(&l.urls[0], l.connect_timeout).await,
            Access::Unreachable
        );
        assert_eq!(choose(&l).await, None);
    }
}
