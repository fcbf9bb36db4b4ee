#!/usr/bin/env python3
"""Writes the `google.api.http` rule of every RPC of proto/fengqiao (AIP-127), derived from the
request messages and the `google.api.resource` patterns. Idempotent: rules it wrote before are
replaced, so rerunning after a contract change keeps every method annotated the same way.

Rules (the gateway in crates/kit/src/gateway matches exactly these forms):
  Get<R>(name)             GET    <root>/{name=<pattern>}
  Get<X>(name), other read GET    <root>/{name=<pattern>}:<verb>
  Get<X>() without name    GET    <root>/<x>
  List<Xs>(parent)         GET    <root>/{parent=<pattern>}/<xs>
  List<Xs>()               GET    <root>/<xs>
  Create<R>                POST   <root>[/{parent=<pattern>}]/<collection>  body: "<r>"
  Update<R>                PATCH  <root>/{<r>.name=<pattern>}               body: "<r>"
  Watch<Xs> (stream)       GET    <root>/<xs>:watch
  <Verb><R>(name)          POST   <root>/{name=<pattern>}:<verb>           body: "*"
  <Verb><Xs>() otherwise   POST   <root>/<xs>:<verb>                       body: "*"
<root> is /v1 for the router's package and /v1/<package> for an agency service's (several
agency services keep `cases/*`, so their paths need the package to be told apart).

Usage: scripts/http-annotations.py [--check]   (--check: exit 1 if a file would change)
"""

import pathlib
import re
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent / "proto" / "fengqiao"


def strip_comments(text):
    return re.sub(r"//[^\n]*", "", text)


def blocks(text, keyword):
    """(name, body) of every `keyword Name { ... }` block, nested ones included."""
    out = []
    for m in re.finditer(r"\b%s\s+(\w+)\s*\{" % keyword, text):
        depth, i = 1, m.end()
        while depth and i < len(text):
            depth += {"{": 1, "}": -1}.get(text[i], 0)
            i += 1
        out.append((m.group(1), text[m.end() : i - 1]))
    return out


def top_level(body):
    """The body without its nested message and enum blocks."""
    res = re.sub(r"\b(message|enum)\s+\w+\s*\{", "\0", body)
    text, depth = [], 0
    for ch in res:
        if ch == "\0":
            depth += 1
            continue
        if depth:
            if ch == "{":
                depth += 1
            elif ch == "}":
                depth -= 1
            continue
        text.append(ch)
    return "".join(text)


FIELD = re.compile(
    r"(?:optional\s+|repeated\s+)?([\w.]+)\s+(\w+)\s*=\s*\d+\s*(\[(?:[^\[\]]|\[[^\]]*\])*\])?\s*;",
    re.S,
)
REF = re.compile(r"resource_reference\)\s*(?:=\s*\{[^}]*?type:|\.type\s*=)\s*\"([^\"]+)\"", re.S)


def parse_all():
    messages, resources, files = {}, {}, []
    for path in sorted(ROOT.rglob("*.proto")):
        text = path.read_text()
        clean = strip_comments(text)
        package = re.search(r"\bpackage\s+([\w.]+)\s*;", clean).group(1)
        files.append((path, text, package))
        for name, body in blocks(clean, "message"):
            fields = {}
            for f in FIELD.finditer(top_level(body)):
                ref = REF.search(f.group(3) or "")
                fields[f.group(2)] = (f.group(1), ref.group(1) if ref else None)
            messages[(package, name)] = fields
            r = re.search(
                r"option\s*\(google\.api\.resource\)\s*=\s*\{[^}]*?type:\s*\"([^\"]+)\"[^}]*?pattern:\s*\"([^\"]+)\"",
                body,
                re.S,
            )
            if r and r.group(1) not in resources:
                resources[r.group(1)] = (name, r.group(2))
    return messages, resources, files


def lower_camel(s):
    return s[:1].lower() + s[1:] if s else s


def snake(s):
    return re.sub(r"(?<!^)([A-Z])", r"_\1", s).lower()


def wildcard(pattern):
    return re.sub(r"\{\w+\}", "*", pattern)


def camel_words(s):
    return re.findall(r"[A-Z][a-z0-9]*", s)


