//! Compiles `proto/` with protox (pure Rust, no system `protoc`) and writes the descriptor set
//! ourselves: `file_descriptor_set_path()` is ignored when compiling from a descriptor set.
//! The set keeps the custom options (google.api annotations); see below.

use std::path::{Path, PathBuf};

fn collect(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            collect(&path, out)?;
        } else if path.extension().is_some_and(|e| e == "proto") {
            out.push(path);
        }
    }
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?);
    let root = manifest.join("../../proto").canonicalize()?;
    println!("cargo:rerun-if-changed={}", root.display());
    println!("cargo:rerun-if-changed={}", root.join("google").display());

    let mut files = Vec::new();
    collect(&root.join("fengqiao"), &mut files)?;
    files.sort();
    for f in &files {
        println!("cargo:rerun-if-changed={}", f.display());
    }

    let mut compiler = protox::Compiler::new([&root])?;
    compiler
        .include_source_info(true)
        // The vendored google/api/*.proto (and the well-known types) go into the set too,
        // so reflection clients can resolve the annotations' extensions.
        .include_imports(true)
        .open_files(&files)?;
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    // Encoded by protox itself: a `prost_types::FileDescriptorSet` drops extension options
    // (unknown fields), which would strip every google.api.field_behavior/resource annotation.
    std::fs::write(
        out.join("fengqiao_descriptor.bin"),
        compiler.encode_file_descriptor_set(),
    )?;
    let fds = compiler.file_descriptor_set();

    // google.rpc.Status and its error details, for the JSON/HTTP gateway's error bodies: no
    // contract imports them, so they get a set (and no generated code) of their own.
    let mut rpc = protox::Compiler::new([&root])?;
    rpc.include_imports(true).open_files([
        root.join("google/rpc/status.proto"),
        root.join("google/rpc/error_details.proto"),
    ])?;
    std::fs::write(
        out.join("google_rpc_descriptor.bin"),
        rpc.encode_file_descriptor_set(),
    )?;

    std::fs::write(out.join("personal.rs"), personal::generate(&fds))?;

    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        // Parts not built yet answer UNIMPLEMENTED instead of being missing from reflection.
        .generate_default_stubs(true)
        // Deterministic encoding of maps: request hashes for idempotency depend on it.
        .btree_map(".")
        .compile_fds(fds)?;
    Ok(())
}

/// Generates `impl Personal for …` for every message that holds a `fengqiao.common.v1.Party`
/// or `Address`, directly or through its fields, so that masking and minimisation reach every
/// resource, response and envelope of every service without a hand-kept list.
mod personal {
    use std::collections::{BTreeMap, BTreeSet};
    use std::fmt::Write as _;

    use prost_types::field_descriptor_proto::{Label, Type};
    use prost_types::{DescriptorProto, FileDescriptorSet};

    const PARTY: &str = ".fengqiao.common.v1.Party";
    const ADDRESS: &str = ".fengqiao.common.v1.Address";

    struct Msg {
        rust: String,
        desc: DescriptorProto,
        /// Full names of map entry messages of this message, by entry type name.
        is_map_entry: bool,
    }

    fn snake(s: &str) -> String {
        let mut out = String::new();
        for (i, c) in s.chars().enumerate() {
            if c.is_ascii_uppercase() {
                if i > 0 {
                    out.push('_');
                }
                out.push(c.to_ascii_lowercase());
            } else {
                out.push(c);
            }
        }
        out
    }

    fn camel(s: &str) -> String {
        s.split('_')
            .map(|w| {
                let mut c = w.chars();
                match c.next() {
                    Some(f) => f.to_ascii_uppercase().to_string() + c.as_str(),
                    None => String::new(),
                }
            })
            .collect()
    }

    fn ident(s: &str) -> String {
        const KEYWORDS: &[&str] = &[
            "as", "break", "const", "continue", "crate", "else", "enum", "extern", "false", "fn",
            "for", "if", "impl", "in", "let", "loop", "match", "mod", "move", "mut", "pub", "ref",
            "return", "static", "struct", "trait", "true", "type", "unsafe", "use", "where",
            "while", "async", "await", "dyn", "abstract", "become", "box", "do", "final", "macro",
            "override", "priv", "typeof", "unsized", "virtual", "yield", "try",
        ];
        if KEYWORDS.contains(&s) {
            format!("r#{s}")
        } else {
            s.to_string()
        }
    }

