"""What VMM code gets with `import gmemfs` (the client's face): nothing of the daemon."""

import subprocess
import sys


def test_importing_the_client_face_loads_no_daemon_module():
    """gmemfs/__init__.py is "what VMM code imports": the client, over base and kernel. Its
    fallocate comes from gmemfs.daemon.backing, so every VMM loads the daemon part."""
    code = "import sys, gmemfs; print(sorted(m for m in sys.modules if m.startswith('gmemfs.daemon')))"
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert loaded.strip() == "[]"
