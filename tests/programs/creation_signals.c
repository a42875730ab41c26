/* Create and close COUNT guest_memfds of one VM while signals come (SIGUSR1 has a counting
 * SA_RESTART handler). Each creation must give a new fd of SIZE bytes: "bad" counts those that
 * returned another number (first_bad: the first), "errors" those that failed.
 * Usage: creation_signals COUNT -> prints "ready", then "bad=B first_bad=R errors=E signals=S". */
#include <errno.h>
#include <fcntl.h>
#include <linux/kvm.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

struct gmem_create {
	__u64 size;
	__u64 flags;
	__u64 reserved[6];
};
#define CREATE_GUEST_MEMFD _IOWR(KVMIO, 0xd4, struct gmem_create)
#define SIZE 0x10000

static volatile sig_atomic_t signals;

static void count(int signum)
{
	(void)signum;
	signals++;
}

int main(int argc, char **argv)
{
	int count_wanted = argc > 1 ? atoi(argv[1]) : 1000, bad = 0, errors = 0;
	long first_bad = 0;
	struct sigaction action = { .sa_handler = count, .sa_flags = SA_RESTART };
	sigaction(SIGUSR1, &action, NULL);
	int kvm = open("/dev/kvm", O_RDWR | O_CLOEXEC);
	int vm = ioctl(kvm, KVM_CREATE_VM, 0);
	if (kvm < 0 || vm < 0) {
		perror("kvm");
		return 2;
	}
	printf("ready\n");
	fflush(stdout);
	for (int i = 0; i < count_wanted; i++) {
		struct gmem_create create = { .size = SIZE };
		int fd = ioctl(vm, CREATE_GUEST_MEMFD, &create);
		struct stat st;
		if (fd < 0) {
			errors++;
			continue;
		}
		if (fd <= 2 || fstat(fd, &st) != 0 || st.st_size != SIZE) {
			if (!bad++)
				first_bad = fd;
			continue;
		}
		close(fd);
	}
	printf("bad=%d first_bad=%ld errors=%d signals=%d\n", bad, first_bad, errors, (int)signals);
	return 0;
}
