//! An overlay root with more layers than mount(2)'s one page of options holds (about 40
//! layers of a store under a home directory): the child mounts it through fsconfig's
//! `lowerdir+` (Linux 6.8+), and every layer is visible (issue 5).

use std::fs;
use std::time::Duration;

use nook_tests::*;

const LAYERS: usize = 60;

#[test]
fn sixty_layers_with_long_paths_mount_as_one_overlay() {
    assert_unprivileged();
    let base = match busybox_rootfs() {
        Ok(r) => r,
        Err(why) => {
            skip("sixty_layers_with_long_paths_mount_as_one_overlay", &why);
            return;
        }
    };
    let dir = tempdir();
    // 60 paths of ~120 bytes: 7 KiB of lowerdir, well over the 4095 bytes of a page.
    let long = "l".repeat(100);
    let mut cmd = nook();
    cmd.args(["run", "--rm", "--storage-driver", "overlay", "--layer"])
        .arg(base.path());
    for i in 0..LAYERS {
        let layer = dir.path().join(format!("{long}-{i:02}"));
        fs::create_dir_all(layer.join("layers")).unwrap();
        fs::write(
            layer.join("layers").join(format!("{i:02}")),
            format!("{i}\n"),
        )
        .unwrap();
        // Each layer also overrides the one below: the topmost must win.
        fs::write(layer.join("layers/top"), format!("{i}\n")).unwrap();
        cmd.arg("--layer").arg(&layer);
    }
    let ctr = dir.path().join("ctr");
    fs::create_dir(&ctr).unwrap();
    cmd.arg("--rootfs").arg(&ctr).args([
        "sh",
        "-c",
        "ls /layers | grep -c '^[0-9]'; cat /layers/top",
    ]);
    let o = spawn(&mut cmd).wait(Duration::from_secs(120));
    if o.code() == 125 && o.err().contains("lowerdir+") {
        skip(
            "sixty_layers_with_long_paths_mount_as_one_overlay",
            "this kernel has no fsconfig lowerdir+ (Linux 6.8+); such images need --storage-driver fuse",
        );
        return;
    }
    if o.code() == 125 && o.err().contains("overlay") && o.err().contains("not available") {
        skip(
            "sixty_layers_with_long_paths_mount_as_one_overlay",
            "no overlayfs in a user namespace here",
        );
        return;
    }
    assert_eq!(o.success().out(), format!("{LAYERS}\n{}\n", LAYERS - 1));
}
