#!/usr/bin/env bash
# Generates the Python protobuf modules of every Picket contract (proto/picket/**/*.proto) into
# ./generated (git-ignored), with grpc_tools' bundled protoc and well-known types: no system protoc.
#
#   PYTHON=/path/to/venv/bin/python ./generate.sh      # default: python3 on PATH
#   PROTO_DIR=... OUT_DIR=... ./generate.sh             # defaults: ../../proto and ./generated
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
proto_dir=$(cd "${PROTO_DIR:-$here/../../proto}" && pwd)
out=${OUT_DIR:-$here/generated}
python=${PYTHON:-python3}

mkdir -p "$out"
out=$(cd "$out" && pwd)
# Start clean so a removed .proto leaves no stale module behind.
find "$out" -mindepth 1 -delete

mapfile -t files < <(cd "$proto_dir" && find picket -name '*.proto' | LC_ALL=C sort)
if [[ ${#files[@]} -eq 0 ]]; then
	echo "no .proto files under $proto_dir/picket" >&2
	exit 1
fi
# The proto directory is the import root: files import each other as "picket/<area>/v1/<file>.proto",
# so the modules land as generated/picket/<area>/v1/<file>_pb2.py (namespace packages, no __init__.py).
(cd "$proto_dir" && "$python" -m grpc_tools.protoc -I . --python_out="$out" --pyi_out="$out" "${files[@]}")
echo "generated Python modules for ${#files[@]} proto files into $out"
