# PID 1 of the VM lane's guest, stage 2 (on the host's root, read-only).
# Runs the command as the test user inside the delegated subtree's leaf, with its
# output on the virtio serial ports, writes its exit status for the host, powers off.
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
. /run/lane/env
LEAF=/sys/fs/cgroup/lane.slice/user/session
OUT=/dev/virtio-ports/lane.out; ERR=/dev/virtio-ports/lane.err
[ -e $OUT ] || OUT=/dev/console
[ -e $ERR ] || ERR=/dev/console
cd "$LANE_CWD" 2>/dev/null || cd /
AS=""
[ "$LANE_UID" = 0 ] || AS="/usr/bin/setpriv --reuid=$LANE_UID --regid=$LANE_GID --clear-groups --inh-caps=-all --"
/bin/busybox sh -c 'echo $$ >'$LEAF'/cgroup.procs && exec "$@"' sh \
    /usr/bin/env -i HOME=/tmp/home USER=lane LOGNAME=lane LANG=C.UTF-8 TMPDIR=/tmp \
    PATH=$PATH NOOK_VM_LANE=1 NOOK_DELEGATED_CGROUP=/sys/fs/cgroup/lane.slice/user \
    $AS /bin/sh /run/lane/cmd.sh </dev/null >$OUT 2>$ERR
echo $? >/run/lane/rc
/bin/busybox sync
/bin/busybox poweroff -f
