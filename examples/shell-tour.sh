#!/usr/bin/env bash
# A guided tour of one guest_memfd from the shell: creation, allocation, punching and
# shared/private conversion, with /proc/meminfo read after every step.
# Usage: examples/shell-tour.sh MOUNTPOINT   (a gmemfs mount; needs 4 free 2 MiB huge pages)
set -euo pipefail

mountpoint=${1:?usage: $0 MOUNTPOINT}
file="$mountpoint/tour-vm0"
MiB=$((1 << 20))

counters() {
    awk '/HugePages_(Free|Rsvd)/ { printf "   %s %s", $1, $2 } END { print "" }' /proc/meminfo
}
step() {
    printf '\n## %s\n$ %s\n' "$1" "$2"
    eval "$2"
    counters
}

echo "# Before: the pool as this machine has it"
counters

step "A new file is an unsized guest_memfd: it holds nothing yet. Choose 2 MiB pages (HUGETLB | HUGE_2MB)." \
     "touch $file && setfattr -n user.gmem.flags -v $((0x54000002)) $file"
step "Sizing it completes creation: its subpool reserves all 4 huge pages (Rsvd +4, Free unchanged)." \
     "truncate -s $((8 * MiB)) $file"
step "Allocating 2 pages moves them from reserved to in use (Free -2, Rsvd -2)." \
     "fallocate -n -o 0 -l $((4 * MiB)) $file"
step "Punching 1 page gives it back to the file's subpool: still reserved for this file (Free +1, Rsvd +1)." \
     "fallocate -p -o 0 -l $((2 * MiB)) $file"
step "New pages are private (the guest's). Convert the first huge page to shared so the host may map it." \
     "gmemfs convert $file shared --offset 0 --length 2M"
step "The host reaches shared pages through a mapping (never read(2): EINVAL, as in the kernel, shared or not)." \
     "python3 -c 'import mmap, sys; f = open(sys.argv[1], \"rb\"); print(mmap.mmap(f.fileno(), 4096, prot=mmap.PROT_READ)[:16].hex(\" \"))' $file && (dd if=$file bs=4k count=1 status=none || true)"
step "Private pages not even so: touching them through a mapping is SIGBUS." \
     "gmemfs convert $file private --offset 0 --length 2M"
step "Conversions work on 4 KiB pages, even inside a huge page. The map shows every run." \
     "gmemfs convert $file shared --offset 4K --length 8K && gmemfs map $file"
step "The size of a guest_memfd is fixed: a second truncate is EINVAL." \
     "truncate -s $((16 * MiB)) $file || true"
step "Removing the last name (with no fd open) evicts the file: all pages and the reservation return." \
     "rm $file && sleep 0.1"
