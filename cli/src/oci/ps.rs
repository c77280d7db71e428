//! `ps [--format table|json] ID`: the container's processes, found through its cgroup
//! or, without one, its pid namespace.

use anyhow::Result;
use clap::{Args, ValueEnum};

use super::container::Container;
use super::global::Global;

#[derive(Args, Debug)]
pub struct PsArgs {
    /// The container's ID
    pub id: String,
    /// table (pid and command line) or json (an array of pids, as runc prints)
    #[arg(long, short = 'f', value_enum, default_value_t = PsFormat::Table)]
    pub format: PsFormat,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum PsFormat {
    Table,
    Json,
}

pub fn ps(global: &Global, args: &PsArgs) -> Result<()> {
    let c = Container::load(global, &args.id)?;
    let pids = c.pids();
    match args.format {
        PsFormat::Json => super::global::print_out(&serde_json::to_string(&pids)?),
        PsFormat::Table => {
            let mut table = String::from("PID\tCMD");
            for pid in pids {
                let cmd = std::fs::read(format!("/proc/{pid}/cmdline"))
                    .map(|b| {
                        String::from_utf8_lossy(&b)
                            .trim_end_matches('\0')
                            .replace('\0', " ")
                    })
                    .unwrap_or_default();
                table += &format!("\n{pid}\t{cmd}");
            }
            super::global::print_out(&table);
        }
    }
    Ok(())
}
