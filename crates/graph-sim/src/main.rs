//! `graph-sim [PORT] [TENANTS] [USERS_PER_TENANT] [SEED]`: serves simulated tenants for the local
//! demo and for manual testing against Picket.

#![allow(clippy::print_stdout)]

use graph_sim::{GraphSim, SimConfig};

fn argument<T: std::str::FromStr>(position: usize, default: T) -> anyhow::Result<T> {
    match std::env::args().nth(position) {
        Some(value) => value
            .parse()
            .map_err(|_| anyhow::anyhow!("argument {position} is not valid: {value}")),
        None => Ok(default),
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let port: u16 = argument(1, 8787)?;
    let config = SimConfig {
        tenants: argument(2, 10)?,
        users_per_tenant: argument(3, 50)?,
        seed: argument(4, 42)?,
        ..SimConfig::default()
    };
    let sim = GraphSim::start(config, ([127, 0, 0, 1], port).into()).await?;
    println!(
        "graph-sim listening on {} (client id {})",
        sim.base_url(),
        sim.config().client_id
    );
    // Who signs in at the admin-consent and sign-in pages (pass it as `login_hint`).
    for tenant_id in sim.tenant_ids() {
        let administrator = sim
            .user_principal_name(&tenant_id, Some(graph_sim::GLOBAL_ADMINISTRATOR))
            .unwrap_or_default();
        println!("  tenant {tenant_id} administrator {administrator}");
    }
    tokio::signal::ctrl_c().await?;
    Ok(())
}
