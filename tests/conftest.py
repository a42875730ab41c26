"""Fixtures: huge page pools, gmemfs daemons and per-test directories on real mounts."""

import os
import shutil
import signal
import uuid

import pytest
from support.mount import GmemfsProcess, new_mountpoint, remove_mountpoint
from support.pools import PAGE_1G, PAGE_2M, pool_of, wait_for_counters

from gmemfs.base.hugepages import pool_counters

PAGE_4K = 4096
PAGE_SIZES = {PAGE_4K: "4K", PAGE_2M: "2M", PAGE_1G: "1G"}
# What the suite needs at most at once: enough 2 MiB pages for ENOMEM and table
# tests, and two 1 GiB pages (reserved at the start, before memory fragments).
POOL_PAGES = {PAGE_2M: 64, PAGE_1G: 2}


def _needs_root() -> None:
    if os.geteuid() != 0:
        pytest.fail("mount tests need root: they size huge page pools and create hugetlbfs superblocks")


@pytest.fixture(scope="session")
def huge_pools():
    """Reserve the suite's huge pages once; give every page back at the end.

    Yields the pools' counters while no test holds a page: what `shared_mounts_give_pages_back`
    waits for before a test starts.
    """
    _needs_root()
    with pool_of(PAGE_2M, POOL_PAGES[PAGE_2M]), pool_of(PAGE_1G, POOL_PAGES[PAGE_1G]):
        yield {size: pool_counters(size) for size in POOL_PAGES}


def warnings_expected(request) -> bool:
    """Tests that make the daemon warn on purpose say so with @pytest.mark.daemon_warnings."""
    return request.node.get_closest_marker("daemon_warnings") is not None


@pytest.fixture
def start_gmemfs(huge_pools, request):
    """Start a gmemfs daemon of the test's own (to kill, unmount or inspect it).

    The test fails if the daemon logged a traceback, an error or an unexpected warning.
    """
    started = []

    def start(*options: str, wrapper: "list[str]" = ()) -> GmemfsProcess:
        daemon = GmemfsProcess(new_mountpoint(), list(options), wrapper)
        started.append(daemon)
        return daemon

    yield start
    complaints = []
    for daemon in started:
        daemon.stop()
        complaints += daemon.complaints(warnings_expected=warnings_expected(request))
        daemon.log.close()
        remove_mountpoint(daemon.mountpoint)
    if complaints:
        pytest.fail("the daemon complained:\n" + "\n".join(complaints[:20]), pytrace=False)


@pytest.fixture(scope="session")
def shared_mounts(huge_pools):
    """One long-lived mount per default page size (and ABI profile), for tests that only make files."""
    daemons: dict[tuple[int, str], GmemfsProcess] = {}

    def get(page_size: int, abi: str = "rfc-v1") -> GmemfsProcess:
        if (page_size, abi) not in daemons:
            options = ["-o", f"pagesize={PAGE_SIZES[page_size]},abi={abi}"]
            daemons[page_size, abi] = GmemfsProcess(new_mountpoint(), options)
        return daemons[page_size, abi]

    yield get
    for daemon in daemons.values():
        daemon.stop()
        remove_mountpoint(daemon.mountpoint)


@pytest.fixture(params=list(PAGE_SIZES), ids=list(PAGE_SIZES.values()))
def page_size(request) -> int:
    return request.param


@pytest.fixture(autouse=True)
def signal_mask_kept():
    """No test leaves signals blocked: every process the suite starts later would inherit the
    mask (a daemon deaf to SIGTERM, a `cat` that ^C cannot end)."""
    before = signal.pthread_sigmask(signal.SIG_BLOCK, ())
    yield
    after = signal.pthread_sigmask(signal.SIG_SETMASK, before)
    assert after == before, f"the test left the signal mask {sorted(after)}, not {sorted(before)}"


@pytest.fixture(autouse=True)
def shared_mounts_give_pages_back(request):
    """A test on the shared mounts leaves every huge page pool where it found it.

    The last close of a file reaches the daemon as a background RELEASE, so its pages come
    back a moment after the test's own teardown: wait for them here, after every other
    fixture of the test has closed its files, or the next test would count them as its own.
    """
    if "shared_mounts" not in request.fixturenames:
        yield
        return
    idle = request.getfixturevalue("huge_pools")
    before = {size: wait_for_counters(size, counters.reserved, counters.free) for size, counters in idle.items()}
    held = {
        size: counters
        for size, counters in before.items()
        if (counters.reserved, counters.free) != (idle[size].reserved, idle[size].free)
    }
    if held:
        expected = {size: idle[size] for size in held}
        idle.update(held)  # said once: the tests after this one start from what is held
        pytest.fail(f"an earlier test still holds huge pages: {held}, not {expected}", pytrace=False)
    yield
    for size, counters in before.items():
        after = wait_for_counters(size, counters.reserved, counters.free)
        assert (after.reserved, after.free) == (counters.reserved, counters.free), (
            f"{PAGE_SIZES[size]} huge pages not given back: before {counters}, after {after}"
        )


@pytest.fixture
def gmem_dir(shared_mounts, page_size, request):
    """A fresh directory on a mount whose new files use `page_size` pages.

    Afterwards every file is removed (and `shared_mounts_give_pages_back` checks that
    every pool is back where it was: a file may choose other pages than the mount's).
    """
    daemon = shared_mounts(page_size)
    log_position = daemon.log_position()
    directory = daemon.mountpoint / f"t-{uuid.uuid4().hex[:8]}"
    directory.mkdir()
    yield directory
    shutil.rmtree(directory)
    assert daemon.complaints(log_position, warnings_expected(request)) == [], "the daemon complained"


@pytest.fixture
def sized_gmem(gmem_dir, page_size):
    """An O_RDWR fd of a created gmem file, two pages long."""
    from support.files import open_gmem

    fd = open_gmem(gmem_dir, size=2 * page_size)
    yield fd
    os.close(fd)


@pytest.fixture
def run_leaves_nothing(huge_pools):
    """After a `gmemfs run` test: no daemon, mount, directory or 2 MiB reservation of a run is left."""
    from support.run import leftovers

    before = pool_counters(PAGE_2M)
    yield
    assert leftovers(before) == []
