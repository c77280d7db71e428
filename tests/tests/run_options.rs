//! `nook run` options: volumes, environment, workdir, user and keep-id, capabilities,
//! no-new-privileges, `--rootfs`, `--rm`, `--name`.

use std::fs;
use std::os::unix::fs::MetadataExt;

use nook_tests::*;

#[test]
fn rw_volume_writes_reach_the_host_owned_by_the_user() {
    assert_unprivileged();
    let dir = tempdir();
    fs::write(dir.path().join("in"), "from-host\n").unwrap();
    let spec = format!("{}:/data", dir.path().display());
    let o = run(&[
        "--rm",
        "-v",
        &spec,
        "host",
        "sh",
        "-c",
        "cat /data/in && echo from-container > /data/out",
    ]);
    o.success();
    assert_eq!(o.out(), "from-host\n", "{o}");
    let out = dir.path().join("out");
    assert_eq!(
        fs::read_to_string(&out).unwrap_or_default(),
        "from-container\n",
        "{o}"
    );
    assert_eq!(
        fs::metadata(&out).unwrap().uid(),
        uid(),
        "a file written as root inside is the user's outside"
    );
    // Explicit :rw is the same.
    let spec = format!("{}:/data:rw", dir.path().display());
    run(&[
        "--rm",
        "--volume",
        &spec,
        "host",
        "sh",
        "-c",
        "echo again > /data/out2",
    ])
    .success();
    assert_eq!(
        fs::read_to_string(dir.path().join("out2")).unwrap_or_default(),
        "again\n"
    );
}

#[test]
fn ro_volume_is_readable_not_writable() {
    assert_unprivileged();
    let dir = tempdir();
    fs::write(dir.path().join("in"), "ro-data\n").unwrap();
    let spec = format!("{}:/data:ro", dir.path().display());
    let o = run(&[
        "--rm",
        "-v",
        &spec,
        "host",
        "sh",
        "-c",
        "cat /data/in; if echo x 2>/dev/null > /data/out; then echo wrote; else echo refused; fi; grep ' /data ' /proc/self/mountinfo",
    ]);
    o.success();
    let out = o.out();
    let mut lines = out.lines();
    assert_eq!(lines.next(), Some("ro-data"), "{o}");
    assert_eq!(lines.next(), Some("refused"), "{o}");
    let m = parse_mountinfo(lines.next().unwrap_or(""));
    assert!(
        m.first().map(|m| m.read_only()).unwrap_or(false),
        "/data should be mounted ro\n{o}"
    );
    assert!(
        !dir.path().join("out").exists(),
        "a read-only volume was written"
    );
}

#[test]
fn volume_of_a_single_file() {
    assert_unprivileged();
    let dir = tempdir();
    let f = dir.path().join("conf");
    fs::write(&f, "k=v\n").unwrap();
    let spec = format!("{}:/conf.txt:ro", f.display());
    let o = run(&["--rm", "-v", &spec, "host", "cat", "/conf.txt"]);
    o.success();
    assert_eq!(o.out(), "k=v\n", "{o}");
}

#[test]
fn env_options_set_exactly_what_was_asked() {
    assert_unprivileged();
    let mut cmd = nook();
    cmd.env("NOOK_TEST_COPIED", "copied value")
        .env("NOOK_TEST_NOT_PASSED", "leak");
    cmd.args([
        "run",
        "--rm",
        "-e",
        "FOO=bar",
        "--env",
        "SPACED=a b  c",
        "-e",
        "EMPTY=",
        "-e",
        "EQ=x=y",
        "-e",
        "NOOK_TEST_COPIED",
        "host",
        "sh",
        "-c",
        "echo \"FOO=$FOO\"; echo \"SPACED=$SPACED\"; echo \"EMPTY=${EMPTY-unset}\"; echo \"EQ=$EQ\"; \
         echo \"COPIED=$NOOK_TEST_COPIED\"; echo \"LEAK=${NOOK_TEST_NOT_PASSED-unset}\"; echo \"PATH=$PATH\"",
    ]);
    let o = spawn(&mut cmd).wait(TIMEOUT);
    o.success();
    let out = o.out();
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        &lines[..6],
        [
            "FOO=bar",
            "SPACED=a b  c",
            "EMPTY=",
            "EQ=x=y",
            "COPIED=copied value",
            "LEAK=unset"
        ],
        "{o}"
    );
    assert!(
        lines[6].contains("/usr/bin") && lines[6].contains("/bin"),
        "a default PATH is set\n{o}"
    );
}

