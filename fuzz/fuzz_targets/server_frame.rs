#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    copains_client_core::fuzz::server_frame(data);
});
