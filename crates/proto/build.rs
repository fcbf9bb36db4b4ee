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