#[test]
fn env_file_is_read() {
    assert_unprivileged();
    let dir = tempdir();
    let file = dir.path().join("env");
    fs::write(&file, "# a comment\nA=1\n\nB=two words\nC=x=y\n").unwrap();
    let o = run(&[
        "--rm",
        "--env-file",
        file.to_str().unwrap(),
        "-e",
        "B=overridden",
        "host",
        "sh",
        "-c",
        "echo \"$A|$B|$C\"",
    ]);
    o.success();
    assert_eq!(
        o.line(),
        "1|overridden|x=y",
        "-e after --env-file wins\n{o}"
    );
    let o = run(&[
        "--rm",
        "--env-file",
        file.to_str().unwrap(),
        "host",
        "sh",
        "-c",
        "echo \"$A|$B|$C\"",
    ]);
    o.success();
    assert_eq!(o.line(), "1|two words|x=y", "{o}");
}

#[test]
fn missing_env_file_is_125() {
    assert_unprivileged();
    let o = run(&[
        "--rm",
        "--env-file",
        "/nonexistent/nook.env",
        "host",
        "true",
    ]);
    o.assert_error_line(125, &["/nonexistent/nook.env"]);
}

#[test]
fn workdir() {
    assert_unprivileged();
    let o = run(&["--rm", "host", "pwd"]);
    o.success();
    assert_eq!(o.line(), "/", "default workdir\n{o}");
    let o = run(&["--rm", "-w", "/usr/share", "host", "pwd"]);
    o.success();
    assert_eq!(o.line(), "/usr/share", "{o}");
    let o = run(&[
        "--rm",
        "--workdir",
        "/tmp",
        "host",
        "sh",
        "-c",
        "pwd; echo x > rel && cat /tmp/rel",
    ]);
    o.success();
    assert_eq!(o.out(), "/tmp\nx\n", "{o}");
}

#[test]
fn user_0_0() {
    assert_unprivileged();
    let o = run(&["--rm", "--user", "0:0", "host", "sh", "-c", "id -u; id -g"]);
    o.success();
    assert_eq!(o.out(), "0\n0\n", "{o}");
    let o = run(&["--rm", "-u", "0", "host", "id", "-u"]);
    o.success();
    assert_eq!(o.line(), "0", "{o}");
}

#[test]
fn userns_keep_id_keeps_the_users_ids() {
    assert_unprivileged();
    let o = run(&[
        "--rm",
        "--userns=keep-id",
        "host",
        "sh",
        "-c",
        "id -u; id -g; head -n1 /proc/self/uid_map",
    ]);
    o.success();
    let out = o.out();
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 3, "{o}");
    assert_eq!(
        lines[0],
        uid().to_string(),
        "id -u inside should be the user's uid\n{o}"
    );
    assert_eq!(
        lines[1],
        gid().to_string(),
        "id -g inside should be the user's gid\n{o}"
    );
    assert_ne!(lines[2], "", "{o}");
    // And files written in a volume stay the user's.
    let dir = tempdir();
    let spec = format!("{}:/data", dir.path().display());
    run(&[
        "--rm",
        "--userns=keep-id",
        "-v",
        &spec,
        "host",
        "touch",
        "/data/f",
    ])
    .success();
    assert_eq!(fs::metadata(dir.path().join("f")).unwrap().uid(), uid());
}

fn caps(o: &Output, which: &str) -> u64 {
    let line = o
        .out()
        .lines()
        .find(|l| l.starts_with(which))
        .unwrap_or_else(|| panic!("no {which} line\n{o}"))
        .to_string();
    u64::from_str_radix(line.split_whitespace().nth(1).unwrap(), 16).unwrap()
}

const CAP_CHOWN: u32 = 0;
const CAP_KILL: u32 = 5;
const CAP_NET_ADMIN: u32 = 12;
const CAP_SYS_ADMIN: u32 = 21;
const CAP_SYS_MODULE: u32 = 16;

