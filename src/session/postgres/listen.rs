//! Revocations over `LISTEN vallum_revoked`, on a connection of its own (a pooled one would be
//! returned and reused). A heartbeat notices a connection that died silently, so a partition
//! ends the subscription within seconds and the listener re-subscribes and clears the cache.

use super::{schema, PgStore};
use crate::session::revocations::Feed;
use async_trait::async_trait;
use futures_util::stream::BoxStream;
use futures_util::StreamExt;
use std::time::Duration;
use tokio_postgres::AsyncMessage;

const HEARTBEAT: Duration = Duration::from_secs(5);

#[async_trait]
impl Feed for PgStore {
    async fn subscribe(&self, _attempt: usize) -> Result<BoxStream<'static, String>, String> {
        // The tables exist before anyone can announce a deletion from them.
        self.ensure_schema().await.map_err(|e| e.to_string())?;
        // Named apart from the pool's connections, so an operator sees which one listens.
        let mut config = self.direct.clone();
        let name = format!(
            "{} revocations",
            config.get_application_name().unwrap_or("vallum")
        );
        config.application_name(&name);
        let (client, mut conn) = config
            .connect(self.tls.clone())
            .await
            .map_err(|e| super::describe(&e))?;
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<String>();
        // Drives the connection and forwards notifications; ends with the connection, which
        // ends the stream.
        tokio::spawn(async move {
            let mut messages = futures_util::stream::poll_fn(move |cx| conn.poll_message(cx));
            while let Some(Ok(m)) = messages.next().await {
                if let AsyncMessage::Notification(n) = m {
                    if tx.send(n.payload().to_string()).is_err() {
                        return;
                    }
                }
            }
        });
        client
            .batch_execute(&format!("LISTEN {}", schema::CHANNEL))
            .await
            .map_err(|e| super::describe(&e))?;
        // Holds the client (dropping it closes the connection) and checks it answers.
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(HEARTBEAT).await;
                let beat = tokio::time::timeout(HEARTBEAT, client.simple_query("SELECT 1")).await;
                if !matches!(beat, Ok(Ok(_))) || client.is_closed() {
                    tracing::debug!("PostgreSQL listening connection lost");
                    return;
                }
            }
        });
        Ok(stream_of(rx))
    }

    async fn maintain(&self) {
        match self.sweep().await {
            Ok(0) => {}
            Ok(n) => tracing::debug!(rows = n, "expired session rows deleted"),
            Err(e) => tracing::warn!(error = %e, "cannot delete expired session rows; will retry"),
        }
    }
}

fn stream_of(mut rx: tokio::sync::mpsc::UnboundedReceiver<String>) -> BoxStream<'static, String> {
    futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx)).boxed()
}
