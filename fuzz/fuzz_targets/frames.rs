//! Fuzz target for the proxy's wire framing (`warden_pgwire::frame`) and the message readers
//! it feeds (`warden_pgwire::message`): arbitrary bytes, split at arbitrary points, must never
//! panic, never loop, and never report more bytes consumed than were given.
//!
//! Run: `cargo +nightly fuzz run frames -- -max_total_time=60` from the repository root.
#![no_main]

use libfuzzer_sys::fuzz_target;
use warden_pgwire::frame::{self, Item, Look, Scanner};
use warden_pgwire::message;

fuzz_target!(|data: &[u8]| {
    let Some((&split_seed, data)) = data.split_first() else { return };

    // Startup packets.
    if let Ok(Some((_, len))) = frame::startup(data) {
        assert!(len <= data.len());
    }

    // Typed messages fed in two pieces, as they might arrive from a socket.
    let split = if data.is_empty() { 0 } else { split_seed as usize % (data.len() + 1) };
    let inspect = |t: u8| match t {
        b'Q' | b'P' | b'Z' | b'C' | b'E' => Look::Whole,
        b'B' => Look::Head(16),
        _ => Look::Pass,
    };
    let mut scanner = Scanner::new(1 << 16);
    let mut buf: Vec<u8> = data[..split].to_vec();
    let mut rest = &data[split..];
    let mut steps = 0usize;
    loop {
        steps += 1;
        assert!(steps < 1_000_000, "scanner does not make progress");
        match scanner.next(&buf, inspect) {
            Ok(Item::Pass(n)) => {
                assert!(n > 0 && n <= buf.len());
                buf.drain(..n);
            }
            Ok(Item::Head { head, pass, .. }) => {
                assert!(pass > 0 && pass <= buf.len() && head.len() <= 16);
                drop(message::bind_names(head));
                buf.drain(..pass);
            }
            Ok(Item::Frame { tag, body, len }) => {
                assert!(len <= buf.len() && body.len() + 5 == len);
                match tag {
                    b'Q' => drop(message::query_text(body)),
                    b'P' => drop(message::parse_text(body)),
                    b'E' => {
                        drop(message::error_fields(body));
                        drop(message::bind_params(body));
                        drop(message::target(body));
                        drop(message::execute_portal(body));
                    }
                    b'C' => drop(message::command_tag(body)),
                    _ => drop(message::error_fields(body)),
                }
                buf.drain(..len);
            }
            Ok(Item::NeedMore { .. }) => {
                if rest.is_empty() {
                    break;
                }
                buf.extend_from_slice(rest);
                rest = &[];
            }
            Err(_) => break,
        }
    }
});
