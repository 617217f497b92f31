//! Attack guarded against: a container printing anything at all (binary,
//! no newlines, fake timestamps, TTY prefixes), turned into Docker log
//! records and assembled into lines. Nothing may panic, no line may exceed
//! `LINE_MAX_BYTES` of input (each invalid byte may become one 3-byte
//! replacement character), and no line holds a newline.

#![no_main]

use bytes::Bytes;
use dockwire::feed::LogStream;
use dockwire::feed::docker::lines::{Assembler, LINE_MAX_BYTES, Record};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut asm = Assembler::default();
    let mut out = Vec::new();
    // Records are cut at 0xff bytes; the first byte of each picks its stream.
    for chunk in data.split(|b| *b == 0xff) {
        let Some((&sel, rest)) = chunk.split_first() else {
            continue;
        };
        let stream = [LogStream::Stdout, LogStream::Stderr, LogStream::Console][sel as usize % 3];
        let rec = Record::parse(stream, Bytes::copy_from_slice(rest));
        asm.push(&rec, &mut |l| out.push(l));
    }
    asm.flush(&mut |l| out.push(l));
    for l in &out {
        assert!(l.text.len() <= 3 * LINE_MAX_BYTES, "a line past the cap");
        assert!(!l.text.contains('\n'), "a line holds a newline");
    }
});
