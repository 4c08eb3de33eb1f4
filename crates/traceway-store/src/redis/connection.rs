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

pub(super) fn redis_err(e: RedisError) -> StoreError {
    use ::redis::ErrorKind;
    if e.is_io_error()
        || e.is_timeout()
        || e.is_connection_dropped()
        || e.is_connection_refusal()
        || e.is_cluster_error()
        || matches!(e.kind(), ErrorKind::Server(_)) && e.to_string().contains("LOADING")
    {
        StoreError::Unavailable(e.to_string())
    } else {
        StoreError::Internal(format!("redis: {e}"))
    }
}

pub(super) fn json_err(e: serde_json::Error) -> StoreError {
    StoreError::Internal(format!("stored json: {e}"))
}

impl RedisStore {
    /// Runs independent commands: one pipeline on standalone Redis; concurrently on a
    /// Cluster, where a pipeline may not span slots (each command goes to its node over the
    /// shared multiplexed connections).
    pub(super) async fn exec<T: ::redis::FromRedisValue>(
        &self,
        cmds: Vec<Cmd>,
    ) -> Result<Vec<T>, StoreError> {
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
