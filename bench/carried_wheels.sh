# Sourced by the GPU scripts: wheels of missing packages placed in .whl/ at the repository root
# (diffusers, transformers, ...) are installed into /tmp/site without network, and PYTHONPATH
# gets the repository and that folder. Expects PY and the repository root as the working folder.
if compgen -G ".whl/*.whl" > /dev/null; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
