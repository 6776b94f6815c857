#!/usr/bin/env python3
"""Holds what the scanner asks of Microsoft Graph, and what graph-sim answers, to Microsoft's own
published Graph v1.0 model: the `msgraph-sdk` package on PyPI, which Microsoft generates from
Graph's OpenAPI description (a request builder for every path, a query-parameter class for every
GET, a model class with its property names for every type).

The wheel is read as a zip, never imported: `pip download --no-deps msgraph-sdk==VERSION` into
.dev/graph-model/ on first use. Input (stdin, JSON):

  requests  [{method, path, query: {name: value}}]  what the scanner sent (graph-sim's log)
  writes    ["PATCH /policies/authorizationPolicy", ...]  every write the catalogue declares
  settings  [{resource, odata_type, pointers: [..]}]  properties the checks read and fixes write
  objects   [{resource, odata_type, object}]          what graph-sim answers: settings objects, and
                                                    the items of the collections the scanner reads
  bodies    [{resource, odata_type, body}]            what fixes send (each property, nested too)

Prints one line per violation and exits 1 when there is any. Defender for Endpoint's API (/api/...)
is not in this model and is skipped here.
"""

import json
import re
import subprocess
import sys
import zipfile
from pathlib import Path

VERSION = "1.65.0"
ROOT = "msgraph/generated/"
REPO = Path(__file__).resolve().parent.parent
CACHE = REPO / ".dev" / "graph-model"
# Query options that belong to paging and delta links (state tokens), not to the request builder.
PAGING = {"$skiptoken", "$deltatoken"}
# Where Microsoft's documentation and its generated model disagree, the documentation wins, and
# each case is written down: the SDKs model every update as PATCH.
DOCUMENTED = {
    "PUT /policies/adminConsentRequestPolicy":
        "documented as PUT (learn.microsoft.com/graph/api/adminconsentrequestpolicy-update)",
}


def wheel() -> zipfile.ZipFile:
    path = CACHE / f"msgraph_sdk-{VERSION}-py3-none-any.whl"
    if not path.exists():
        CACHE.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
             f"msgraph-sdk=={VERSION}", "-d", str(CACHE)],
            check=True,
        )
    return zipfile.ZipFile(path)


def snake(segment: str) -> str:
    return re.sub(r"(?<=[a-z0-9])([A-Z])", r"_\1", segment).lower()


class Model:
    def __init__(self, archive: zipfile.ZipFile):
        self.archive = archive
        self.files = set(archive.namelist())
        self.directories = set()
        for name in self.files:
            parts = name.split("/")
            for end in range(1, len(parts)):
                self.directories.add("/".join(parts[:end]) + "/")
        self.classes = {}
        for name in self.files:
            if name.startswith(ROOT + "models/") and name.endswith(".py"):
                stem = name.rsplit("/", 1)[1][:-3]
                self.classes.setdefault(stem, name)
        self.read_cache = {}

    def read(self, name: str) -> str:
        if name not in self.read_cache:
            self.read_cache[name] = self.archive.read(name).decode()
        return self.read_cache[name]

    def builder(self, path: str):
        """The request builder file of a Graph path (`/users/{id}/messageRules`), or a reason."""
        directory = ROOT
        for segment in [part for part in path.strip("/").split("/") if part]:
            named = directory + snake(segment) + "/"
            if not segment.startswith("{") and named in self.directories:
                directory = named
            elif directory + "item/" in self.directories:
                directory += "item/"
            else:
                return None, f"no '{segment}' under {directory[len(ROOT):] or '/'}"
        builders = [
            name for name in self.files
            if name.startswith(directory) and name.endswith("_request_builder.py")
            and "/" not in name[len(directory):]
        ]
        if not builders:
            return None, f"no request builder in {directory}"
        return builders[0], None

    def resolve(self, class_name: str, context: str):
        """The file defining `class_name` as `context` (a module of the package) imports it."""
        match = re.search(rf"^\s*from (\.+)([\w.]*) import {class_name}\s*$", self.read(context), re.M)
        if match:
            package = context.rsplit("/", 1)[0].split("/")
            up = len(match.group(1)) - 1
            base = package[: len(package) - up] if up else package
            module = "/".join(base + [part for part in match.group(2).split(".") if part]) + ".py"
            if module in self.files:
                return module
        return self.classes.get(snake(class_name))

    def properties(self, class_name: str, context: str, seen=None):
        """Property name -> (class, file) it holds (None for scalars, enums, collections of
        scalars), with those of its base classes."""
        seen = seen or set()
        name = self.resolve(class_name, context)
        if name is None or name in seen:
            return {}
        seen.add(name)
        source = self.read(name)
        found = {}
        for prop, getter in re.findall(r'"([^"]+)": lambda n : setattr\(self, \'\w+\', n\.(get_\w+\([^)]*\))', source):
            held = re.match(r"get_(?:object_value|collection_of_object_values)\((\w+)\)", getter)
            found[prop] = (held.group(1), name) if held else None
        base = re.search(rf"^class {class_name}\(([^)]*)\)", source, re.M)
        if base:
            for parent in [part.strip() for part in base.group(1).split(",")]:
                if parent not in ("Parsable", "AdditionalDataHolder", "BackedModel", "ABC"):
                    inherited = self.properties(parent, name, seen)
                    found.update({k: v for k, v in inherited.items() if k not in found})
        return found


