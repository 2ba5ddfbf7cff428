//! Runs the embedded migrations, as a deployment step for applications that connect with
//! `run_migrations(false)`:
//!
//! ```text
//! cargo run -p allframe-backend-postgres --example migrate -- postgres://user@host/db my_schema
//! ```
//!
//! Without arguments it uses `DATABASE_URL` (or the local test server) and the schema `allframe`.

use allframe_backend_postgres::{DEFAULT_SCHEMA, PostgresBackend, SCHEMA_VERSION};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let url = args
        .next()
        .or_else(|| std::env::var("DATABASE_URL").ok())
        .unwrap_or_else(|| "postgres://postgres@127.0.0.1:5432/test".into());
    let schema = args.next().unwrap_or_else(|| DEFAULT_SCHEMA.into());
    PostgresBackend::migrate(&url, &schema).await?;
    println!("schema `{schema}` is at AllFrame schema version {SCHEMA_VERSION}");
    Ok(())
}
