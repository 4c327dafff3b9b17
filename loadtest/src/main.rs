//! omnigate-loadtest: drives a running gateway over the network as a black box.
//!
//! The scenarios and modes arrive with the load-generator issue; this binary only proves the crate
//! boundary today (it depends on connectors' wire types, never on the gateway).

fn main() -> anyhow::Result<()> {
    anyhow::bail!("no load scenarios are implemented yet; see the load generator issue")
}