fn has(mask: u64, cap: u32) -> bool {
    mask & (1 << cap) != 0
}

#[test]
fn default_capabilities_are_the_oci_defaults() {
    assert_unprivileged();
    let o = run(&[
        "--rm",
        "host",
        "grep",
        "-E",
        "^Cap(Eff|Bnd|Prm)",
        "/proc/self/status",
    ]);
    o.success();
    let (eff, bnd) = (caps(&o, "CapEff"), caps(&o, "CapBnd"));
    assert!(
        has(eff, CAP_CHOWN) && has(eff, CAP_KILL),
        "CHOWN and KILL are default caps: {eff:#x}\n{o}"
    );
    for (cap, name) in [
        (CAP_SYS_ADMIN, "SYS_ADMIN"),
        (CAP_NET_ADMIN, "NET_ADMIN"),
        (CAP_SYS_MODULE, "SYS_MODULE"),
    ] {
        assert!(
            !has(eff, cap),
            "{name} must not be effective by default: {eff:#x}\n{o}"
        );
        assert!(
            !has(bnd, cap),
            "{name} must be dropped from the bounding set: {bnd:#x}\n{o}"
        );
    }
}

#[test]
fn cap_add_and_cap_drop() {
    assert_unprivileged();
    let o = run(&[
        "--rm",
        "--cap-add",
        "SYS_ADMIN",
        "--cap-drop",
        "CHOWN",
        "host",
        "grep",
        "^Cap",
        "/proc/self/status",
    ]);
    o.success();
    let eff = caps(&o, "CapEff");
    assert!(
        has(eff, CAP_SYS_ADMIN),
        "--cap-add SYS_ADMIN: {eff:#x}\n{o}"
    );
    assert!(!has(eff, CAP_CHOWN), "--cap-drop CHOWN: {eff:#x}\n{o}");
    // podman also accepts the CAP_ prefix and lower case.
    let o = run(&[
        "--rm",
        "--cap-add",
        "cap_net_admin",
        "host",
        "grep",
        "^CapEff",
        "/proc/self/status",
    ]);
    o.success();
    assert!(has(caps(&o, "CapEff"), CAP_NET_ADMIN), "{o}");
    let o = run(&[
        "--rm",
        "--cap-drop",
        "ALL",
        "host",
        "grep",
        "^Cap",
        "/proc/self/status",
    ]);
    o.success();
    assert_eq!(caps(&o, "CapEff"), 0, "--cap-drop ALL\n{o}");
    assert_eq!(
        caps(&o, "CapBnd"),
        0,
        "--cap-drop ALL empties the bounding set\n{o}"
    );
    // Without CAP_CHOWN root inside cannot chown a file it does not own... but it owns
    // everything it creates, so check a capability's effect instead: with ALL dropped,
    // DAC checks apply to root too.
    let o = run(&[
        "--rm",
        "--cap-drop",
        "ALL",
        "host",
        "sh",
        "-c",
        "touch /f && chmod 000 /f && if cat /f 2>/dev/null; then echo read; else echo denied; fi",
    ]);
    o.success();
    assert_eq!(
        o.line(),
        "denied",
        "without CAP_DAC_OVERRIDE a mode-000 file is unreadable\n{o}"
    );
}

#[test]
fn unknown_capability_is_125() {
    assert_unprivileged();
    let o = run(&["--rm", "--cap-add", "NOT_A_CAP", "host", "true"]);
    o.assert_error_line(125, &["NOT_A_CAP"]);
}

#[test]
fn no_new_privileges_is_on_by_default_and_can_be_turned_off() {
    assert_unprivileged();
    let nnp = |args: &[&str]| {
        let mut a = vec!["--rm"];
        a.extend_from_slice(args);
        a.extend_from_slice(&["host", "grep", "^NoNewPrivs:", "/proc/self/status"]);
        let o = run(&a);
        o.success();
        o.line().split_whitespace().nth(1).unwrap_or("").to_string()
    };
    assert_eq!(nnp(&[]), "1", "no-new-privileges is on by default");
    assert_eq!(nnp(&["--security-opt", "no-new-privileges"]), "1");
    assert_eq!(nnp(&["--security-opt", "no-new-privileges=true"]), "1");
    assert_eq!(nnp(&["--security-opt", "no-new-privileges=false"]), "0");
}

