"""Every command says its version, the package's."""
import importlib.metadata

import pytest
from click.testing import CliRunner

from fits import __version__


@pytest.mark.parametrize("module, name, prog", [("planner.cli", "main", "plan"), ("fits.cli", "main", "fit"),
                                                ("fits.cli", "verify_main", "fit-verify"),
                                                ("fits.cli", "hparams_main", "fit hparams"),
                                                ("fits.cli", "downstream_main", "fit downstream"),
                                                ("probes.cli", "main", "probe")])
def test_every_command_has_version(module, name, prog):
    if module.startswith("probes"):
        pytest.importorskip("torch")
    import importlib

    cmd = getattr(importlib.import_module(module), name)
    res = CliRunner().invoke(cmd, ["--version"])
    assert res.exit_code == 0 and res.output.strip() == f"{prog} (scaling-planner) {__version__}"


def test_version_is_the_installed_packages():
    assert __version__ == importlib.metadata.version("scaling-planner")
