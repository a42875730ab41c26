"""The benchmark runs (in its tiny quick mode) and reports every operation three ways. No timing is asserted."""

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).parents[2]


def test_quick_benchmark_reports_every_operation(huge_pools):
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--quick", "--json"], cwd=REPO, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    operations = {row["operation"]: row for row in report["rows"]}
    assert len(operations) == 24
    for name in ("KVM_CHECK_EXTENSION (answered by the supervisor)", "KVM_CREATE_GUEST_MEMFD 64K + close"):
        assert operations[f"gmemfs run: {name}, --trace"]["kernel"] > 0, "gmemfs run's cost is set beside the kernel's"
    traced = operations["allocate + punch 2 MiB, one trace reader draining"]
    assert traced["kernel"] > 0 and traced["floor"] > 0, "tracing's cost is set beside the kernel and the floor"
    assert operations["  daemon CPU per call: stat"]["floor"] > 0, "the daemons' CPU time is read"
    assert operations["allocate 16 MiB in 2 MiB calls, 4 threads (2 MiB pages)"]["kernel"] > 0
    for name, row in operations.items():
        assert row["gmemfs"] is not None and row["gmemfs"] > 0, name
    assert operations["stat (lookup + getattr, uncached)"]["floor"] > 0
    assert operations["allocate 16 MiB in one call (2 MiB pages)"]["kernel"] > 0
    assert report["machine"]["cores"] >= 1