#[test]
fn rootfs_runs_a_busybox_root() {
    assert_unprivileged();
    let rootfs = match busybox_rootfs() {
        Ok(r) => r,
        Err(why) => return skip("rootfs_runs_a_busybox_root", &why),
    };
    let o = run(&[
        "--rm",
        "--rootfs",
        rootfs.path_str(),
        "/bin/sh",
        "-c",
        "cat /etc/nook-rootfs-marker; echo; echo $$; test -e /etc/os-release && echo host-visible; \
         test -c /dev/null && test -d /proc/self && echo mounts-ok; id -u; ls /",
    ]);
    o.success();
    let out = o.out();
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines.len() >= 4, "{o}");
    assert_eq!(lines[0], rootfs.marker, "not the rootfs given\n{o}");
    assert_eq!(lines[1], "1", "{o}");
    assert_eq!(
        lines[2], "mounts-ok",
        "host files visible, or /dev /proc missing\n{o}"
    );
    assert_eq!(lines[3], "0", "{o}");
}

#[test]
fn rootfs_default_command_and_path_lookup() {
    assert_unprivileged();
    let rootfs = match busybox_rootfs() {
        Ok(r) => r,
        Err(why) => return skip("rootfs_default_command_and_path_lookup", &why),
    };
    // CMD defaults to /bin/sh, fed from stdin with -i.
    let mut cmd = nook();
    cmd.args(["run", "--rm", "-i", "--rootfs", rootfs.path_str()])
        .stdin(std::process::Stdio::piped());
    let mut p = spawn(&mut cmd);
    p.feed_stdin(b"busybox true && echo via-default-sh\n".to_vec());
    let o = p.wait(TIMEOUT);
    o.success();
    assert_eq!(o.out(), "via-default-sh\n", "{o}");
    // A bare command name is found on PATH inside the rootfs.
    let o = run(&["--rm", "--rootfs", rootfs.path_str(), "echo", "found"]);
    o.success();
    assert_eq!(o.line(), "found", "{o}");
    // Command not found inside a rootfs: 127.
    let o = run(&["--rm", "--rootfs", rootfs.path_str(), "nook-no-such-cmd"]);
    o.assert_error_line(127, &["nook-no-such-cmd"]);
}

/// Every path under `dir` (names) and every small file's content.
fn state_text(dir: &std::path::Path) -> String {
    let mut s = String::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        let Ok(rd) = fs::read_dir(&d) else { continue };
        for e in rd.flatten() {
            let p = e.path();
            s += &format!("{}\n", p.display());
            match e.file_type() {
                Ok(t) if t.is_dir() => todo.push(p),
                Ok(t) if t.is_file() => {
                    if let Ok(b) = fs::read(&p) {
                        if b.len() < 1 << 20 {
                            s += &String::from_utf8_lossy(&b);
                            s += "\n";
                        }
                    }
                }
                _ => {}
            }
        }
    }
    s
}

#[test]
fn rm_leaves_nothing_in_the_state_dir() {
    assert_unprivileged();
    let name = format!("nook-rm-{}", token());
    // The default hostname is the container id: print it to know what to look for.
    let o = run(&["--rm", "--name", &name, "host", "uname", "-n"]);
    o.success();
    let id = o.line();
    assert_eq!(id.len(), 12, "{o}");
    let state = state_text(&state_dir());
    assert!(
        !state.contains(&id),
        "--rm left container {id} in {}:\n{state}",
        state_dir().display()
    );
    assert!(
        !state.contains(&name),
        "--rm left {name} in {}:\n{state}",
        state_dir().display()
    );
}

#[test]
fn state_dir_is_private() {
    assert_unprivileged();
    run(&["--rm", "host", "true"]).success();
    let dir = state_dir();
    let md = fs::metadata(&dir).unwrap_or_else(|e| panic!("state dir {}: {e}", dir.display()));
    assert_eq!(
        md.uid(),
        uid(),
        "{} should be owned by the user",
        dir.display()
    );
    assert_eq!(
        md.mode() & 0o077,
        0,
        "{} should be 0700, is {:o}",
        dir.display(),
        md.mode() & 0o7777
    );
}
