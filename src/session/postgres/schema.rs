//! Vallum's tables, created and migrated by Vallum at start: versioned steps, each applied once,
//! in one transaction under an advisory lock so that nodes starting together take turns and the
//! second finds the work done.

/// The schema Vallum owns; nothing else is touched.
pub const SCHEMA: &str = "vallum";
/// The channel a deleted session's id is announced on.
pub const CHANNEL: &str = "vallum_revoked";
/// The advisory lock key (an arbitrary constant: "vallum" in ASCII).
const LOCK: i64 = 0x7661_6c6c_756d;

/// Step `n` brings the schema from version `n` to `n + 1`. Append only: a released step never
/// changes, so a node of an older release finds the tables it knows.
const STEPS: &[&str] = &[
    // 1: sessions with the per-user index, small records, single-use claims.
    "CREATE TABLE vallum.sessions (
         id text PRIMARY KEY,
         user_name text NOT NULL,
         issued bigint NOT NULL,
         expires bigint NOT NULL,
         data bytea NOT NULL);
     CREATE INDEX sessions_user ON vallum.sessions (user_name);
     CREATE INDEX sessions_expires ON vallum.sessions (expires);
     CREATE TABLE vallum.records (
         key text PRIMARY KEY,
         expires bigint NOT NULL,
         data bytea NOT NULL);
     CREATE INDEX records_expires ON vallum.records (expires) WHERE expires <> 0;
     CREATE TABLE vallum.claims (
         key text PRIMARY KEY,
         expires bigint NOT NULL);
     CREATE INDEX claims_expires ON vallum.claims (expires);",
];

/// The version this build writes.
pub fn latest() -> i32 {
    STEPS.len() as i32
}

/// Brings the schema to `latest()`; returns the version found. A database at a newer version
/// (a newer release ran here) is left alone and used: steps only add.
pub async fn migrate(client: &mut tokio_postgres::Client) -> Result<i32, tokio_postgres::Error> {
    let tx = client.transaction().await?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&LOCK])
        .await?;
    tx.batch_execute(
        "CREATE SCHEMA IF NOT EXISTS vallum;
         CREATE TABLE IF NOT EXISTS vallum.schema_version (version integer NOT NULL);",
    )
    .await?;
    let found: i32 = match tx
        .query_opt("SELECT version FROM vallum.schema_version", &[])
        .await?
    {
        Some(row) => row.get(0),
        None => {
            tx.execute("INSERT INTO vallum.schema_version VALUES (0)", &[])
                .await?;
            0
        }
    };
    for (i, step) in STEPS.iter().enumerate().skip(found.max(0) as usize) {
        tx.batch_execute(step).await?;
        tx.execute(
            "UPDATE vallum.schema_version SET version = $1",
            &[&(i as i32 + 1)],
        )
        .await?;
    }
    tx.commit().await?;
    Ok(found)
}
