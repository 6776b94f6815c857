# Sourced by scripts that need a tool from PyPI: `ensure_python_tool VENV DISTRIBUTION VERSION`
# makes a virtualenv at VENV (under the git-ignored .dev/) holding DISTRIBUTION==VERSION, unless it
# holds it already. Needs python3; Debian without python3-venv gets a venv without pip, filled by
# the system's pip (>= 22.3 installs into another interpreter's environment with --python).

ensure_python_tool() {
    local venv=$1 distribution=$2 version=$3
    local python=$venv/bin/python
    if [[ -x $python ]] && "$python" - "$distribution" "$version" >/dev/null 2>&1 <<'PY'
import sys
from importlib.metadata import version
sys.exit(0 if version(sys.argv[1]) == sys.argv[2] else 1)
PY
    then
        return 0
    fi
    command -v python3 >/dev/null || { echo "python3 is needed for $distribution" >&2; return 1; }
    echo "installing $distribution==$version into $venv" >&2
    rm -rf "$venv"
    mkdir -p "$(dirname "$venv")"
    if python3 -m venv "$venv" >/dev/null 2>&1; then
        "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "$distribution==$version"
        return
    fi
    rm -rf "$venv"
    python3 -m venv --without-pip "$venv" || {
        echo "cannot create a virtualenv: install python3-venv (Debian: apt-get install python3-venv)" >&2
        return 1
    }
    python3 -m pip --python "$venv/bin/python" install --quiet --disable-pip-version-check \
        "$distribution==$version" || {
        echo "cannot install $distribution: install python3-venv, or pip >= 22.3" >&2
        return 1
    }
}
