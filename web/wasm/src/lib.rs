//! The web app's engine: `copains-client-core` with its browser bindings, built as the one
//! WebAssembly module the page loads (`scripts/build-web`).

pub use copains_client_core::wasm::Engine;
