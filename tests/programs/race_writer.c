/* Writes a counter into a shared mapping of a gmem file as fast as it can for SECONDS,
 * surviving the SIGBUS of pages that are private at the moment: a host racing conversions.
 * Usage: race_writer FD SECONDS -> prints "writes=N sigbus=M". */
#include <setjmp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <time.h>

static sigjmp_buf again;

static void on_sigbus(int sig)
{
	(void)sig;
	siglongjmp(again, 1);
}

int main(int argc, char **argv)
{
	int fd = atoi(argv[1]);
	double seconds = atof(argv[2]);
	volatile uint64_t *page = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	struct sigaction action = { .sa_handler = on_sigbus, .sa_flags = SA_NODEFER };
	struct timespec start, now;
	volatile unsigned long writes = 0, sigbus = 0;

	if (page == MAP_FAILED)
		return 2;
	sigaction(SIGBUS, &action, NULL);
	clock_gettime(CLOCK_MONOTONIC, &start);
	if (sigsetjmp(again, 1))
		sigbus++;
	for (;;) {
		clock_gettime(CLOCK_MONOTONIC, &now);
		if (now.tv_sec - start.tv_sec + (now.tv_nsec - start.tv_nsec) / 1e9 > seconds)
			break;
		page[0] = ++writes;
		page[1] = ~page[0];
	}
	printf("writes=%lu sigbus=%lu\n", writes, sigbus);
	return 0;
}
