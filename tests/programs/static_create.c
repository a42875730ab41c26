/* A statically linked KVM client (as Firecracker and cloud-hypervisor ship): LD_PRELOAD cannot reach it.
 * Usage: static_create SIZE FLAGS -> prints "fd=N blksize=B size=S" or "errno=E". */
#include <errno.h>
#include <fcntl.h>
#include <linux/kvm.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/ioctl.h>
#include <sys/stat.h>

/* Debian 12's kernel headers (6.1) predate guest_memfd: the 6.8 UAPI, as VMMs carry it. */
struct gmem_create {
	__u64 size;
	__u64 flags;
	__u64 reserved[6];
};
#define CREATE_GUEST_MEMFD _IOWR(KVMIO, 0xd4, struct gmem_create)

int main(int argc, char **argv)
{
	struct gmem_create args = { .size = strtoull(argv[1], NULL, 0), .flags = strtoull(argv[2], NULL, 0) };
	int kvm = open("/dev/kvm", O_RDWR | O_CLOEXEC);
	int vm = ioctl(kvm, KVM_CREATE_VM, 0);
	int fd = ioctl(vm, CREATE_GUEST_MEMFD, &args);
	struct stat st;

	if (fd < 0) {
		printf("errno=%d\n", errno);
		return 0;
	}
	fstat(fd, &st);
	printf("fd=%d blksize=%ld size=%ld\n", fd, (long)st.st_blksize, (long)st.st_size);
	return 0;
}
