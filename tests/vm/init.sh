#!/bin/busybox sh
# PID 1 of the VM lane's guest, stage 1 (in the initramfs).
#
# Loads the modules, mounts the host's / read-only over 9p as the new root (with tmpfs
# where the guest must write), the run's I/O directory and the shared directory, mounts
# a pure cgroup v2 hierarchy with every controller, and delegates the subtree
# /sys/fs/cgroup/lane.slice/user to the test user the way systemd's Delegate=yes does:
# controllers enabled top-down, the subtree's directory and its cgroup.procs,
# cgroup.threads and cgroup.subtree_control chowned. The test command will run in the
# leaf user/session (a cgroup with processes cannot enable controllers for children).
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
for m in /modules/*.ko; do insmod "$m" || echo "lane: insmod $m failed"; done

fail() { echo "lane: $*"; poweroff -f; }
NINEP=trans=virtio,version=9p2000.L,msize=512000
R=/newroot
mount -t 9p -o ro,$NINEP,cache=loose hostroot $R || fail "cannot mount the host's root"
for d in tmp var/tmp run; do mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs $R/$d; done
chmod 755 $R/run
mount -t proc proc $R/proc
mount -t sysfs sysfs $R/sys
mount -t devtmpfs devtmpfs $R/dev
[ -e $R/dev/fuse ] && chmod 666 $R/dev/fuse    # the FUSE driver, as tests/run.sh does
mkdir -p $R/dev/pts $R/dev/shm
mount -t devpts -o gid=5,mode=620,ptmxmode=666 devpts $R/dev/pts
ln -sf pts/ptmx $R/dev/ptmx
mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs $R/dev/shm
ln -sf /proc/self/fd $R/dev/fd
mount -t cgroup2 -o nsdelegate,memory_recursiveprot cgroup2 $R/sys/fs/cgroup || fail "cannot mount cgroup2"

mkdir -p $R/run/lane
mount -t 9p -o $NINEP lane $R/run/lane || fail "cannot mount the run's I/O directory"
. $R/run/lane/env                               # LANE_UID LANE_GID LANE_SHARE LANE_CWD
mkdir -p "$R$LANE_SHARE"
mount -t 9p -o $NINEP,cache=mmap share "$R$LANE_SHARE" || fail "cannot mount $LANE_SHARE"

mkdir -p $R/dev/virtio-ports
for p in /sys/class/virtio-ports/vport*; do
    [ -e "$p/name" ] && ln -sf "../$(basename "$p")" "$R/dev/virtio-ports/$(cat "$p/name")"
done

C=$R/sys/fs/cgroup
CTL="+cpu +cpuset +io +memory +pids"
mkdir -p $C/lane.slice/user/session
echo "$CTL" >$C/cgroup.subtree_control
echo "$CTL" >$C/lane.slice/cgroup.subtree_control
echo "$CTL" >$C/lane.slice/user/cgroup.subtree_control
for d in $C/lane.slice/user $C/lane.slice/user/session; do
    chown "$LANE_UID:$LANE_GID" $d $d/cgroup.procs $d/cgroup.threads $d/cgroup.subtree_control
done
mkdir -p $R/tmp/home
chown "$LANE_UID:$LANE_GID" $R/tmp/home
hostname lane
ip link set lo up
cp /guest.sh $R/run/lane-guest.sh
umount /proc /sys /dev
exec switch_root $R /bin/busybox sh /run/lane-guest.sh