def rule(package, service, method, req, resp_stream, messages, resources):
    root = "/v1" if package == "fengqiao.router.v1" else "/v1/" + package.split(".")[1]
    fields = messages.get((package, req), {})

    def pattern_of(field):
        typ, ref = fields.get(field, (None, None))
        if ref and ref in resources:
            return resources[ref]
        return None

    name, parent = pattern_of("name"), pattern_of("parent")
    words = camel_words(method)
    verb, noun = words[0], "".join(words[1:])

    def resource_named(singular):
        """(message, pattern) of the resource named `singular` (or ending in it)."""
        for rname, pat in resources.values():
            if rname == singular:
                return rname, pat
        for rname, pat in resources.values():
            if singular and rname.endswith(singular):
                return rname, pat
        return None

    def singular(plural):
        if plural.endswith("ies"):
            return plural[:-3] + "y"
        return plural[:-1] if plural.endswith("s") else plural

    def collection(noun, plural):
        """The collection segment of the resource `noun` names, e.g. InvitedMediators -> mediators."""
        r = resource_named(singular(noun) if plural else noun)
        if r:
            return r[1].split("/")[-2]
        return lower_camel(noun) if plural else lower_camel(noun) + "s"

    def under_parent(coll):
        # A parent that is a filter over the same collection (ListAgencies.parent) stays a query.
        if parent and parent[1].split("/")[0] != coll:
            return f"{root}/{{parent={wildcard(parent[1])}}}/{coll}"
        return f"{root}/{coll}"

    if resp_stream and verb == "Watch":
        return "get", f"{root}/{collection(noun, True)}:watch", None
    if verb == "Create" and noun:
        body = snake(noun) if snake(noun) in fields else None
        if body is None:
            # The one field holding the resource (CreateCaseRequest.pre_filing_case).
            for fname, (typ, _) in fields.items():
                if any(rname == typ.split(".")[-1] for rname, _ in resources.values()):
                    body = fname
        return "post", under_parent(collection(noun, False)), body or "*"
    if verb == "Update" and snake(noun) in fields:
        typ = fields[snake(noun)][0].split(".")[-1]
        for rname, pat in resources.values():
            if rname == typ:
                return "patch", f"{root}/{{{snake(noun)}.name={wildcard(pat)}}}", snake(noun)
    if verb == "List":
        return "get", under_parent(collection(noun, True)), None
    if verb == "Get":
        if name:
            if name[0].endswith(noun):
                return "get", f"{root}/{{name={wildcard(name[1])}}}", None
            rest = noun.replace(name[0], "", 1) or noun
            return "get", f"{root}/{{name={wildcard(name[1])}}}:{lower_camel(rest)}", None
        return "get", f"{root}/{lower_camel(noun)}", None
    if name:
        res = name[0]
        rest = method
        # The verb without the resource's own name: ApproveTransfer -> approve.
        for candidate in (res, *[res[i:] for i in range(1, len(res)) if res[i].isupper()]):
            if method.endswith(candidate) and method != candidate:
                rest = method[: -len(candidate)]
                break
        return "post", f"{root}/{{name={wildcard(name[1])}}}:{lower_camel(rest)}", "*"
    if not noun:
        return "post", f"{root}/{lower_camel(service.removesuffix('Service'))}:{lower_camel(verb)}", "*"
    plural = noun.endswith("s")
    coll = collection(noun, plural) if plural or resource_named(noun) else lower_camel(noun)
    return "post", f"{under_parent(coll)}:{lower_camel(verb)}", "*"


RPC = re.compile(
    r"(?P<indent>[ \t]*)rpc\s+(?P<m>\w+)\s*\(\s*(?P<req>[\w.]+)\s*\)\s*returns\s*\(\s*(?P<stream>stream\s+)?(?P<resp>[\w.]+)\s*\)"
    r"(?:\s*\{\s*option\s*\(google\.api\.http\)\s*=\s*\{(?:[^{}]|\{[^{}]*\})*\}\s*;\s*\}|\s*;)"
)


def main():
    check = "--check" in sys.argv
    messages, resources, files = parse_all()
    seen, changed = {}, []
    for path, text, package in files:
        clean = strip_comments(text)
        services = dict(blocks(clean, "service"))
        owner = {}
        for svc, body in services.items():
            for m in re.finditer(r"rpc\s+(\w+)", body):
                owner[m.group(1)] = svc

        def replace(m):
            method = m.group("m")
            verb, path_, body = rule(
                package, owner[method], method, m.group("req"), bool(m.group("stream")), messages, resources
            )
            key = (verb, re.sub(r"\{[\w.]+=", "{", path_))
            if key in seen:
                sys.exit(f"{package}.{method}: {verb.upper()} {path_} also used by {seen[key]}")
            seen[key] = f"{package}.{method}"
            ind = m.group("indent")
            sig = f"{ind}rpc {method}({m.group('req')}) returns ({m.group('stream') or ''}{m.group('resp')})"
            lines = [f'{ind}    {verb}: "{path_}"']
            if body:
                lines.append(f'{ind}    body: "{body}"')
            inner = "\n".join(lines)
            return f"{sig} {{\n{ind}  option (google.api.http) = {{\n{inner}\n{ind}  }};\n{ind}}}"

        new = RPC.sub(replace, text)
        if 'import "google/api/annotations.proto";' not in new and "service " in clean:
            # Imports are kept sorted; google/api/annotations sorts before field_behavior.
            imports = list(re.finditer(r'^import "([^"]+)";\n', new, re.M))
            at = next((i for i in imports if i.group(1) > "google/api/annotations.proto"), None)
            pos = at.start() if at else imports[-1].end()
            new = new[:pos] + 'import "google/api/annotations.proto";\n' + new[pos:]
        if new != text:
            changed.append(path)
            if not check:
                path.write_text(new)
    for p in changed:
        print(("would change " if check else "wrote ") + str(p.relative_to(ROOT.parent.parent)))
    if check and changed:
        sys.exit(1)


if __name__ == "__main__":
    main()
