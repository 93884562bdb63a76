#![no_main]

// The renegotiation answer goes to a PC that took a Chromium join offer.
const OFFER: &str = include_str!("../seeds/sdp_offer/chromium-mic-camera-screen.sdp");

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    copains_sfu::fuzz::sdp_answer(OFFER, data);
});
