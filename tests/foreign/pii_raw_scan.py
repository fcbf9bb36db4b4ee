"""Raw-byte search for personal information at rest (issue #14 §1, "Done when").

    pii_raw_scan.py --values-from EXAMPLE.py [--values-from ...] PATH [PATH ...]

Takes every ID number and phone the worked examples send (the `id_number` / `idNumber` and
`phone` string literals of each EXAMPLE.py, so the scan follows the examples as they change)
and searches every file under each PATH (directories recursively: every `*.db`, `*-wal`,
`*-shm`, key file and log) for their raw bytes, in the spellings a store or a log could hold:
as sent, with an ID number's check digit `X` in lower case, and a landline without its `-`.

Prints one line per (value, file) found, naming the value by a label (its kind, its number and
where the example has it, e.g. `id_number#1 (referral_example.py:72)`) and the file, never the
value itself; exits 1 if anything was found, 2 if no value or no file was there to search
(a scan that searched nothing proves nothing), 0 otherwise.
"""

import argparse
import os
import re
import sqlite3
import sys

# `"id_number": "…"`, `"idNumber": "…"`, `"phone": "…"` in the examples' request literals.
FIELD = re.compile(r'"(id_number|idNumber|phone)"\s*:\s*"([^"]+)"')


def values_from(path):
    """(label, [byte spellings]) for every ID number and phone literal in `path`."""
    out, seen, n = [], set(), {"id_number": 0, "phone": 0}
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            for m in FIELD.finditer(line):
                kind = "id_number" if m.group(1) in ("id_number", "idNumber") else "phone"
                value = m.group(2)
                if value in seen:
                    continue
                seen.add(value)
                n[kind] += 1
                label = f"{kind}#{n[kind]} ({os.path.basename(path)}:{lineno})"
                spellings = {value}
                if kind == "id_number":
                    spellings |= {value.upper(), value.lower()}
                else:
                    spellings.add(value.replace("-", "").replace(" ", ""))
                out.append((label, sorted(s.encode() for s in spellings)))
    return out


def columns_holding(path, values):
    """For an SQLite database file: (label, "table.column", rows) for every column whose
    values hold one of `values`, to say which column still stores it in the clear."""
    out = []
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        for t in tables:
            cols = [r[1] for r in db.execute(f'PRAGMA table_info("{t}")')]
            for c in cols:
                for label, spellings in values:
                    rows = 0
                    for sp in spellings:
                        rows += db.execute(
                            f'SELECT COUNT(*) FROM "{t}" WHERE instr(CAST("{c}" AS BLOB), ?) > 0',
                            (sp,)).fetchone()[0]
                    if rows:
                        out.append((label, f"{t}.{c}", rows))
        db.close()
    except sqlite3.Error as e:
        out.append(("(not readable as SQLite)", type(e).__name__, 0))
    return out


def files_under(paths):
    for p in paths:
        if os.path.isdir(p):
            for dirpath, _, names in os.walk(p):
                for name in sorted(names):
                    yield os.path.join(dirpath, name)
        elif os.path.isfile(p):
            yield p


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--values-from", action="append", required=True, metavar="EXAMPLE")
    ap.add_argument("paths", nargs="+")
    args = ap.parse_args()

    values, seen = [], set()
    for ex in args.values_from:
        for label, spellings in values_from(ex):
            if spellings[0] not in seen:
                seen.add(spellings[0])
                values.append((label, spellings))
    ids = sum(1 for label, _ in values if label.startswith("id_number"))
    phones = len(values) - ids
    if not values or ids == 0:
        print(f"FAIL no ID number to search for in {args.values_from}", flush=True)
        sys.exit(2)

    files, found = 0, 0
    for path in files_under(args.paths):
        files += 1
        with open(path, "rb") as f:
            data = f.read()
        for label, spellings in values:
            hits = sum(data.count(s) for s in spellings)
            if hits:
                found += 1
                print(f"FOUND {label} in {path}: {hits} time(s)", flush=True)
        if path.endswith(".db") and any(data.count(s) for _, sp in values for s in sp):
            for label, column, rows in columns_holding(path, values):
                print(f"      {label} in column {column} of {os.path.basename(path)}: "
                      f"{rows} row(s)", flush=True)
    if files == 0:
        print(f"FAIL no file to search under {args.paths}", flush=True)
        sys.exit(2)
    verdict = "FAILED" if found else "ok"
    print(f"pii raw scan {verdict}: {ids} ID number(s) and {phones} phone(s) searched in "
          f"{files} file(s); {found} (value, file) pair(s) found", flush=True)
    sys.exit(1 if found else 0)


if __name__ == "__main__":
    main()
