//! The reference for `benches/hot_path.sh`: a bare tonic server, no layers
//! at all, serving [`bare_echo::Echo`] (a fixed WhoAmI answer). The full
//! server's cost is measured against this one, with the same client and
//! settings, so the ratio is what Tenantry's layers cost.
//!
//! ```sh
//! cargo run --release --example bare_echo -- 127.0.0.1:50090
//! ```

#[path = "../benches/support/bare_echo.rs"]
mod bare_echo;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let addr = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:50090".into()).parse()?;
    tonic::transport::Server::builder().tcp_nodelay(true).add_service(bare_echo::Echo::default()).serve(addr).await?;
    Ok(())
}
