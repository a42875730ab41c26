"""reply_with_fd leaves exactly one new fd in the program, the one its call returns.

It is ADDFD (no SEND) then a reply where the filter's wait is killable only. On a kernel
without SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV (before 5.19: install_filter falls back to an
interruptible wait) any signal to the trapped thread between the two would take the call away
(it restarts as a new one, which gets a second fd), so there it is ADDFD with SEND. Before the
fix the interruptible case left a first fd the program never learned of.
"""

import json
import os
import select
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gmemfs.run.seccomp import Listener

REPO = Path(__file__).parents[2]

PROGRAM = r"""
import ctypes, json, os, signal, socket, sys
from gmemfs.run import seccomp
if sys.argv[1] == "interruptible":  # what install_filter does before Linux 5.19
    seccomp.SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV = 0
channel = socket.socket(fileno=int(sys.argv[2]))
signal.signal(signal.SIGUSR1, lambda *_: None)
signal.siginterrupt(signal.SIGUSR1, False)  # SA_RESTART, as most programs' handlers
REQUEST = 0xC040AED4  # KVM_CREATE_GUEST_MEMFD
listener, killable = seccomp.install_filter(seccomp.ioctl_filter([REQUEST], (1 << 32) | 1))
socket.send_fds(channel, [b"killable" if killable else b"interruptible"], [listener])
os.close(listener)
target = os.open("/dev/null", os.O_RDONLY)
def open_fds():  # without opening one to look
    fds = set()
    for fd in range(256):
        try:
            os.fstat(fd)
        except OSError:
            continue
        fds.add(fd)
    return fds
before = open_fds()
libc = ctypes.CDLL(None, use_errno=True)
result = libc.ioctl(target, REQUEST, 0)
after = open_fds()
print(json.dumps({"result": result, "new": sorted(after - before)}))
"""


@pytest.mark.parametrize("wait", ["killable", "interruptible"])
def test_a_signal_between_addfd_and_the_reply_leaves_no_fd_behind(wait):
    ours, theirs = socket.socketpair()
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    program = subprocess.Popen(
        [sys.executable, "-c", PROGRAM, wait, str(theirs.fileno())],
        pass_fds=(theirs.fileno(),),
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    theirs.close()
    source = os.open("/dev/null", os.O_RDONLY)
    try:
        waits, fds, _, _ = socket.recv_fds(ours, 64, 1)
        assert waits.decode() == wait
        listener = Listener(fds[0], killable=waits == b"killable")
        answered = 0
        reply = listener.reply

        def signal_first(notification, **kwargs):
            if not answered:  # the program's thread gets a signal after ADDFD, before the reply
                os.kill(program.pid, signal.SIGUSR1)
                time.sleep(0.3)
            reply(notification, **kwargs)

        listener.reply = signal_first
        poller = select.poll()
        poller.register(listener.fd, select.POLLIN)
        deadline = time.monotonic() + 10
        while program.poll() is None and time.monotonic() < deadline:
            if poller.poll(100) and listener.state() == "pending":
                notification = listener.receive()
                if notification is not None:
                    listener.reply_with_fd(notification, source)
                    answered += 1
        output = json.loads(program.communicate(timeout=10)[0])
        listener.close()
    finally:
        os.close(source)
        ours.close()
        if program.poll() is None:
            program.kill()
            program.wait()
    assert output["result"] >= 0
    assert output["new"] == [output["result"]], f"fds the program never learned of: {output}, {answered} answers"
