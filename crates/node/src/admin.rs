//! `dynamo admin`: the operator's membership commands (Riak style), run over RPC against the
//! first address of `--seeds`, authenticated with the cluster secret like every other command.
//! Each prints a table, or with `--json` one JSON value with stable field names for scripts.

use std::fmt::Write as _;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, Subcommand};
use dynamo_membership::{
    AdminCommand, AdminReply, MemberView, PlanId, PlanView, RingView, TransfersView,
};
use dynamo_ring::NodeId;
use dynamo_rpc::{ClusterAuth, GossipClient, TcpConnector};

use crate::cli::ConnArgs;

/// `dynamo admin ...`
#[derive(Args, Debug)]
pub struct AdminArgs {
    #[command(subcommand)]
    command: AdminCmd,
}

#[derive(Subcommand, Debug)]
enum AdminCmd {
    /// Stage, plan and commit membership changes.
    Cluster {
        #[command(subcommand)]
        command: ClusterCmd,
    },
    /// List the members: id, address, status, partitions owned now and after the pending change.
    Members(Out),
    /// Show the ring: epoch, owners, the pending next ring, convergence.
    Ring(Out),
    /// Show the partition transfers of the pending change.
    Transfers(Out),
    /// Anti-entropy per node and partition: when each tree was built, the last exchange with
    /// each other replica, keys repaired.
    Aae(Out),
    /// Set how many transfers the addressed node sends at once (default 2).
    TransferLimit {
        #[command(flatten)]
        out: Out,
        /// Transfers at once, at least 1.
        limit: usize,
    },
}

#[derive(Subcommand, Debug)]
enum ClusterCmd {
    /// Run against the joining node: copy the cluster's state from SEED_RPC_ADDR and stage
    /// this node's join.
    Join {
        #[command(flatten)]
        out: Out,
        /// RPC address of any member of the cluster to join.
        seed: String,
    },
    /// Stage a leave of NODE (the addressed node when omitted).
    Leave {
        #[command(flatten)]
        out: Out,
        /// The leaving node.
        node: Option<String>,
    },
    /// Stage the removal of NODE, which is down (its replicas are rebuilt from the others).
    Remove {
        #[command(flatten)]
        out: Out,
        /// The node to remove.
        node: String,
    },
    /// Stage the replacement of OLD by NEW (a joining node).
    Replace {
        #[command(flatten)]
        out: Out,
        /// The node replaced.
        old: String,
        /// The joining node taking its place.
        new: String,
    },
    /// Show what the staged changes would do.
    Plan(Out),
    /// Commit the plan last shown by the addressed node (or --plan-id).
    Commit {
        #[command(flatten)]
        out: Out,
        /// The plan to commit, as `plan` printed it.
        #[arg(long)]
        plan_id: Option<String>,
    },
    /// Drop the staged changes.
    Clear(Out),
}

/// Connection flags and the output format.
#[derive(Args, Debug)]
struct Out {
    #[command(flatten)]
    conn: ConnArgs,
    /// Print JSON (stable field names) instead of a table.
    #[arg(long)]
    json: bool,
}

fn node_id(s: &str) -> anyhow::Result<NodeId> {
    NodeId::new(s).with_context(|| format!("{s:?} is not a node id"))
}

/// Runs `dynamo admin ...`.
pub async fn run(args: AdminArgs) -> anyhow::Result<ExitCode> {
    let (out, command) = match args.command {
        AdminCmd::Aae(out) => return crate::cli::admin_aae(out.conn, out.json).await,
        AdminCmd::Members(out) => (out, AdminCommand::Members),
        AdminCmd::Ring(out) => (out, AdminCommand::Ring),
        AdminCmd::Transfers(out) => (out, AdminCommand::Transfers),
        AdminCmd::TransferLimit { out, limit } => (out, AdminCommand::TransferLimit { limit }),
        AdminCmd::Cluster { command } => match command {
            ClusterCmd::Join { out, seed } => (out, AdminCommand::Join { seed }),
            ClusterCmd::Leave { out, node } => {
                let node = node.as_deref().map(node_id).transpose()?;
                (out, AdminCommand::Leave { node })
            }
            ClusterCmd::Remove { out, node } => {
                let node = node_id(&node)?;
                (out, AdminCommand::Remove { node })
            }
            ClusterCmd::Replace { out, old, new } => {
                let (old, new) = (node_id(&old)?, node_id(&new)?);
                (out, AdminCommand::Replace { old, new })
            }
            ClusterCmd::Plan(out) => (out, AdminCommand::Plan),
            ClusterCmd::Commit { out, plan_id } => {
                let plan = plan_id.as_deref().map(str::parse::<PlanId>).transpose()?;
                (out, AdminCommand::Commit { plan })
            }
            ClusterCmd::Clear(out) => (out, AdminCommand::Clear),
        },
    };
    let address = out
        .conn
        .seeds
        .first()
        .context("--seeds names no node to address")?
        .clone();
    let auth = ClusterAuth::new(
        out.conn.cluster_name.clone(),
        out.conn.secret.as_bytes().to_vec(),
    )?;
    let client = GossipClient::new(TcpConnector, auth);
    let timeout = Duration::from_millis(out.conn.timeout_ms);
    let reply = client
        .admin(&address, command, timeout)
        .await
        .with_context(|| format!("the command failed at {address}"))?;
    let text = if out.json {
        to_json(&reply)? + "\n"
    } else {
        table(&reply)
    };
    // A closed pipe (`| head`) is not an error worth a panic.
    let _ = std::io::Write::write_all(&mut std::io::stdout().lock(), text.as_bytes());
    Ok(ExitCode::SUCCESS)
}

