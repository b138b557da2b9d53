//! The service's integration tests, one binary (one link) for all of them: each module is one
//! area of the service's behaviour.

mod common;

mod abuse;
mod admission;
mod binary;
mod clients;
mod drain;
mod edge;
mod faults;
mod http;
mod in_process;
mod metrics_listener;
mod openai_client;
mod reference;
mod security;
mod seed;
mod service;
mod tokenize;
