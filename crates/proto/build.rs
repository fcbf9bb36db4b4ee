//! Compiles `proto/` with protox (pure Rust, no system `protoc`) and writes the descriptor set
//! ourselves: `file_descriptor_set_path()` is ignored when compiling from a descriptor set.

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

    let mut files = Vec::new();
    collect(&root.join("fengqiao"), &mut files)?;
    files.sort();
    for f in &files {
        println!("cargo:rerun-if-changed={}", f.display());
    }

    let fds = protox::compile(&files, [&root])?;
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out.join("fengqiao_descriptor.bin"),
        prost::Message::encode_to_vec(&fds),
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