    fn collect(
        msgs: &mut BTreeMap<String, Msg>,
        full_prefix: &str,
        rust_prefix: &str,
        d: &DescriptorProto,
    ) {
        let full = format!("{full_prefix}.{}", d.name());
        let rust = format!("{rust_prefix}::{}", camel_type(d.name()));
        msgs.insert(
            full.clone(),
            Msg {
                rust,
                desc: d.clone(),
                is_map_entry: d.options.as_ref().is_some_and(|o| o.map_entry()),
            },
        );
        let nested_rust = format!("{rust_prefix}::{}", snake(d.name()));
        for n in &d.nested_type {
            collect(msgs, &full, &nested_rust, n);
        }
    }

    /// prost's type names: upper camel case of the proto name (already camel in our protos).
    fn camel_type(s: &str) -> String {
        let mut c = s.chars();
        match c.next() {
            Some(f) => f.to_ascii_uppercase().to_string() + c.as_str(),
            None => String::new(),
        }
    }

    pub fn generate(fds: &FileDescriptorSet) -> String {
        let mut msgs = BTreeMap::new();
        for f in &fds.file {
            let pkg = f.package();
            if !pkg.starts_with("fengqiao.") {
                continue;
            }
            let rust_prefix = format!("crate::{}", pkg.replace('.', "::"));
            for d in &f.message_type {
                collect(&mut msgs, &format!(".{pkg}"), &rust_prefix, d);
            }
        }
        // Messages that hold personal information, to a fixed point.
        let mut holds: BTreeSet<String> = [PARTY.to_string(), ADDRESS.to_string()].into();
        loop {
            let before = holds.len();
            for (name, m) in &msgs {
                if holds.contains(name) {
                    continue;
                }
                if m.desc.field.iter().any(|f| holds.contains(f.type_name())) {
                    holds.insert(name.clone());
                }
            }
            if holds.len() == before {
                break;
            }
        }
        let mut out = String::new();
        for (name, m) in &msgs {
            if !holds.contains(name) || m.is_map_entry {
                continue;
            }
            let mut body = String::new();
            if name == PARTY {
                body.push_str("        v(crate::personal::PersonalMut::Party(self));\n");
            } else if name == ADDRESS {
                body.push_str("        v(crate::personal::PersonalMut::Address(self));\n");
            } else {
                for f in &m.desc.field {
                    if f.r#type() != Type::Message || !holds.contains(f.type_name()) {
                        continue;
                    }
                    let field = ident(f.name());
                    let repeated = f.label() == Label::Repeated;
                    let entry = msgs.get(f.type_name()).filter(|e| e.is_map_entry);
                    if let Some(entry) = entry {
                        // map<_, Message>: visit the values.
                        let value = entry.desc.field.iter().find(|x| x.number() == 2);
                        if value.is_some_and(|v| holds.contains(v.type_name())) {
                            let _ = writeln!(
                                body,
                                "        for x in self.{field}.values_mut() {{ x.visit_personal(v); }}"
                            );
                        }
                        continue;
                    }
                    let in_oneof = f.oneof_index.filter(|_| !f.proto3_optional());
                    if let Some(i) = in_oneof {
                        let oneof = m.desc.oneof_decl[i as usize].name();
                        let module = format!(
                            "{}::{}",
                            m.rust.rsplit_once("::").map(|(p, _)| p).unwrap_or(""),
                            snake(m.desc.name())
                        );
                        let _ = writeln!(
                            body,
                            "        if let Some({module}::{}::{}(x)) = &mut self.{} {{ x.visit_personal(v); }}",
                            camel(oneof),
                            camel(f.name()),
                            ident(oneof)
                        );
                    } else if repeated {
                        let _ = writeln!(
                            body,
                            "        for x in &mut self.{field} {{ x.visit_personal(v); }}"
                        );
                    } else {
                        let _ = writeln!(
                            body,
                            "        if let Some(x) = &mut self.{field} {{ x.visit_personal(v); }}"
                        );
                    }
                }
            }
            let _ = writeln!(
                out,
                "impl crate::personal::Personal for {} {{\n    \
                 fn visit_personal(&mut self, v: &mut dyn FnMut(crate::personal::PersonalMut<'_>)) {{\n{body}    }}\n}}\n",
                m.rust
            );
        }
        // The oneof enums are generated as their own types: nothing else to do for them.
        out
    }
}
