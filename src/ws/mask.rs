//! XOR masking of frame payloads (RFC 6455 §5.3).
//!
//! Client payloads arrive in pieces, so masking must resume mid-key: the caller keeps the
//! position in the 4-byte key that the next byte uses, and [`apply_mask`] returns the new
//! one. The bulk runs 8 bytes at a time as `u64` XORs, which the compiler vectorizes.

/// XORs `data` with `mask`, starting at key position `offset` (taken mod 4).
/// Returns the key position for the byte after `data`. Masking twice restores the input.
pub fn apply_mask(data: &mut [u8], mask: [u8; 4], offset: usize) -> usize {
    let mut key = mask;
    key.rotate_left(offset & 3);
    // Chunks start at multiples of 8 from `data[0]`, a multiple of 4, so each chunk sees
    // the rotated key in the same phase and one u64 covers it twice.
    let wide = u64::from_ne_bytes([
        key[0], key[1], key[2], key[3], key[0], key[1], key[2], key[3],
    ]);
    let (chunks, rest) = data.as_chunks_mut::<8>();
    for chunk in chunks {
        *chunk = (u64::from_ne_bytes(*chunk) ^ wide).to_ne_bytes();
    }
    for (byte, k) in rest.iter_mut().zip(key.iter().cycle()) {
        *byte ^= k;
    }
    (offset + data.len()) & 3
}

#[cfg(test)]
mod tests {
    use super::apply_mask;

    fn naive(data: &mut [u8], mask: [u8; 4], offset: usize) {
        for (i, b) in data.iter_mut().enumerate() {
            *b ^= mask[(offset + i) % 4];
        }
    }

    #[test]
    fn matches_per_byte_masking_for_every_length_and_offset() {
        let mask = [0x12, 0x9a, 0xfe, 0x01];
        for len in 0..70 {
            for offset in 0..4 {
                let input: Vec<u8> = (0..len).map(|i| (i * 37 + 11) as u8).collect();
                let mut fast = input.clone();
                let mut slow = input.clone();
                let next = apply_mask(&mut fast, mask, offset);
                naive(&mut slow, mask, offset);
                assert_eq!(fast, slow, "len {len} offset {offset}");
                assert_eq!(next, (offset + len) % 4);
            }
        }
    }

    #[test]
    fn masking_in_pieces_equals_masking_at_once() {
        let mask = [0xde, 0xad, 0xbe, 0xef];
        let input: Vec<u8> = (0..1000u32).map(|i| (i % 251) as u8).collect();
        let mut whole = input.clone();
        apply_mask(&mut whole, mask, 0);
        for split in [1usize, 3, 5, 8, 13, 64] {
            let mut pieces = input.clone();
            let mut pos = 0;
            for piece in pieces.chunks_mut(split) {
                pos = apply_mask(piece, mask, pos);
            }
            assert_eq!(pieces, whole, "piece size {split}");
        }
        apply_mask(&mut whole, mask, 0);
        assert_eq!(whole, input);
    }
}
