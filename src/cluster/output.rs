//! How `vcsync cluster list` and `status` print clusters: a table, JSON or YAML.

use clap::ValueEnum;

use super::ClusterStatus;

/// Output formats of `list` and `status`.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum Format {
    /// Columns (`list`) or one field per line (`status`).
    Table,
    /// JSON.
    Json,
    /// YAML.
    Yaml,
}

/// Prints `statuses`: all of them when `list`, else the first.
pub fn print_statuses(statuses: &[ClusterStatus], format: Format, list: bool) {
    match format {
        Format::Json => {
            let text = if list {
                serde_json::to_string_pretty(statuses)
            } else {
                serde_json::to_string_pretty(&statuses[0])
            };
            println!("{}", text.expect("status serializes"));
        }
        Format::Yaml => {
            let text = if list {
                serde_yaml_ng::to_string(statuses)
            } else {
                serde_yaml_ng::to_string(&statuses[0])
            };
            print!("{}", text.expect("status serializes"));
        }
        Format::Table if list => {
            println!(
                "{:<24} {:<11} {:<8} {:<6} {:<6}",
                "NAME", "DRIVER", "PHASE", "READY", "NODES"
            );
            for s in statuses {
                println!(
                    "{:<24} {:<11} {:<8} {:<6} {}/{}",
                    s.name, s.driver, s.phase, s.ready, s.nodes_ready, s.nodes_total
                );
            }
        }
        Format::Table => {
            let s = &statuses[0];
            let synced: Vec<String> = s.synced_objects.iter().map(|(k, v)| format!("{k}={v}")).collect();
            println!("Name:                 {}", s.name);
            println!("Driver:               {}", s.driver);
            println!("Phase:                {}", s.phase);
            println!("Ready:                {}", s.ready);
            println!("Control plane ready:  {}", s.control_plane_ready);
            println!("Nodes (ready/total):  {}/{}", s.nodes_ready, s.nodes_total);
            println!(
                "Synced objects:       {}",
                if synced.is_empty() {
                    "none".into()
                } else {
                    synced.join(", ")
                }
            );
            println!("Message:              {}", s.message);
        }
    }
}
