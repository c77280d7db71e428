//! `--user USER[:GROUP]`, the container's HOME and `nook top`'s user names, read from
//! the container's own /etc/passwd and /etc/group (the host's for the `host` image).

use std::collections::HashMap;
use std::path::Path;

use crate::bail;
use crate::error::Result;
use crate::format_err;

/// Who the container's process runs as.
#[derive(Debug, PartialEq, Eq)]
pub struct Identity {
    pub uid: u32,
    pub gid: u32,
    pub home: String,
}

impl Identity {
    /// `uid`, with its group and home from passwd when listed there.
    pub fn for_uid(uid: u32, gid: Option<u32>, root: &Path) -> Identity {
        let entry = read(root, "etc/passwd")
            .lines()
            .filter_map(parse_passwd)
            .find(|e| e.uid == uid);
        Identity {
            uid,
            gid: gid.or(entry.as_ref().map(|e| e.gid)).unwrap_or(0),
            home: entry
                .map(|e| e.home)
                .unwrap_or_else(|| if uid == 0 { "/root" } else { "/" }.to_string()),
        }
    }
}

struct PasswdEntry {
    name: String,
    uid: u32,
    gid: u32,
    home: String,
}

/// The image's `file` (etc/passwd, etc/group), resolved inside `root` by the confined
/// resolver: an image's symlink cannot make nook read a host file. Only a regular file
/// is read (a FIFO would block), and at most 16 MiB of it; anything else reads as empty.
fn read(root: &Path, file: &str) -> String {
    nook_fs::at::Root::open_container(root)
        .and_then(|root| root.read_regular(Path::new(file), 16 << 20))
        .unwrap_or_default()
}

fn parse_passwd(line: &str) -> Option<PasswdEntry> {
    let f: Vec<&str> = line.split(':').collect();
    if f.len() < 7 {
        return None;
    }
    Some(PasswdEntry {
        name: f[0].to_string(),
        uid: f[2].parse().ok()?,
        gid: f[3].parse().ok()?,
        home: f[5].to_string(),
    })
}

/// Every user name of the container's /etc/passwd by uid (the first entry of a uid
/// wins, as getpwuid's): how `nook top` names processes, as podman's top does.
pub fn names(root: &Path) -> HashMap<u32, String> {
    let mut names = HashMap::new();
    for e in read(root, "etc/passwd").lines().filter_map(parse_passwd) {
        names.entry(e.uid).or_insert(e.name);
    }
    names
}

/// Resolves `USER[:GROUP]` (names or numbers) in the container's files.
pub fn resolve(spec: &str, root: &Path) -> Result<Identity> {
    let (user, group) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let uid = match user.parse::<u32>() {
        Ok(uid) => uid,
        Err(_) => match read(root, "etc/passwd")
            .lines()
            .filter_map(parse_passwd)
            .find(|e| e.name == user)
        {
            Some(e) => e.uid,
            None => bail!("--user {spec:?}: no user {user:?} in the container's /etc/passwd"),
        },
    };
    let gid = match group {
        None | Some("") => None,
        Some(g) => Some(match g.parse::<u32>() {
            Ok(gid) => gid,
            Err(_) => group_id(root, g).ok_or_else(|| {
                format_err!("--user {spec:?}: no group {g:?} in the container's /etc/group")
            })?,
        }),
    };
    Ok(Identity::for_uid(uid, gid, root))
}

/// The uid and gid of the user `name` in the container's /etc/passwd.
pub fn user_ids(root: &Path, name: &str) -> Option<(u32, u32)> {
    read(root, "etc/passwd")
        .lines()
        .filter_map(parse_passwd)
        .find(|e| e.name == name)
        .map(|e| (e.uid, e.gid))
}

fn group_id(root: &Path, name: &str) -> Option<u32> {
    read(root, "etc/group").lines().find_map(|line| {
        let f: Vec<&str> = line.split(':').collect();
        (f.len() >= 3 && f[0] == name).then(|| f[2].parse().ok())?
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numeric_and_named_users() {
        let root = std::env::temp_dir().join(format!("nook-users-{}", std::process::id()));
        std::fs::create_dir_all(root.join("etc")).unwrap();
        std::fs::write(
            root.join("etc/passwd"),
            "root:x:0:0:root:/root:/bin/sh\nalice:x:1000:1001::/home/alice:/bin/sh\n",
        )
        .unwrap();
        std::fs::write(root.join("etc/group"), "root:x:0:\nstaff:x:50:\n").unwrap();
        assert_eq!(
            resolve("alice", &root).unwrap(),
            Identity {
                uid: 1000,
                gid: 1001,
                home: "/home/alice".into()
            }
        );
        assert_eq!(resolve("0:staff", &root).unwrap().gid, 50);
        assert_eq!(resolve("4242", &root).unwrap().home, "/");
        assert!(resolve("bob", &root).is_err());
        assert!(resolve("0:nogroup", &root).is_err());
        let names = names(&root);
        assert_eq!(names.get(&0).map(String::as_str), Some("root"));
        assert_eq!(names.get(&1000).map(String::as_str), Some("alice"));
        assert_eq!(names.get(&4242), None);
        std::fs::remove_dir_all(&root).unwrap();
    }
}
