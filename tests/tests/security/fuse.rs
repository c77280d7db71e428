//! The FUSE union server confined to its layers (issue 14). The server runs in the
//! host's mount namespace with the user's rights; a container on `--storage-driver
//! fuse` tries to make it follow an absolute symlink onto the host: by removing a file
//! it holds open and its directory and planting a symlink in the directory's place
//! (then writing, reading, chmod'ing or copying up the file through /proc/self/fd), by
//! the hard-link form (the name the server recorded swapped for a symlink, the file
//! changed through its other name), by renaming directories back and forth with a
//! second process, and through xattrs. Each attempt must leave the host canaries (a
//! directory of the test account's, under its HOME) as they were, and the container's
//! own file must be what changed.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use nook_tests::*;

const SECRET: &str = "host-secret-7c1e";

/// A host directory of the test account's with a 0600 file `f` (holding [`SECRET`],
/// xattr `user.canary`) and an empty directory `d`.
struct Canary {
    dir: tempfile::TempDir,
}

impl Canary {
    fn new() -> Canary {
        let home = std::env::var_os("HOME")
            .map(PathBuf::from)
            .unwrap_or_else(std::env::temp_dir);
        let dir = tempfile::Builder::new()
            .prefix(".nook-fuse-canary-")
            .tempdir_in(&home)
            .or_else(|_| {
                tempfile::Builder::new()
                    .prefix("nook-fuse-canary-")
                    .tempdir()
            })
            .expect("canary dir");
        fs::write(dir.path().join("f"), SECRET).unwrap();
        fs::set_permissions(dir.path().join("f"), fs::Permissions::from_mode(0o600)).unwrap();
        set_xattr(&dir.path().join("f"), "user.canary", b"host");
        fs::create_dir(dir.path().join("d")).unwrap();
        fs::set_permissions(dir.path().join("d"), fs::Permissions::from_mode(0o700)).unwrap();
        Canary { dir }
    }

    fn path(&self) -> &str {
        self.dir.path().to_str().expect("utf-8 home")
    }

    /// Fails unless the canaries are exactly as made.
    fn assert_untouched(&self, what: &str) {
        let f = self.dir.path().join("f");
        let meta = fs::symlink_metadata(&f).unwrap_or_else(|e| panic!("{what}: canary gone: {e}"));
        assert!(meta.file_type().is_file(), "{what}: canary replaced");
        assert_eq!(meta.mode() & 0o7777, 0o600, "{what}: canary mode changed");
        assert_eq!(
            fs::read_to_string(&f).unwrap(),
            SECRET,
            "{what}: canary written"
        );
        assert_eq!(
            get_xattr(&f, "user.canary").as_deref(),
            Some(&b"host"[..]),
            "{what}: canary xattr changed"
        );
        let names = |p: &Path| -> Vec<String> {
            let mut v: Vec<String> = fs::read_dir(p)
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            v.sort();
            v
        };
        assert_eq!(
            names(self.dir.path()),
            ["d", "f"],
            "{what}: entries created on the host"
        );
        assert!(
            names(&self.dir.path().join("d")).is_empty(),
            "{what}: host dir written"
        );
        let d = fs::metadata(self.dir.path().join("d")).unwrap();
        assert_eq!(d.mode() & 0o7777, 0o700, "{what}: host dir mode changed");
    }
}

