"""Edge installs never import TensorFlow, Keras or librosa: each daemon module, fresh process."""

import json
import subprocess
import sys

FORBIDDEN = ("tensorflow", "librosa", "keras")

# Runs in a fresh interpreter so nothing this test process imported (librosa, for the
# parity tests) can hide or fake an import. New daemon modules are found by pkgutil.
PROBE = """
import importlib, json, pkgutil, sys
import daemon
names = sorted(m.name for m in pkgutil.walk_packages(daemon.__path__, "daemon."))
for name in names:
    importlib.import_module(name)
loaded = sorted({m.split(".")[0] for m in sys.modules})
print(json.dumps({"modules": names, "top_level": loaded}))
"""


class TestEdgeImports:
    def test_daemon_modules_never_import_training_libraries(self) -> None:
        """Importing every module under daemon/ loads none of tensorflow, keras, librosa."""
        result = subprocess.run(
            [sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=120, check=False
        )
        assert result.returncode == 0, result.stderr
        report = json.loads(result.stdout.strip().splitlines()[-1])
        assert "daemon.analyse.features" in report["modules"]
        assert "daemon.listen.windows" in report["modules"]
        assert not set(FORBIDDEN) & set(report["top_level"])
