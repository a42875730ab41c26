import errno

import pytest

from gmemfs.daemon.limits import MountQuota, huge_page_unit
from gmemfs.kernel.rules import GmemError

M2, G1 = 2 << 20, 1 << 30


def test_max_huge_pages_counts_every_page_size_by_its_bytes():
    quota = MountQuota(max_huge_pages=2, huge_page_unit=M2)
    with pytest.raises(GmemError) as refused:
        quota.claim(G1, G1)  # one 1 GiB page is 512 of the mount's 2 MiB pages
    assert refused.value.errno == errno.ENOMEM and "max_huge_pages=2 (2M pages)" in refused.value.rule
    quota.claim(2 * M2, M2)
    quota.release(2 * M2, M2)
    quota.claim(2 * M2, M2)


def test_a_1g_mount_counts_2m_pages_as_parts_of_its_pages():
    quota = MountQuota(max_huge_pages=1, huge_page_unit=G1)
    quota.claim(G1 - M2, M2)
    quota.claim(M2, M2)
    with pytest.raises(GmemError):
        quota.claim(M2, M2)


def test_the_unit_is_the_mounts_huge_page_size_or_the_default_one():
    assert huge_page_unit(M2, M2) == M2
    assert huge_page_unit(G1, M2) == G1
    assert huge_page_unit(4096, M2) == M2
