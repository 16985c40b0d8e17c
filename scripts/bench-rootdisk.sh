#!/usr/bin/env bash
# Package work on a computer's root disk, two ways, on the same machine in
# one run (docs/benchmarks.md, "Root disk"):
#
#   local   ext4 in a sparse image on the host's disk, mount -o loop (the
#           root disk of computers made before it lived in the volume;
#           internal/sandbox/disk.go)
#   volume  ext4 in root.img at the root of an ohmfs volume's FUSE mount,
#           on a loop device with direct I/O and 4 KiB sectors, the image
#           marked as a device image first (internal/disk, as
#           internal/computer/rootdisk.go makes it)
#
# Each gets the same stack a computer's / has: an overlay whose lower layer
# is a Debian bookworm root (debootstrap minbase with python3) and whose
# upper layer is on the root disk. The work runs chrooted in the overlay:
#
#   dpkg    dpkg -i of a set of cached .debs (git, build-essential,
#           python3-dev and their dependencies), what apt-get install does
#           once it has downloaded them
#   pip     python3 -m venv (ensurepip: pip install of the pip and
#           setuptools wheels) and pip install --no-index of the wheel
#           wheel: only Debian's mirror is reachable here, not PyPI
#
# Usage (root): scripts/bench-rootdisk.sh OHM_BINARY WORKDIR [ROUNDS]
# WORKDIR keeps the base root and the .debs between runs.
set -euo pipefail
ohm=$(realpath "$1")
work=$(realpath -m "$2")
rounds=${3:-2}
mirror=${MIRROR:-http://deb.debian.org/debian}
pkgs=${PKGS:-git build-essential python3-dev}
size_mb=${SIZE_MB:-4096}
mkdir -p "$work"

if [ ! -x "$work/base/usr/bin/python3" ]; then
	rm -rf "$work/base"
	debootstrap --variant=minbase --include=python3,python3-venv,python3-pip-whl,python3-setuptools-whl,python3-wheel-whl \
		bookworm "$work/base" "$mirror" >"$work/debootstrap.log" 2>&1
fi
if [ ! -d "$work/debs" ]; then
	mount --bind /proc "$work/base/proc"
	chroot "$work/base" apt-get -q update >/dev/null
	# shellcheck disable=SC2086
	chroot "$work/base" apt-get -q -y --download-only install $pkgs >/dev/null
	umount "$work/base/proc"
	mkdir -p "$work/debs.tmp"
	mv "$work/base/var/cache/apt/archives/"*.deb "$work/debs.tmp/"
	chroot "$work/base" apt-get clean
	mv "$work/debs.tmp" "$work/debs"
fi
ndebs=$(ls "$work/debs" | wc -l)
debmb=$(du -sm "$work/debs" | cut -f1)

mnt=$work/mnt
cleanup() {
	for d in "$mnt/root/proc" "$mnt/root/debs" "$mnt/root" "$mnt/disk"; do
		mountpoint -q "$d" && umount -l "$d"
	done
	[ -n "${loopdev:-}" ] && losetup -d "$loopdev" 2>/dev/null || true
	mountpoint -q "$mnt/vol" && "$ohm" fs umount "$mnt/vol"
	rm -rf "$mnt"
}
trap cleanup EXIT

mkfs_root() { mkfs.ext4 -F -q -m 0 -E nodiscard,lazy_itable_init=1,lazy_journal_init=1 -L root "$1"; }

# setup KIND: the root disk of KIND mounted at $mnt/disk, the overlay at $mnt/root.
setup() {
	mkdir -p "$mnt/disk" "$mnt/root"
	case $1 in
	local)
		truncate -s "${size_mb}M" "$mnt/root.img"
		mkfs_root "$mnt/root.img"
		mount -t ext4 -o loop,discard,noatime,minixdf,nosuid,nodev "$mnt/root.img" "$mnt/disk"
		;;
	volume)
		"$ohm" fs format "$mnt/volume" >/dev/null
		mkdir -p "$mnt/vol" && chmod 700 "$mnt/vol"
		"$ohm" fs mount "$mnt/volume" "$mnt/vol" --background
		touch "$mnt/vol/root.img"
		python3 -c 'import os,sys; os.setxattr(sys.argv[1], "trusted.ohmfs.layout", b"image")' "$mnt/vol/root.img"
		truncate -s "${size_mb}M" "$mnt/vol/root.img"
		loopdev=$(losetup --direct-io=on --sector-size 4096 -f --show "$mnt/vol/root.img")
		mkfs_root "$loopdev"
		mount -t ext4 -o discard,noatime,minixdf,nosuid,nodev "$loopdev" "$mnt/disk"
		;;
	esac
	mkdir -p "$mnt/disk/upper" "$mnt/disk/work"
	mount -t overlay -o "lowerdir=$work/base,upperdir=$mnt/disk/upper,workdir=$mnt/disk/work" overlay "$mnt/root"
	mount --bind /proc "$mnt/root/proc"
	mkdir -p "$mnt/root/debs"
	mount --bind -o ro "$work/debs" "$mnt/root/debs"
}

teardown() {
	umount "$mnt/root/debs" "$mnt/root/proc" "$mnt/root"
	umount "$mnt/disk"
	if [ -n "${loopdev:-}" ]; then
		losetup -d "$loopdev" 2>/dev/null || true
		loopdev=
	fi
	if mountpoint -q "$mnt/vol"; then "$ohm" fs umount "$mnt/vol"; fi
	rm -rf "$mnt"
}

# timed NAME CMD...: run CMD in the chroot, print the seconds it took,
# with a sync of the root disk in the time (what is installed is on disk).
timed() {
	local t0 t1
	t0=$(date +%s.%N)
	if ! chroot "$mnt/root" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LC_ALL=C.UTF-8 DEBIAN_FRONTEND=noninteractive "$@" >>"$work/work.log" 2>&1; then
		echo "failed: $* (see $work/work.log)" >&2
		exit 1
	fi
	sync -f "$mnt/disk"
	t1=$(date +%s.%N)
	echo "$t1 - $t0" | bc
}

declare -A sum
echo "# $(date -u '+%F %H:%M UTC'), $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg); $ndebs .debs ($debmb MB): $pkgs"
for r in $(seq "$rounds"); do
	for kind in local volume; do
		setup "$kind"
		d=$(timed sh -c 'dpkg -i /debs/*.deb')
		p=$(timed sh -c 'python3 -m venv /venv && /venv/bin/pip install -q --no-index --find-links /usr/share/python-wheels wheel')
		used=$(df -m --output=used "$mnt/disk" | tail -n 1 | tr -d ' ')
		teardown
		echo "round $r $kind: dpkg -i ${d}s, venv + pip install ${p}s, ${used} MB used"
		sum[$kind.dpkg]=$(echo "${sum[$kind.dpkg]:-0} + $d" | bc)
		sum[$kind.pip]=$(echo "${sum[$kind.pip]:-0} + $p" | bc)
	done
done
for w in dpkg pip; do
	l=${sum[local.$w]} v=${sum[volume.$w]}
	printf '%s: local %.2f s, volume %.2f s (mean of %d), ratio %.2fx\n' "$w" "$(echo "$l / $rounds" | bc -l)" "$(echo "$v / $rounds" | bc -l)" "$rounds" "$(echo "$v / $l" | bc -l)"
done
echo "# load at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
