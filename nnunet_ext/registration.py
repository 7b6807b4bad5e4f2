"""Make the stock ``nnUNetv2_*`` commands find the project's trainers with no manual setup.

nnU-Net 2.8.1 looks for trainers outside its package only in the folders named by ``nnUNet_extTrainer``.
:func:`register` writes a ``.pth`` file into the environment's site-packages whose one line adds
``nnunet_ext/trainer_shim`` to that variable at every interpreter start (keeping folders already listed), so
``.venv/bin/nnUNetv2_train ... -tr nnUNetTrainerSpineCoarse`` works in any shell. ``scripts/bootstrap.sh`` runs it;
``spine-nnunet register`` runs it by hand. The alternative is exporting the variable yourself:
``export nnUNet_extTrainer=$(python -c "import nnunet_ext.registration as r; print(r.shim_folder())")``.
"""

from __future__ import annotations

import os
import sysconfig
from pathlib import Path

PTH_NAME = "spine_mri_toolkit_trainers.pth"
VARIABLE = "nnUNet_extTrainer"


def shim_folder() -> Path:
    """The folder holding the trainer shim module (never the package itself: nnU-Net imports its files as
    top-level modules)."""
    return Path(__file__).resolve().parent / "trainer_shim"


def pth_line(folder: Path | None = None) -> str:
    folder = folder or shim_folder()
    return ("import os; _p = " + repr(str(folder)) + "; _v = os.environ.get(" + repr(VARIABLE) + ", ''); "
            "os.environ[" + repr(VARIABLE) + "] = _v if _p in _v.split(os.pathsep) else "
            "(_v + os.pathsep + _p if _v else _p)\n")


def register(site_packages: Path | None = None) -> Path:
    """Write (or refresh) the ``.pth`` file; returns its path."""
    target = Path(site_packages or sysconfig.get_paths()["purelib"]) / PTH_NAME
    line = pth_line()
    if not target.exists() or target.read_text() != line:
        target.write_text(line)
    return target


def is_registered() -> bool:
    return str(shim_folder()) in os.environ.get(VARIABLE, "").split(os.pathsep)
