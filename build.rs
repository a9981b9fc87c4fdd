//! Compiles `proto/` with a pure-Rust protobuf compiler (protox, no system
//! `protoc`), generates the tonic/prost code, and writes the encoded descriptor
//! set that the binary embeds once for reflection, the policy table and the
//! REST gateway. The descriptor keeps custom options (`google.api.http`,
//! `tenantry.v1.policy`) and source comments, which the server reads at start.

use std::{env, fs, path::PathBuf};

use prost::Message;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);

    let mut files: Vec<PathBuf> =
        fs::read_dir("proto/tenantry/v1")?.map(|entry| entry.map(|e| e.path())).collect::<Result<_, _>>()?;
    files.retain(|path| path.extension().is_some_and(|ext| ext == "proto"));
    files.sort();

    let mut compiler = protox::Compiler::new(["proto"])?;
    compiler.include_imports(true).include_source_info(true);
    for file in &files {
        let relative = file.strip_prefix("proto")?;
        compiler.open_file(relative)?;
    }

    // The raw encoding keeps extension options that prost_types would drop.
    let encoded = compiler.encode_file_descriptor_set();
    fs::write(out_dir.join("tenantry_descriptor.bin"), &encoded)?;

    let fds = prost_types::FileDescriptorSet::decode(encoded.as_slice())?;
    // Type names let the codec find each message's descriptor for its edge checks.
    let mut config = prost_build::Config::new();
    config.enable_type_names();
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .codec_path("crate::codec::Codec")
        .compile_fds_with_config(fds, config)?;
    Ok(())
}
