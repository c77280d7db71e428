//! `nook info`: prints the capability report of `nook_rootless::probe`.
//!
//! The probing lives in the rootless crate; this module only presents it. Text output is meant
//! for a person deciding what to ask an administrator for: a host line, then one aligned line
//! per probe and, under anything not `ok`, an indented `fix:` line. `--format json` prints one
//! object (host facts plus a `probes` array of `{name, status, detail, fix}`) for scripts and
//! bug reports; `fix` is `null` when nothing needs doing. A `seccomp` object repeats the seccomp
//! probe in fields: whether filters work, the default profile, and how to change it.

use std::io::Write;

use nook_rootless::probe::{Report, Status};
use serde_json::{json, Value};

/// Writes the report to stdout, as a table or (`json`) as one JSON object.
pub fn print(report: &Report, json: bool) -> anyhow::Result<()> {
    let text = if json {
        let mut s = serde_json::to_string_pretty(&to_json(report))?;
        s.push('\n');
        s
    } else {
        render_text(report)
    };
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())?;
    out.flush()?;
    Ok(())
}

/// The JSON form of the report.
pub fn to_json(report: &Report) -> Value {
    let probes: Vec<Value> = report
        .probes
        .iter()
        .map(|p| {
            json!({
                "name": p.name,
                "status": p.status.as_str(),
                "detail": p.detail,
                "fix": p.fix,
            })
        })
        .collect();
    json!({
        "kernel": report.kernel_release,
        "user": report.user,
        "uid": report.uid,
        "gid": report.gid,
        "root": report.is_root,
        "probes": probes,
        "seccomp": seccomp_json(report),
    })
}

/// The seccomp facts in fields of their own: whether filters work here (the probe), the
/// default profile, and the options that change it.
fn seccomp_json(report: &Report) -> Value {
    use nook_rootless::seccomp::default;
    let summary = default::summary();
    json!({
        "filters": report.probe("seccomp").map(|p| p.status == Status::Ok),
        "default_profile": default::NAME,
        "allowed_syscalls": summary.allowed,
        "architectures": summary.architectures,
        "unlisted_syscalls": "ENOSYS",
        "change": ["--security-opt seccomp=unconfined", "--security-opt seccomp=PROFILE.json",
                   "--privileged"],
    })
}

/// The text form: a host line, a blank line, then the aligned table.
pub fn render_text(report: &Report) -> String {
    let mut s = format!(
        "host: kernel {}, user {} (uid {}, gid {}){}\n\n",
        report.kernel_release,
        report.user,
        report.uid,
        report.gid,
        if report.is_root { ", root" } else { "" }
    );
    // Column widths from the data, so a longer probe name never breaks the alignment.
    let name_w = report
        .probes
        .iter()
        .map(|p| p.name.len())
        .max()
        .unwrap_or(0);
    let status_w = [Status::Ok, Status::Missing, Status::Limited]
        .iter()
        .map(|st| st.as_str().len())
        .max()
        .unwrap_or(0);
    for p in &report.probes {
        s.push_str(&format!(
            "{:name_w$}  {:status_w$}  {}\n",
            p.name,
            p.status.as_str(),
            p.detail
        ));
        if let Some(fix) = &p.fix {
            // Indented under the detail column, so the eye finds it below its probe.
            s.push_str(&format!(
                "{:indent$}fix: {fix}\n",
                "",
                indent = name_w + 2 + status_w + 2
            ));
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use nook_rootless::probe::Probe;

    fn sample() -> Report {
        Report {
            kernel_release: "6.1.0-18-amd64".into(),
            user: "alice".into(),
            uid: 1000,
            gid: 1000,
            is_root: false,
            probes: vec![
                Probe {
                    name: "kernel",
                    status: Status::Ok,
                    detail: "6.1.0".into(),
                    fix: None,
                },
                Probe {
                    name: "runtime-dir",
                    status: Status::Missing,
                    detail: "gone".into(),
                    fix: Some("do this".into()),
                },
            ],
        }
    }

    #[test]
    fn text_is_aligned_with_fix_lines() {
        let t = render_text(&sample());
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(
            lines[0],
            "host: kernel 6.1.0-18-amd64, user alice (uid 1000, gid 1000)"
        );
        assert_eq!(lines[1], "");
        assert_eq!(lines[2], "kernel       ok       6.1.0");
        assert_eq!(lines[3], "runtime-dir  missing  gone");
        assert_eq!(lines[4], "                      fix: do this");
        assert_eq!(lines.len(), 5);
    }

    #[test]
    fn json_shape() {
        let v = to_json(&sample());
        assert_eq!(v["user"], "alice");
        assert_eq!(v["root"], false);
        assert_eq!(v["probes"][0]["status"], "ok");
        assert!(v["probes"][0]["fix"].is_null());
        assert_eq!(v["probes"][1]["fix"], "do this");
        assert!(
            v["seccomp"]["filters"].is_null(),
            "no seccomp probe in the sample"
        );
        assert!(v["seccomp"]["allowed_syscalls"].as_u64().unwrap() > 300);
    }
}
