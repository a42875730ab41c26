"""What a trapped call costs under `gmemfs run`, without and with --trace, beside the kernel.

Run as `python -m benchmarks.run_calls CALLS` (by the benchmark, under gmemfs run or not): the
median time of KVM_CHECK_EXTENSION on a VM fd (answered by the supervisor under gmemfs run)
and of KVM_CREATE_GUEST_MEMFD + close of a 64 KiB file (supervisor and daemon), in microseconds,
as one JSON line.
"""

import fcntl
import json
import os
import statistics
import subprocess
import sys
import time

KVM_CREATE_VM = 0xAE01
KVM_CHECK_EXTENSION = 0xAE03
KVM_CREATE_GUEST_MEMFD = 0xC040AED4
KVM_CAP_GUEST_MEMFD = 234
FILE_SIZE = 64 << 10


def _median_us(call, calls: int) -> float:
    times = []
    for _ in range(calls):
        start = time.perf_counter_ns()
        call()
        times.append(time.perf_counter_ns() - start)
    return statistics.median(times) / 1000


def measure(calls: int) -> dict:
    kvm = os.open("/dev/kvm", os.O_RDWR | os.O_CLOEXEC)
    vm = fcntl.ioctl(kvm, KVM_CREATE_VM, 0)
    request = bytearray(FILE_SIZE.to_bytes(8, "little") + bytes(56))

    def create_and_close():
        os.close(fcntl.ioctl(vm, KVM_CREATE_GUEST_MEMFD, request))

    try:
        return {
            "check_extension": _median_us(lambda: fcntl.ioctl(vm, KVM_CHECK_EXTENSION, KVM_CAP_GUEST_MEMFD), calls),
            "create_guest_memfd": _median_us(create_and_close, calls),
        }
    finally:
        os.close(vm)
        os.close(kvm)


def under(gmemfs_run: "list[str] | None", calls: int) -> dict:
    """The numbers of a child run directly (None) or under the given gmemfs run command."""
    program = [sys.executable, "-m", "benchmarks.run_calls", str(calls)]
    command = [*gmemfs_run, "--", *program] if gmemfs_run else program
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, check=True)
    return json.loads(done.stdout.splitlines()[-1])


if __name__ == "__main__":
    print(json.dumps(measure(int(sys.argv[1]))))
