#!/usr/bin/env bash
# make test-wheelhouse: the offline classroom install, end to end.
#   1. make wheelhouse (this machine's platform and Python) into a scratch folder that each run
#      replaces whole, $NBHELPERS_CACHE/test-wheelhouse (default ~/.cache/nbhelpers/...): its
#      wheels come from the wheel cache, and at the same path uv's cache holds them unpacked
#      from the last run (a new path each time: 70 s more for the install);
#   2. with the network cut off: a fresh venv in a temporary folder, make install WHEELHOUSE=... into it,
#      then nbhelpers info and the toy model drawing an image in that venv;
#   3. a wheelhouse that lacks one wheel (tqdm, with its manifest line) must fail to install
#      with a message that names tqdm and the make wheelhouse command.
# The network is cut by a network namespace (unshare -n: only a loopback interface, down) where
# this machine allows it, checked by a connection that must fail; elsewhere by proxies that lead
# nowhere (127.0.0.1:9) and uv's and pip's offline switches, and the log says so. Either way pip
# reads no configuration of this machine (its find-links may hold wheels the folder lacks).
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
tmp=$(mktemp -d "${TMPDIR:-/tmp}/nbhelpers-wheelhouse-test.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
say() { echo "test-wheelhouse: $*"; }
fail() { echo "test-wheelhouse: FAILED: $*" >&2; exit 1; }

wheelhouse="${NBHELPERS_CACHE:-$HOME/.cache/nbhelpers}/test-wheelhouse"

start=$(date +%s)
make --no-print-directory wheelhouse WHEELHOUSE="$wheelhouse"
built=$(date +%s)
test -f "$wheelhouse/manifest.json" || fail "make wheelhouse left no manifest.json"
ls "$(dirname "$wheelhouse")"/.test-wheelhouse.partial-* >/dev/null 2>&1 \
  && fail "a .partial folder was left behind"

offline_env=(env -u PYTHONDONTWRITEBYTECODE -u PIP_FIND_LINKS -u PIP_INDEX_URL -u PIP_EXTRA_INDEX_URL
             -u UV_INDEX_URL -u UV_EXTRA_INDEX_URL -u UV_FIND_LINKS PIP_CONFIG_FILE=/dev/null)
if unshare -n true 2>/dev/null; then
  cut=(unshare -n)
  how="in a network namespace with no network (unshare -n)"
else
  cut=()
  how="with proxies to 127.0.0.1:9, UV_OFFLINE=1 and PIP_NO_INDEX=1 (unshare -n is not allowed here, so no network namespace)"
  offline_env+=(UV_OFFLINE=1 PIP_NO_INDEX=1 http_proxy=http://127.0.0.1:9
                https_proxy=http://127.0.0.1:9 HTTP_PROXY=http://127.0.0.1:9
                HTTPS_PROXY=http://127.0.0.1:9 ALL_PROXY=http://127.0.0.1:9 no_proxy= NO_PROXY=)
fi
offline() { "${cut[@]}" "${offline_env[@]}" "$@"; }
say "installing a fresh venv from the wheelhouse $how"

# the proof that the cut holds: a connection to the package index must fail in it
offline python3 - <<'EOF' || fail "the network is reachable where it should be cut off"
import socket, sys, urllib.request
try:
    urllib.request.urlopen("https://pypi.org/simple/pip/", timeout=10)
except OSError as e:
    print(f"test-wheelhouse: pypi.org cannot be reached, as wanted ({type(e).__name__})")
    sys.exit(0)
sys.exit(1)
EOF

venv="$tmp/venv"
offline make --no-print-directory install WHEELHOUSE="$wheelhouse" VENV="$venv"
installed=$(date +%s)
offline "$venv/bin/nbhelpers" info
offline env -C "$tmp" "$venv/bin/python" - "$repo" <<'EOF'
import sys
from pathlib import Path

import torch
from diffusers import DDIMScheduler

import nbhelpers
from nbhelpers.models import load_pipeline
from nbhelpers.rehearsal import clip_merges_path
from nbhelpers.sampling import sample_cfg

repo = Path(sys.argv[1]).resolve()
assert Path(sys.prefix).name == "venv", f"not the fresh venv: {sys.prefix}"
assert Path(nbhelpers.__file__).resolve().is_relative_to(repo), nbhelpers.__file__
assert torch.version.cuda is None, f"torch {torch.__version__} is not a CPU build"
import jupyterlab, nbval, pytest  # the dev extra is there
assert clip_merges_path().is_file()      # open-clip-torch's tokenizer file
pipe = load_pipeline("toy")
pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
images = sample_cfg(pipe, "a red circle on a white background", [1, 7.5], seed=3, num_steps=2)
assert images.shape == (2, 64, 64, 3), images.shape
print(f"test-wheelhouse: in the fresh venv: torch {torch.__version__}, nbhelpers from {repo}, "
      f"the toy model drew {images.shape[0]} images of {images.shape[1]}x{images.shape[2]}")
EOF
smoked=$(date +%s)

# a wheelhouse without tqdm (as one built before the project needed it): a clear error
bad="$tmp/wheelhouse-without-tqdm"
mkdir "$bad"
ln "$wheelhouse"/*.whl "$bad"/ 2>/dev/null || cp "$wheelhouse"/*.whl "$bad"/
rm "$bad"/tqdm-*.whl
python3 - "$wheelhouse/manifest.json" "$bad/manifest.json" <<'EOF'
import json, sys
m = json.load(open(sys.argv[1]))
m["wheels"] = [w for w in m["wheels"] if not w["file"].startswith("tqdm-")]
json.dump(m, open(sys.argv[2], "w"))
EOF
if offline make --no-print-directory install WHEELHOUSE="$bad" VENV="$tmp/venv-bad" \
     >"$tmp/bad.log" 2>&1; then
  fail "make install from a wheelhouse without tqdm succeeded"
fi
grep -q "has no wheel of tqdm" "$tmp/bad.log" && grep -q "make wheelhouse WHEELHOUSE=$bad" "$tmp/bad.log" \
  || { cat "$tmp/bad.log"; fail "the error for a missing wheel does not name tqdm and make wheelhouse"; }
say "a wheelhouse without tqdm is refused: $(grep -m1 'has no wheel of' "$tmp/bad.log" | cut -c1-150)..."
done_=$(date +%s)

python3 - "$wheelhouse/manifest.json" "$venv" <<EOF
import json, subprocess, sys
m = json.load(open(sys.argv[1]))
venv = subprocess.run(["du", "-sm", sys.argv[2]], capture_output=True, text=True).stdout.split()[0]
print(f"test-wheelhouse: wheelhouse {len(m['wheels'])} wheels, {m['total_bytes'] / 1e6:.0f} MB "
      f"for {m['platform']} / CPython {m['python']} (torch {m['torch']['build']}); "
      f"the installed venv {venv} MB")
print("test-wheelhouse: seconds: build $((built - start)), offline install $((installed - built)), "
      "smoke $((smoked - installed)), missing-wheel check $((done_ - smoked)), "
      "total $((done_ - start))")
EOF
say "passed"
