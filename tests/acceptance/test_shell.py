"""Shell-level experiments, as a person types them: truncate, fallocate, stat, getfattr, rm."""

import subprocess

import pytest
from support.pools import PAGE_2M, wait_for_counters

from gmemfs.base.hugepages import pool_counters


def sh(command: str, cwd) -> subprocess.CompletedProcess:
    return subprocess.run(command, shell=True, cwd=cwd, capture_output=True, text=True, timeout=30)


@pytest.mark.parametrize("page_size", [PAGE_2M], ids=["2M"])
def test_shell_session_on_a_2m_mount(gmem_dir, page_size):
    before = pool_counters(PAGE_2M)
    assert sh("touch vm0 && truncate -s 8M vm0", gmem_dir).returncode == 0
    assert pool_counters(PAGE_2M).reserved == before.reserved + 4
    assert sh("fallocate -n -o 0 -l 4M vm0", gmem_dir).returncode == 0
    assert sh("stat -c '%s %o %b' vm0", gmem_dir).stdout.split() == ["8388608", "2097152", "8192"]
    assert sh("fallocate -p -o 0 -l 2M vm0", gmem_dir).returncode == 0
    assert sh("stat -c %b vm0", gmem_dir).stdout.strip() == "4096"
    attributes = sh("getfattr -d vm0", gmem_dir).stdout
    assert 'user.gmem.allocated="0x200000-0x400000"' in attributes
    assert 'user.gmem.flags="0x54000002"' in attributes
    assert 'user.gmem.reserved="4"' in attributes
    assert sh("rm vm0", gmem_dir).returncode == 0
    after = wait_for_counters(PAGE_2M, before.reserved, before.free)
    assert (after.reserved, after.free) == (before.reserved, before.free)


@pytest.mark.parametrize(
    "command, message",
    [
        ("fallocate -o 0 -l 2M f", "Operation not supported"),  # without -n: no KEEP_SIZE
        ("fallocate -n -o 512 -l 2M f", "Invalid argument"),  # 4 KiB alignment, even in huge pages
        ("fallocate -n -o 8M -l 2M f", "Invalid argument"),
        ("truncate -s 16M f", "Invalid argument"),
        ("dd if=f of=/dev/null bs=4k count=1", "Invalid argument"),
        ("setfattr -n user.gmem.flags -v 1 f", "Invalid argument"),
    ],
    ids=[
        "fallocate_without_n",
        "fallocate_unaligned",
        "fallocate_past_end",
        "truncate_again",
        "dd_read",
        "setfattr_after_sizing",
    ],
)
@pytest.mark.parametrize("page_size", [PAGE_2M], ids=["2M"])
def test_shell_errors(gmem_dir, page_size, command, message):
    assert sh("touch f && truncate -s 4M f", gmem_dir).returncode == 0
    result = sh(command, gmem_dir)
    assert result.returncode != 0
    assert message in result.stderr


@pytest.mark.parametrize("value", ["1409286146", "'\"0x54000002\"'"], ids=["decimal", "quoted_hex"])
def test_shell_flags_then_size_on_any_mount(gmem_dir, page_size, value):
    """setfattr chooses 2 MiB pages before the first truncate, whatever the mount default.

    (setfattr reads an unquoted 0x... value as binary, hence the quotes for hex text.)
    """
    result = sh(f"touch f && setfattr -n user.gmem.flags -v {value} f && truncate -s 4M f && stat -c %o f", gmem_dir)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "2097152"
