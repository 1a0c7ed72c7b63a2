"""The checked-in stubs under taskplane/v1 are what proto/ generates now."""

import filecmp
import pathlib
import subprocess
import sys

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parents[1]
PROTO = PACKAGE.parents[1] / "proto"


def test_checked_in_stubs_match_the_protos(tmp_path: pathlib.Path) -> None:
    pytest.importorskip("grpc_tools", reason="pip install './agent/python[test]' to check the stubs")
    protos = sorted(str(path.relative_to(PROTO)) for path in (PROTO / "taskplane" / "v1").glob("*.proto"))
    subprocess.run(
        [
            sys.executable, "-m", "grpc_tools.protoc", f"-I{PROTO}",
            f"--python_out={tmp_path}", f"--pyi_out={tmp_path}", f"--grpc_python_out={tmp_path}",
            *protos,
        ],
        check=True,
        cwd=PROTO,
    )
    generated = sorted(p.name for p in (tmp_path / "taskplane" / "v1").iterdir())
    checked_in = sorted(p.name for p in (PACKAGE / "taskplane" / "v1").iterdir() if p.name != "__init__.py" and p.suffix in (".py", ".pyi"))
    assert generated == checked_in
    stale = [
        name
        for name in generated
        if not filecmp.cmp(tmp_path / "taskplane" / "v1" / name, PACKAGE / "taskplane" / "v1" / name, shallow=False)
    ]
    assert not stale, (
        f"stale stubs {stale}: regenerate with `cd agent/python && python -m grpc_tools.protoc "
        "-I../../proto --python_out=. --pyi_out=. --grpc_python_out=. ../../proto/taskplane/v1/*.proto`"
    )
