#!/usr/bin/env bash
# Builds the dev-only virtual environment for the langsfer CLP cross-check
# (tests/test_clp_langsfer.py; docs/methods/clp.md, "Testable properties").
#
# langsfer 0.1.0 pins transformers<5, numpy<2 and scipy<1.13, which cannot coexist with
# xbench's own pins, so it lives in its own venv and is driven through tools/langsfer_clp.py.
#
#   bash tools/langsfer_env.sh            # builds (or reuses) the venv, prints its path
#   XBENCH_LANGSFER_VENV=/some/dir bash tools/langsfer_env.sh
#
# Default location: <repo>/.xbench_cache/langsfer-venv (git-ignored).
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${XBENCH_LANGSFER_VENV:-$repo/.xbench_cache/langsfer-venv}"
python="${PYTHON:-python3}"

if [ -x "$venv/bin/python" ] && "$venv/bin/python" -c "import langsfer.high_level" 2>/dev/null; then
    echo "$venv"
    exit 0
fi

mkdir -p "$(dirname "$venv")"
"$python" -m venv "$venv"
# torch first and pinned: an unpinned torch pulls several GB of CUDA wheels, while
# torch==2.13.0 resolves to the CPU build (environment spec §1). langsfer accepts any torch 2.x.
"$venv/bin/pip" install --quiet torch==2.13.0
# platformdirs: imported by langsfer.constants but missing from langsfer 0.1.0's metadata.
# Resolved on Python 3.11 when this was written: transformers 4.57.6, tokenizers 0.22.2,
# numpy 1.26.4, scipy 1.12.0, scikit-learn 1.9.1, gensim 4.4.0; the venv is about 1.4 GB.
"$venv/bin/pip" install --quiet langsfer==0.1.0 platformdirs
"$venv/bin/python" -c "import langsfer.high_level" >/dev/null
echo "$venv"
