/* Create and delete a guest_memfd memslot PAIRS times while SIGALRM (SA_RESTART) fires every
 * INTERVAL_US microseconds. Usage: memslot_signals PAIRS INTERVAL_US
 * -> prints "failed=F first_errno=E signals=S". */
#include <errno.h>
#include <fcntl.h>
#include <linux/kvm.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/time.h>

struct gmem_create {
	__u64 size;
	__u64 flags;
	__u64 reserved[6];
};
struct region2 {
	__u32 slot;
	__u32 flags;
	__u64 guest_phys_addr;
	__u64 memory_size;
	__u64 userspace_addr;
	__u64 guest_memfd_offset;
	__u32 guest_memfd;
	__u32 pad1;
	__u64 pad2[14];
};
#define CREATE_GUEST_MEMFD _IOWR(KVMIO, 0xd4, struct gmem_create)
#define SET_USER_MEMORY_REGION2 _IOW(KVMIO, 0x49, struct region2)
#define MEM_GUEST_MEMFD (1u << 2)
#define SIZE 0x10000

static volatile sig_atomic_t signals;

static void count(int signum)
{
	(void)signum;
	signals++;
}

int main(int argc, char **argv)
{
	long pairs = strtol(argv[1], NULL, 0), failed = 0, first_errno = 0;
	struct itimerval timer = { { 0, strtol(argv[2], NULL, 0) }, { 0, strtol(argv[2], NULL, 0) } };
	struct sigaction action = { .sa_handler = count, .sa_flags = SA_RESTART };
	struct gmem_create args = { .size = SIZE };
	int kvm = open("/dev/kvm", O_RDWR | O_CLOEXEC);
	int vm = ioctl(kvm, KVM_CREATE_VM, 0);
	int gmem = ioctl(vm, CREATE_GUEST_MEMFD, &args);
	void *memory = mmap(NULL, SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

	if (vm < 0 || gmem < 0 || memory == MAP_FAILED) {
		printf("setup failed: errno=%d\n", errno);
		return 1;
	}
	sigaction(SIGALRM, &action, NULL);
	setitimer(ITIMER_REAL, &timer, NULL);
	for (long i = 0; i < pairs; i++) {
		struct region2 create = { .slot = 1, .flags = MEM_GUEST_MEMFD, .guest_phys_addr = 0x100000,
					  .memory_size = SIZE, .userspace_addr = (__u64)memory, .guest_memfd = gmem };
		struct region2 delete = create;

		delete.memory_size = 0;
		if (ioctl(vm, SET_USER_MEMORY_REGION2, &create) && !failed++)
			first_errno = errno;
		if (ioctl(vm, SET_USER_MEMORY_REGION2, &delete) && !failed++)
			first_errno = errno;
	}
	timer.it_value.tv_usec = timer.it_interval.tv_usec = 0;
	setitimer(ITIMER_REAL, &timer, NULL);
	printf("failed=%ld first_errno=%ld signals=%ld\n", failed, first_errno, (long)signals);
	return 0;
}
