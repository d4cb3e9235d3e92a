#!/usr/bin/env bash
# Check the dependency floors declared in pyproject.toml: install each declared
# minimum (name>=X becomes name==X) into a fresh virtual environment, with torch
# and torchvision at whatever version pip can install for their declared ranges,
# then import lensclf, run a tiny fit / predict / save / load and two test files
# against the working tree.
#
# Not part of CI (it installs packages and takes ~10 minutes on 2 cores).
#
#   bash benchmarks/check_floors.sh
#
# Environment:
#   PYTHON        interpreter for the venv (default: python3)
#   FLOORS_VENV   venv folder (default: a temporary one, removed afterwards;
#                 a folder you name is kept)
#   TORCH_SPEC    torch/torchvision requirements to install instead of the
#                 declared ranges, e.g. "torch==2.3.1 torchvision==0.18.1"
#   FLOORS_TESTS  test files to run (default: tests/test_classifier.py tests/test_io.py)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
PYTHON=${PYTHON:-python3}
TESTS=${FLOORS_TESTS:-tests/test_classifier.py tests/test_io.py}
NICE=""
command -v nice >/dev/null && NICE="nice -n 10"

# name==minimum for every ">=" floor in [project].dependencies; torch and torchvision
# keep their ranges (only some torch versions may be installable on a machine).
read_floors() {
    "$PYTHON" - "$ROOT/pyproject.toml" <<'EOF'
import re, sys
text = open(sys.argv[1], encoding="utf-8").read()
try:
    import tomllib
    deps = tomllib.loads(text)["project"]["dependencies"]
except ImportError:  # Python 3.10: the dependencies list, read by hand
    block = re.search(r"^dependencies\s*=\s*\[(.*?)\]", text, re.S | re.M).group(1)
    deps = re.findall(r'"([^"]+)"', block)
for dep in deps:
    m = re.fullmatch(r"\s*([A-Za-z0-9_.-]+)\s*>=\s*([0-9][0-9A-Za-z.]*)\s*", dep)
    if m is None:
        sys.exit(f"cannot read a floor from {dep!r} (expected 'name>=version')")
    name, version = m.groups()
    print(dep.strip() if name.lower() in ("torch", "torchvision") else f"{name}=={version}")
EOF
}

mapfile -t REQS < <(read_floors)
TORCH_REQS=() PINS=()
for req in "${REQS[@]}"; do
    case "$req" in torch*) TORCH_REQS+=("$req") ;; *) PINS+=("$req") ;; esac
done
if [[ -n "${TORCH_SPEC:-}" ]]; then read -r -a TORCH_REQS <<<"$TORCH_SPEC"; fi
echo "torch:    ${TORCH_REQS[*]}"
echo "minimums: ${PINS[*]}"

if [[ -n "${FLOORS_VENV:-}" ]]; then
    VENV=$FLOORS_VENV
else
    VENV=$(mktemp -d)/floors
    trap 'rm -rf "$(dirname "$VENV")"' EXIT
fi
[[ -x "$VENV/bin/python" ]] || "$PYTHON" -m venv "$VENV"
VPY="$VENV/bin/python"

# One resolve, so the minimums and torch are chosen together.
$NICE "$VPY" -m pip install --quiet "${TORCH_REQS[@]}" "${PINS[@]}" pytest hypothesis
"$VPY" -m pip check

# The resolver must have kept every minimum (e.g. not upgraded numpy for torchvision).
"$VPY" - "${PINS[@]}" <<'EOF'
import sys
from importlib.metadata import version
from packaging.version import Version
bad = []
for pin in sys.argv[1:]:
    name, wanted = pin.split("==")
    have = version(name)
    print(f"  {name:14s} {have}")
    if Version(have) != Version(wanted):
        bad.append(f"{name}: wanted {wanted}, installed {have}")
for name in ("torch", "torchvision"):
    print(f"  {name:14s} {version(name)}")
if bad:
    sys.exit("minimums not installed: " + "; ".join(bad))
EOF

export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}" MPLBACKEND=Agg
echo "== tiny fit / predict / save / load"
$NICE "$VPY" - <<'EOF'
import os, tempfile
import numpy as np
from lensclf import LensClassifier, make_lenses
X, y = make_lenses(40, 40, random_state=0, n_jobs=2)  # n_jobs=2: joblib's Parallel(return_as="generator")
clf = LensClassifier(max_epochs=1, verbose=0, random_state=0).fit(X, y)
proba = clf.predict_proba(X)
path = os.path.join(tempfile.mkdtemp(), "model.safetensors")
clf.save(path, overwrite=True)
loaded = LensClassifier.load(path)
assert np.allclose(loaded.predict_proba(X), proba, atol=1e-5), "the loaded model predicts differently"
print("tiny fit OK:", proba.shape, "best epoch", clf.best_epoch_)
EOF

echo "== pytest $TESTS"
# shellcheck disable=SC2086
$NICE "$VPY" -m pytest $TESTS -x -q -p no:cacheprovider