def returned_class(model: Model, builder: str):
    """The type a GET answers, or for a collection the type of its items."""
    match = re.search(r"async def get\([^)]*\) -> Optional\[(\w+)\]", model.read(builder))
    if not match:
        return None
    name = match.group(1)
    return name[: -len("CollectionResponse")] if name.endswith("CollectionResponse") else name


def body_violations(model: Model, resource: str, body, held, where="") -> list:
    """Every property of a write body, nested objects and arrays of objects included, that the
    type it is written as does not have."""
    properties = model.properties(*held)
    if not properties:
        return [f"body for {resource}: no model class {held[0]}"]
    found = []
    for prop, value in body.items():
        if prop.startswith("@odata"):
            continue
        if prop not in properties:
            found.append(f"body for {resource}: {held[0]} has no property '{where}{prop}'")
            continue
        nested = properties[prop]
        items = value if isinstance(value, list) else [value]
        for item in items:
            if nested is not None and isinstance(item, dict):
                found.extend(body_violations(model, resource, item, nested, f"{where}{prop}/"))
    return found


def odata_class(odata_type: str) -> str:
    name = odata_type.rsplit(".", 1)[-1]
    return name[0].upper() + name[1:]


def main() -> int:
    contract = json.load(sys.stdin)
    model = Model(wheel())
    violations = []
    checked = set()

    for request in contract["requests"]:
        method, path = request["method"].upper(), request["path"]
        if not path.startswith("/v1.0/"):
            continue
        template = re.sub(r"/[0-9a-fA-F-]{36}(-\d+)?(?=/|$)", "/{id}", path[len("/v1.0"):])
        key = (method, template, tuple(sorted(request.get("query", {}))))
        if key in checked:
            continue
        checked.add(key)
        builder, reason = model.builder(template)
        if builder is None:
            violations.append(f"{method} {template}: {reason}")
            continue
        source = model.read(builder)
        if f"async def {method.lower()}(" not in source:
            violations.append(f"{method} {template}: the model has no {method} here")
            continue
        if method == "GET":
            parameters = re.search(r"class \w+GetQueryParameters\(\):(.*?)\n    @dataclass", source, re.S)
            declared = set(re.findall(r"original_name == \"(\w+)\"", parameters.group(1))) if parameters else set()
            for option in request.get("query", {}):
                if option in PAGING:
                    continue
                if option.lstrip("$") not in declared:
                    violations.append(f"GET {template}: query option {option} is not in the model")

    for write in contract["writes"]:
        method, template = write.split(" ", 1)
        if template.startswith("/api/") or write in DOCUMENTED:
            continue
        builder, reason = model.builder(template)
        if builder is None:
            violations.append(f"{write}: {reason}")
        elif f"async def {method.lower()}(" not in model.read(builder):
            violations.append(f"{write}: the model has no {method} here")

    for setting in contract["settings"]:
        resource = setting["resource"]
        builder, reason = model.builder(resource)
        if builder is None:
            violations.append(f"setting {resource}: {reason}")
            continue
        declared = returned_class(model, builder)
        class_name = odata_class(setting["odata_type"]) if setting.get("odata_type") else declared
        if model.resolve(class_name, builder) is None:
            violations.append(f"setting {resource}: no model class {class_name}")
            continue
        for pointer in setting["pointers"]:
            current = (class_name, builder)
            for part in pointer.strip("/").split("/"):
                properties = model.properties(*current)
                if part not in properties:
                    violations.append(f"setting {resource}: {class_name} has no {pointer} ({current[0]} has no '{part}')")
                    break
                current = properties[part]
                if current is None:
                    break

    for entry in contract["objects"]:
        resource = entry["resource"]
        builder, reason = model.builder(resource)
        if builder is None:
            continue
        class_name = odata_class(entry["odata_type"]) if entry.get("odata_type") else returned_class(model, builder)
        properties = model.properties(class_name, builder)
        if not properties:
            violations.append(f"graph-sim {resource}: no model class {class_name}")
            continue
        for prop in entry["object"]:
            if prop.startswith("@odata") or prop in properties:
                continue
            violations.append(f"graph-sim {resource}: {class_name} has no property '{prop}'")

    for entry in contract.get("bodies", []):
        resource = entry["resource"]
        builder, reason = model.builder(resource)
        if builder is None:
            violations.append(f"body for {resource}: {reason}")
            continue
        class_name = odata_class(entry["odata_type"]) if entry.get("odata_type") else returned_class(model, builder)
        violations.extend(body_violations(model, resource, entry["body"], (class_name, builder)))

    for violation in violations:
        print(violation)
    print(f"graph contract: {len(checked)} requests, {len(contract['writes'])} writes, "
          f"{len(contract['settings'])} settings, {len(contract['objects'])} objects, "
          f"{len(contract.get('bodies', []))} bodies checked "
          f"against msgraph-sdk {VERSION}: {len(violations)} violations", file=sys.stderr)
    return 1 if violations else 0


if __name__ == "__main__":
    sys.exit(main())
