"""Edge installs never import TensorFlow, Keras or librosa, nor the control room's package:
each daemon module, fresh process, and each daemon source file's module-level imports."""

import ast
import json
import subprocess
import sys
from pathlib import Path

FORBIDDEN = ("tensorflow", "librosa", "keras")
CONTROL = "control"
"""The control room's package: the daemon must run (and be installable) without it."""
DAEMON = Path(__file__).resolve().parents[1] / "daemon"

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


def _imported(node: ast.Import | ast.ImportFrom) -> list[str]:
    if isinstance(node, ast.ImportFrom):
        return [node.module or ""] if node.level == 0 else []
    return [alias.name for alias in node.names]


def module_level_imports(source: str) -> list[str]:
    """Modules a file imports outside any function body (what importing it loads)."""
    found: list[str] = []

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
                continue  # a lazy import runs only when the function is called
            if isinstance(child, ast.Import | ast.ImportFrom):
                found.extend(_imported(child))
            visit(child)

    visit(ast.parse(source))
    return found


class TestEdgeImports:
    def test_daemon_modules_never_import_training_libraries(self) -> None:
        """Importing every module under daemon/ loads none of tensorflow, keras, librosa,
        nor control."""
        result = subprocess.run(
            [sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=120, check=False
        )
        assert result.returncode == 0, result.stderr
        report = json.loads(result.stdout.strip().splitlines()[-1])
        assert "daemon.analyse.features" in report["modules"]
        assert "daemon.listen.windows" in report["modules"]
        assert not set(FORBIDDEN) & set(report["top_level"])
        assert CONTROL not in report["top_level"]

    def test_no_daemon_source_imports_control_at_module_level(self) -> None:
        """Only a command function may import control (the `watch` alias), never a module."""
        offenders = {
            str(path.relative_to(DAEMON)): names
            for path in sorted(DAEMON.rglob("*.py"))
            if (
                names := [
                    name
                    for name in module_level_imports(path.read_text(encoding="utf-8"))
                    if name == CONTROL or name.startswith(f"{CONTROL}.")
                ]
            )
        }
        assert offenders == {}

    def test_the_check_sees_imports_at_module_level_and_skips_function_bodies(self) -> None:
        """The parser of the check above: top level, under if/try, not inside a def."""
        source = (
            "import control.watch\n"
            "try:\n    from control import cli\nexcept ImportError:\n    pass\n"
            "def f():\n    from control.cli import watch_command\n"
        )
        assert module_level_imports(source) == ["control.watch", "control"]
