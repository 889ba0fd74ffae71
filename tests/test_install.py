"""`make install` hands pip's own index settings to uv, so both resolve the same versions."""

from __future__ import annotations

import importlib.util

from tests.helpers import REPO

_spec = importlib.util.spec_from_file_location("install_venv", REPO / "scripts" / "install_venv.py")
install_venv = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(install_venv)


def test_pip_settings_become_uv_flags_with_the_environment_winning():
    out = "\n".join([
        "global.cert='/etc/ssl/certs/ca.crt'",
        "global.constraint='/etc/xdg/pip/constraints.txt'",
        "global.extra-index-url='file:///opt/a/simple file:///opt/b/simple'",
        "global.find-links='/opt/old'",
        ":env:.find-links='/opt/wheels'",
        ":env:.default-timeout='180'",
    ])
    settings = install_venv.parse_pip_config(out)
    assert settings == {"constraint": ["/etc/xdg/pip/constraints.txt"],
                        "extra-index-url": ["file:///opt/a/simple", "file:///opt/b/simple"],
                        "find-links": ["/opt/wheels"]}
    args = install_venv.uv_args(settings)
    assert args[:4] == ["--index-strategy", "unsafe-best-match", "--compile-bytecode", "--constraint"]
    assert args.count("--extra-index-url") == 2 and ["--find-links", "/opt/wheels"] == args[-2:]
    assert install_venv.parse_pip_config("") == {}
