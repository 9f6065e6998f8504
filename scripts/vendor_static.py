#!/usr/bin/env python3
"""Copy the dashboard's front-end libraries from node_modules/ into static/vendor/.

`npm ci` installs exactly what package-lock.json pins; this script copies the few built files
the templates load (and their licences). static/vendor/ is gitignored: nothing third-party is
committed, and a fresh checkout gets the same bytes from the lock file.
"""
from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NODE_MODULES = ROOT / "node_modules"
VENDOR = ROOT / "static" / "vendor"

# package → (files to copy, relative to the package, → destination folder under static/vendor)
FILES = {
    "htmx.org": (["dist/htmx.min.js", "LICENSE"], "htmx"),
    "@picocss/pico": (["css/pico.min.css", "LICENSE.md"], "pico"),
}


def main() -> int:
    missing = []
    for package, (files, dest) in FILES.items():
        source = NODE_MODULES / package
        if not source.is_dir():
            missing.append(package)
            continue
        version = json.loads((source / "package.json").read_text())["version"]
        target = VENDOR / dest
        target.mkdir(parents=True, exist_ok=True)
        for name in files:
            if (source / name).exists():
                shutil.copy2(source / name, target / Path(name).name)
        (target / "VERSION").write_text(version + "\n")
        print(f"vendored {package}@{version} → static/vendor/{dest}/")
    if missing:
        print(f"missing in node_modules: {', '.join(missing)}; run `npm ci` first", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
