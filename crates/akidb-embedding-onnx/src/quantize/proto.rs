//! ONNX protobuf types, generated at build time from the vendored `proto/onnx.proto`
//! (see `build.rs` and `proto/README.md`).
#![allow(missing_docs, clippy::all, clippy::pedantic)]

include!(concat!(env!("OUT_DIR"), "/onnx.rs"));
