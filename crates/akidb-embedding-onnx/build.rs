//! Generates the ONNX protobuf types (`onnx.rs` in `OUT_DIR`) from the vendored
//! `proto/onnx.proto` with pure-Rust tools: `protox` parses the schema, `prost-build` writes
//! the types. No `protoc` binary is needed.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/onnx.proto");
    let descriptors = protox::compile(["onnx.proto"], ["proto"])?;
    prost_build::Config::new().compile_fds(descriptors)?;
    Ok(())
}
