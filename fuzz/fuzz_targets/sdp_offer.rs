#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    copains_sfu::fuzz::sdp_offer(data);
});
