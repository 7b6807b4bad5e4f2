#!/usr/bin/env bash
# Create (or reuse) .venv at the project root and install the project with all extras: measurement, conversion,
# the nnU-Net/torch extra and the test tools. Re-running is cheap: it reinstalls only when pyproject.toml changed.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
python=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    echo "bootstrap: creating .venv with $($python --version)" >&2
    "$python" -m venv .venv
fi
stamp=.venv/.spine-toolkit-installed
wanted=$(sha256sum pyproject.toml | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$wanted" ] || ! .venv/bin/python -c "import measure, nnunetv2, torchvision" 2>/dev/null; then
    echo "bootstrap: installing the project and its dependencies into .venv (first time: several minutes, ~6 GB)" >&2
    .venv/bin/python -m pip install --quiet --disable-pip-version-check -e ".[nnunet,test]"
    echo "$wanted" > "$stamp"
fi
# let the stock nnUNetv2_* commands find the project's trainers (writes one .pth line into .venv; see
# nnunet_ext/registration.py)
.venv/bin/python -c "import nnunet_ext.registration as r; r.register()"
