//! The connection (standalone or Cluster), its errors, and running independent commands.

use super::*;

/// One multiplexed connection (standalone, reconnecting) or a Cluster connection; both are
/// cheap clones sharing one socket per node.
#[derive(Clone)]
pub(super) enum Conn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Single(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Single(c) => c.req_packed_commands(cmd, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(cmd, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
        }
    }
}

pub(super) fn redis_err(e: RedisError) -> BackendError {
    if is_transient(&e) {
        BackendError::unavailable_by("redis", e)
    } else {
        BackendError::internal_by("redis", e)
    }
}

/// Whether a Redis failure passes by itself: the server is restarting, loading its
/// dataset (`LOADING`), refusing connections, unreachable, failing over, out of memory or
/// unable to persist. Such a failure is `Unavailable` (503 with `Retry-After`, OTLP
/// `UNAVAILABLE` with `RetryInfo`), never `Internal`: exporters retry the former and drop
/// their batch on the latter (issue 15, failure 3.4).
pub(super) fn is_transient(e: &RedisError) -> bool {
    use ::redis::{ErrorKind, RetryMethod, ServerErrorKind};
    // Codes redis-rs does not know, which a server sends while it cannot serve for now.
    const TRANSIENT_CODES: &[&str] = &[
        "LOADING",
        "BUSY",
        "OOM",
        "MISCONF",
        "NOREPLICAS",
        "MASTERDOWN",
        "CLUSTERDOWN",
        "TRYAGAIN",
        "READONLY",
    ];
    if e.is_io_error()
        || e.is_timeout()
        || e.is_connection_dropped()
        || e.is_connection_refusal()
        || e.is_cluster_error()
    {
        return true;
    }
    if matches!(
        e.kind(),
        ErrorKind::Server(
            ServerErrorKind::BusyLoading
                | ServerErrorKind::TryAgain
                | ServerErrorKind::ClusterDown
                | ServerErrorKind::MasterDown
                | ServerErrorKind::ReadOnly
        ) | ErrorKind::ClusterConnectionNotFound
            | ErrorKind::Parse
    ) {
        return true;
    }
    if e.code().is_some_and(|c| TRANSIENT_CODES.contains(&c)) {
        return true;
    }
    // A script's error carries the server's reply in its text (`… LOADING …`).
    let text = e.to_string();
    if TRANSIENT_CODES
        .iter()
        .any(|c| text.contains(&format!("{c} ")) || text.contains(&format!("-{c}")))
    {
        return true;
    }
    matches!(
        e.retry_method(),
        RetryMethod::Reconnect
            | RetryMethod::WaitAndRetry
            | RetryMethod::ReconnectFromInitialConnections
    )
}

pub(super) fn json_err(e: serde_json::Error) -> BackendError {
    BackendError::internal_by("stored json", e)
}

impl RedisStore {
    /// Runs independent commands: one pipeline on standalone Redis; concurrently on a
    /// Cluster, where a pipeline may not span slots (each command goes to its node over the
    /// shared multiplexed connections).
    pub(super) async fn exec<T: ::redis::FromRedisValue>(
        &self,
        cmds: Vec<Cmd>,
    ) -> Result<Vec<T>, BackendError> {
        if cmds.is_empty() {
            return Ok(Vec::new());
        }
        let conn = self.conn()?;
        match conn {
            Conn::Single(mut c) => {
                let mut p = ::redis::pipe();
                for cmd in cmds {
                    p.add_command(cmd);
                }
                p.query_async(&mut c).await.map_err(redis_err)
            }
            Conn::Cluster(c) => {
                let futs = cmds.into_iter().map(|cmd| {
                    let mut c = c.clone();
                    async move { cmd.query_async::<T>(&mut c).await }
                });
                futures::future::try_join_all(futs).await.map_err(redis_err)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::StoreFailure;

    fn server_reply(raw: &[u8]) -> RedisError {
        match ::redis::parse_redis_value(raw) {
            Ok(Value::ServerError(e)) => e.into(),
            Ok(other) => panic!("not an error: {other:?}"),
            Err(e) => e,
        }
    }

    /// What a restarting server answers maps to `Unavailable`; a real error stays
    /// `Internal` (issue 15, failure 3.4).
    #[test]
    fn redis_restarting_loading_or_refusing_is_unavailable_and_a_wrong_command_is_internal() {
        for raw in [
            &b"-LOADING Redis is loading the dataset in memory\r\n"[..],
            b"-BUSY Redis is busy running a script\r\n",
            b"-OOM command not allowed when used memory > 'maxmemory'.\r\n",
            b"-MISCONF Redis is configured to save RDB snapshots, but it's currently unable to persist to disk\r\n",
            b"-TRYAGAIN Multiple keys request during rehashing of slot\r\n",
            b"-CLUSTERDOWN The cluster is down\r\n",
            b"-MASTERDOWN Link with MASTER is down\r\n",
            b"-READONLY You can't write against a read only replica.\r\n",
        ] {
            let e = server_reply(raw);
            assert_eq!(
                redis_err(e.clone()).kind(),
                crate::ErrorKind::Unavailable,
                "{e}"
            );
        }
        for io in [
            std::io::ErrorKind::ConnectionRefused,
            std::io::ErrorKind::NotFound,
            std::io::ErrorKind::ConnectionReset,
            std::io::ErrorKind::BrokenPipe,
            std::io::ErrorKind::UnexpectedEof,
            std::io::ErrorKind::TimedOut,
        ] {
            let e = RedisError::from(std::io::Error::from(io));
            assert_eq!(redis_err(e).kind(), crate::ErrorKind::Unavailable, "{io:?}");
        }
        for raw in [
            &b"-ERR unknown command 'FOO'\r\n"[..],
            b"-WRONGTYPE Operation against a key holding the wrong kind of value\r\n",
        ] {
            let e = server_reply(raw);
            assert_eq!(
                redis_err(e.clone()).kind(),
                crate::ErrorKind::Internal,
                "{e}"
            );
        }
    }
}