fn to_json(reply: &AdminReply) -> anyhow::Result<String> {
    let value = match reply {
        AdminReply::Done(message) => serde_json::json!({ "ok": true, "message": message }),
        AdminReply::Plan(plan) => serde_json::to_value(plan)?,
        AdminReply::Members(members) => serde_json::to_value(members)?,
        AdminReply::Ring(ring) => serde_json::to_value(ring)?,
        AdminReply::Transfers(transfers) => serde_json::to_value(transfers)?,
    };
    Ok(serde_json::to_string_pretty(&value)?)
}

fn table(reply: &AdminReply) -> String {
    let mut out = String::new();
    // Writing to a String cannot fail.
    let _ = match reply {
        AdminReply::Done(message) => writeln!(out, "{message}"),
        AdminReply::Plan(plan) => print_plan(&mut out, plan),
        AdminReply::Members(members) => print_members(&mut out, members),
        AdminReply::Ring(ring) => print_ring(&mut out, ring),
        AdminReply::Transfers(t) => print_transfers(&mut out, t),
    };
    out
}

fn print_plan(out: &mut String, plan: &PlanView) -> std::fmt::Result {
    writeln!(
        out,
        "plan {} (ring epoch {} -> {})",
        plan.id, plan.from_epoch, plan.next_epoch
    )?;
    for change in &plan.changes {
        writeln!(
            out,
            "  {}",
            serde_json::to_string(change).unwrap_or_default()
        )?;
    }
    writeln!(
        out,
        "{} partitions move ({} change owner, {} copies); balance after: {}..{} partitions per node",
        plan.partitions_moving,
        plan.owners_moved,
        plan.transfers,
        plan.balance_min,
        plan.balance_max
    )?;
    writeln!(
        out,
        "{:<16} {:>13} {:>12} {:>16} {:>15}",
        "node", "owned before", "owned after", "replicas before", "replicas after"
    )?;
    for n in &plan.nodes {
        writeln!(
            out,
            "{:<16} {:>13} {:>12} {:>16} {:>15}",
            n.id, n.owned_before, n.owned_after, n.replicated_before, n.replicated_after
        )?;
    }
    writeln!(out, "commit with: dynamo admin cluster commit")?;
    Ok(())
}

fn print_members(out: &mut String, members: &[MemberView]) -> std::fmt::Result {
    writeln!(
        out,
        "{:<16} {:<22} {:<8} {:>10} {:>8} {:>8}  notes",
        "node", "address", "status", "partitions", "next", "replicas"
    )?;
    for m in members {
        let mut notes = Vec::new();
        if m.claimant {
            notes.push("claimant");
        }
        if !m.seen_latest && m.status != "removed" && m.status != "down" {
            notes.push("has not seen the latest state");
        }
        writeln!(
            out,
            "{:<16} {:<22} {:<8} {:>10} {:>8} {:>8}  {}",
            m.id,
            m.address,
            m.status,
            m.partitions,
            m.partitions_next,
            m.replicas,
            notes.join(", ")
        )?;
    }
    Ok(())
}

fn print_ring(out: &mut String, ring: &RingView) -> std::fmt::Result {
    writeln!(
        out,
        "ring epoch {}, {} partitions, N = {}, {}",
        ring.epoch,
        ring.q,
        ring.n,
        if ring.converged {
            "converged".to_string()
        } else {
            format!("not seen yet by {}", ring.not_seen_by.join(", "))
        }
    )?;
    if let Some(next) = ring.next_epoch {
        writeln!(out, "pending ring epoch {next}")?;
    }
    for (p, owner) in ring.owners.iter().enumerate() {
        let next = ring
            .next_owners
            .as_ref()
            .and_then(|n| n.get(p))
            .filter(|n| *n != owner)
            .map(|n| format!(" -> {n}"))
            .unwrap_or_default();
        writeln!(out, "  {p:>4}  {owner}{next}")?;
    }
    Ok(())
}

fn print_transfers(out: &mut String, t: &TransfersView) -> std::fmt::Result {
    match &t.plan_id {
        None => writeln!(out, "no ownership change in progress")?,
        Some(id) => writeln!(
            out,
            "plan {id}: {} partitions pending, {} transfers synced, {} active",
            t.pending,
            t.synced,
            t.active.len()
        )?,
    }
    for a in &t.active {
        writeln!(
            out,
            "  partition {:>4}  {} -> {}  {:<9}  {} keys, {} bytes",
            a.partition, a.from, a.to, a.phase, a.keys_sent, a.bytes_sent
        )?;
    }
    Ok(())
}
