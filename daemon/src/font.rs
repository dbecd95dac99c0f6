//! Text for burned-in annotations, rendered in-process from an embedded bitmap font.
//!
//! The appliance has no font files and must not depend on the host having any: glyphs come
//! from the public-domain 8x8 font of the `font8x8` crate (IBM PC BIOS style, ASCII only) and
//! are scaled by pixel replication, which keeps them crisp at PACS viewing sizes.

/// Cell size of one glyph before scaling, pixels.
pub const GLYPH_PX: usize = 8;

/// The 8 rows of a character's bitmap (bit 0 = leftmost pixel); `?` for non-ASCII.
pub fn glyph(c: char) -> [u8; 8] {
    let table = &font8x8::legacy::BASIC_LEGACY;
    let i = if c.is_ascii() {
        c as usize
    } else {
        '?' as usize
    };
    table[i]
}

/// Width in pixels of `text` drawn at `scale`.
pub fn text_width(text: &str, scale: usize) -> usize {
    text.chars().count() * GLYPH_PX * scale
}

/// Height in pixels of one line at `scale`.
pub fn line_height(scale: usize) -> usize {
    GLYPH_PX * scale
}

/// Calls `put(x, y)` for every set pixel of `text` with its top-left corner at (x, y).
/// Coordinates may fall outside the target; the caller clips.
pub fn rasterize(text: &str, x: i64, y: i64, scale: usize, mut put: impl FnMut(i64, i64)) {
    let s = scale.max(1) as i64;
    let cell = GLYPH_PX as i64 * s;
    for (n, c) in text.chars().enumerate() {
        let g = glyph(c);
        let x0 = x + n as i64 * cell;
        for (row, bits) in g.iter().enumerate() {
            for col in 0..8 {
                if bits & (1 << col) != 0 {
                    for dy in 0..s {
                        for dx in 0..s {
                            put(x0 + col as i64 * s + dx, y + row as i64 * s + dy);
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glyphs_are_distinct_and_scaled() {
        assert_eq!(glyph(' '), [0; 8]);
        assert_ne!(glyph('L'), glyph('T'));
        assert_eq!(glyph('é'), glyph('?'));
        let mut n1 = 0;
        rasterize("L1", 0, 0, 1, |_, _| n1 += 1);
        let mut n3 = 0;
        let mut max_x = 0;
        rasterize("L1", 0, 0, 3, |x, _| {
            n3 += 1;
            max_x = max_x.max(x);
        });
        assert!(n1 > 10);
        assert_eq!(n3, 9 * n1);
        assert!(max_x < text_width("L1", 3) as i64);
    }
}