fn set_xattr(p: &Path, name: &str, value: &[u8]) {
    let c = std::ffi::CString::new(p.to_str().unwrap()).unwrap();
    let n = std::ffi::CString::new(name).unwrap();
    // SAFETY: NUL-terminated strings and a readable value buffer.
    let r = unsafe {
        libc::lsetxattr(
            c.as_ptr(),
            n.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    assert_eq!(
        r,
        0,
        "setxattr {}: {}",
        p.display(),
        std::io::Error::last_os_error()
    );
}

fn get_xattr(p: &Path, name: &str) -> Option<Vec<u8>> {
    let c = std::ffi::CString::new(p.to_str().unwrap()).unwrap();
    let n = std::ffi::CString::new(name).unwrap();
    let mut buf = vec![0u8; 256];
    // SAFETY: NUL-terminated strings; buf writable for its length.
    let r = unsafe { libc::lgetxattr(c.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    (r >= 0).then(|| {
        buf.truncate(r as usize);
        buf
    })
}

/// The image: a busybox root plus `/img/sub/x` (a lower file alone in its directory),
/// `/img/file` and `/img/victim`, read-only layer for the container.
struct Image {
    base: Rootfs,
}

fn image(test: &str) -> Option<Image> {
    let base = match busybox_rootfs() {
        Ok(r) => r,
        Err(e) => {
            skip(test, &e);
            return None;
        }
    };
    let b = base.path();
    fs::create_dir_all(b.join("img/sub")).unwrap();
    fs::write(b.join("img/sub/x"), "image x\n").unwrap();
    fs::write(b.join("img/file"), "image file\n").unwrap();
    fs::write(b.join("img/victim"), "image victim\n").unwrap();
    let img = Image { base };
    // The driver must work here at all.
    let ctr = tempdir();
    let o = run_fuse(&img, ctr.path(), "echo usable", Duration::from_secs(60));
    if o.code() == 0 && o.out().contains("usable") {
        return Some(img);
    }
    if o.err().contains("is not usable here") {
        skip(
            test,
            &format!("the FUSE driver is not usable here: {}", o.err().trim()),
        );
        return None;
    }
    panic!("the FUSE driver failed a trivial run: {o}");
}

fn run_fuse(img: &Image, ctr: &Path, script: &str, timeout: Duration) -> Output {
    let mut cmd = nook();
    cmd.args(["run", "--rm", "--storage-driver", "fuse", "--layer"])
        .arg(img.base.path())
        .arg("--rootfs")
        .arg(ctr)
        .args(["/bin/sh", "-c", script]);
    spawn(&mut cmd).wait(timeout)
}

/// Runs `script` (with `$H` the host canary directory) in a fresh container on the FUSE
/// driver; returns its output after checking the canaries.
fn attempt(test: &str, script: &str) -> Option<Output> {
    assert_unprivileged();
    let img = image(test)?;
    let canary = Canary::new();
    let ctr = tempdir();
    let script = format!("H='{}'\n{script}", canary.path());
    let o = run_fuse(&img, ctr.path(), &script, TIMEOUT);
    canary.assert_untouched(test);
    // The writable layer holds nothing pointing at or copied from the host.
    cleanup(ctr.path());
    Some(o)
}

fn cleanup(ctr: &Path) {
    let _ = Command::new(nook_bin())
        .args(["unshare", "rm", "-rf"])
        .arg(ctr.join("diff"))
        .arg(ctr.join("work"))
        .output();
}

/// A file held open, its directory removed and replaced by a symlink to a host
/// directory, then reopened for writing through /proc/self/fd: the write lands in the
/// container's own (deleted) file.
#[test]
fn overwrite_through_a_replaced_directory() {
    let Some(o) = attempt(
        "overwrite_through_a_replaced_directory",
        "mkdir /x && echo mine > /x/f && exec 3</x/f && rm /x/f && rmdir /x && ln -s \"$H\" /x \
         && echo pwned > /proc/self/fd/3 && cat /proc/self/fd/3 && echo > /x/f 2>/dev/null; \
         [ -e /x/f ] || echo host-unreachable",
    ) else {
        return;
    };
    assert_eq!(o.success().out(), "pwned\nhost-unreachable\n");
}

/// The same to read a 0600 host file: the container reads its own file, never the
/// host's.
#[test]
fn read_through_a_replaced_directory() {
    let Some(o) = attempt(
        "read_through_a_replaced_directory",
        "mkdir /x && echo mine > /x/f && exec 3</x/f && rm /x/f && rmdir /x && ln -s \"$H\" /x \
         && cat /proc/self/fd/3",
    ) else {
        return;
    };
    assert_eq!(o.success().out(), "mine\n");
    assert!(!o.out().contains(SECRET) && !o.err().contains(SECRET));
}

/// A lower (image) file held open, deleted with its directory, the directory replaced
/// by a symlink to a host directory, then opened for writing: the copy-up makes an
/// unnamed copy, no file appears on the host.
#[test]
fn create_through_copy_up_of_a_deleted_image_file() {
    let Some(o) = attempt(
        "create_through_copy_up_of_a_deleted_image_file",
        "exec 3</img/sub/x && rm /img/sub/x && rmdir /img/sub && ln -s \"$H/d\" /img/sub \
         && echo pwned >> /proc/self/fd/3 && cat /proc/self/fd/3 && ls -A /img",
    ) else {
        return;
    };
    assert_eq!(o.success().out(), "image x\npwned\nfile\nsub\nvictim\n");
}

/// chmod and truncate through /proc/self/fd of a file whose directory was replaced:
/// the container's file changes, the host's does not.
#[test]
fn chmod_and_truncate_through_a_replaced_directory() {
    let Some(o) = attempt(
        "chmod_and_truncate_through_a_replaced_directory",
        "mkdir /x && echo mine > /x/f && exec 3</x/f && rm /x/f && rmdir /x && ln -s \"$H\" /x \
         && chmod 777 /proc/self/fd/3 && truncate -s 1 /proc/self/fd/3 \
         && stat -L -c '%a %s' /proc/self/fd/3; \
         exec 4</img/file && rm /img/file && ln -s \"$H/f\" /img/file \
         && chmod 777 /proc/self/fd/4 && stat -L -c '%a' /proc/self/fd/4",
    ) else {
        return;
    };
    assert_eq!(o.success().out(), "777 1\n777\n");
}

/// The hard-link form: the name the server recorded for a file is removed and a
/// symlink to a host file put in its place; chmod and truncate through the file's other
/// name change the file, not the host's (an upper file, and an image file after
/// copy-up).
#[test]
fn hard_link_forms_of_chmod_and_truncate() {
    let Some(o) = attempt(
        "hard_link_forms_of_chmod_and_truncate",
        // After `ln A B` the server's record of the file is B, the name just made.
        "echo upper > /a && ln /a /b && rm /b && ln -s \"$H/f\" /b \
         && chmod 777 /a && truncate -s 0 /a && stat -c '%a %s %h' /a; \
         ln /img/victim /v2 && rm /v2 && ln -s \"$H/f\" /v2 \
         && chmod 777 /img/victim && truncate -s 2 /img/victim \
         && stat -c '%a %s %h' /img/victim && readlink /v2 >/dev/null && echo link-kept",
    ) else {
        return;
    };
    assert_eq!(o.success().out(), "777 0 1\n777 2 1\nlink-kept\n");
}

/// Two processes in the container: one renames a directory away and back with a symlink
/// to a host directory in its place in between, the other chmods, truncates, writes
/// and copies up files in it all the while. Nothing of the host changes (the races are
/// bounded by counts, not time).
#[test]
fn rename_races_between_two_processes() {
    let Some(o) = attempt(
        "rename_races_between_two_processes",
        "mkdir -p /w/d && echo mine > /w/d/f && cp /img/victim /w/d/v && \
         ( i=0; while [ $i -lt 1500 ]; do mv /w/d /w/e; ln -s \"$H\" /w/d; rm /w/d; mv /w/e /w/d; \
           i=$((i+1)); done; echo renamer-done ) & \
         ( i=0; while [ $i -lt 1500 ]; do chmod 777 /w/d/f 2>/dev/null; truncate -s 0 /w/d/f 2>/dev/null; \
           echo x >> /w/d/f 2>/dev/null; cat /w/d/f >/dev/null 2>&1; chmod 700 /w/d/v 2>/dev/null; \
           { chmod 777 /proc/self/fd/3; } 3</w/d/f 2>/dev/null; \
           i=$((i+1)); done; echo changer-done ) & wait; ls /w/d",
    ) else {
        return;
    };
    let out = o.success().out();
    assert!(
        out.contains("renamer-done") && out.contains("changer-done"),
        "{out}"
    );
    assert!(out.ends_with("f\nv\n"), "{out}");
}

/// A static helper for the xattr calls (busybox has none): built with the system's C
/// compiler, which every Rust toolchain needs for linking.
fn xattr_helper(dir: &Path) -> Result<PathBuf, String> {
    let src = dir.join("xa.c");
    fs::write(
        &src,
        r#"#include <stdio.h>
#include <string.h>
#include <sys/xattr.h>
int main(int c, char **v) {
    char buf[256];
    if (c == 5 && !strcmp(v[1], "set")) {
        if (setxattr(v[2], v[3], v[4], strlen(v[4]), 0)) { perror("setxattr"); return 1; }
        return 0;
    }
    if (c == 4 && !strcmp(v[1], "get")) {
        ssize_t n = getxattr(v[2], v[3], buf, sizeof buf - 1);
        if (n < 0) { perror("getxattr"); return 1; }
        buf[n] = 0; printf("%s\n", buf); return 0;
    }
    if (c == 4 && !strcmp(v[1], "rm")) {
        if (removexattr(v[2], v[3])) { perror("removexattr"); return 1; }
        return 0;
    }
    return 2;
}
"#,
    )
    .map_err(|e| e.to_string())?;
    let bin = dir.join("xa");
    let out = Command::new("cc")
        .args(["-static", "-O2", "-o"])
        .arg(&bin)
        .arg(&src)
        .output()
        .map_err(|e| format!("no C compiler (cc): {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "cc -static failed (static libc missing?): {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(bin)
}

/// xattrs through a replaced directory and through the hard-link form: set, get and
/// remove reach the container's own file; the host file's xattr is neither read nor
/// changed.
#[test]
fn xattrs_through_replaced_names() {
    let test = "xattrs_through_replaced_names";
    assert_unprivileged();
    let Some(img) = image(test) else { return };
    let tools = tempdir();
    let helper = match xattr_helper(tools.path()) {
        Ok(h) => h,
        Err(why) => return skip(test, &why),
    };
    fs::copy(&helper, img.base.path().join("bin/xa")).unwrap();
    let canary = Canary::new();
    let ctr = tempdir();
    let script = format!(
        "H='{}'\n\
         mkdir /x && echo mine > /x/f && exec 3</x/f && rm /x/f && rmdir /x && ln -s \"$H\" /x && \
         xa set /proc/self/fd/3 user.canary pwned && xa get /proc/self/fd/3 user.canary && \
         xa rm /proc/self/fd/3 user.canary && (xa get /proc/self/fd/3 user.canary 2>/dev/null || echo removed); \
         echo u > /a && ln /a /b && rm /b && ln -s \"$H/f\" /b && \
         xa set /a user.canary pwned && xa get /a user.canary && xa rm /a user.canary && echo hl-done",
        canary.path()
    );
    let o = run_fuse(&img, ctr.path(), &script, TIMEOUT);
    canary.assert_untouched(test);
    cleanup(ctr.path());
    assert_eq!(o.success().out(), "pwned\nremoved\npwned\nhl-done\n");
}
