//! SMS segment counting (GSM 03.38 / 3GPP TS 23.038), shown to the agent before sending.
//!
//! A text that fits the GSM-7 alphabet is sent in septets: 160 in a single message, 153 per part of a
//! concatenated one (the user data header takes 7), and extension-table characters (`^{}\[~]|€` and form feed)
//! take two septets that are never split across parts. Anything else is sent in UCS-2: 70 UTF-16 code units in a
//! single message, 67 per part, and a surrogate pair is never split.

/// The encoding a text is sent in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// The GSM 7-bit default alphabet with its extension table.
    Gsm7,
    /// UCS-2 (UTF-16 code units).
    Ucs2,
}

/// How a text will be split.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentInfo {
    /// The encoding.
    pub encoding: Encoding,
    /// Septets (GSM-7) or UTF-16 code units (UCS-2).
    pub units: usize,
    /// Number of SMS parts (an empty text still costs one).
    pub segments: usize,
    /// Units still free in the last part before another part is needed.
    pub remaining_in_segment: usize,
}

const BASIC: &str = "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞ\u{1b}ÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?\
¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà";
const EXTENSION: &str = "^{}\\[~]|€\u{0c}";

/// Septets `c` takes in GSM-7 (1 basic, 2 extension), or `None` when it needs UCS-2.
pub fn gsm7_septets(c: char) -> Option<usize> {
    if c != '\u{1b}' && BASIC.contains(c) {
        Some(1)
    } else if EXTENSION.contains(c) {
        Some(2)
    } else {
        None
    }
}

/// Whether the whole text fits the GSM-7 alphabet.
pub fn is_gsm7(text: &str) -> bool {
    text.chars().all(|c| gsm7_septets(c).is_some())
}

/// Packs units greedily into parts of `part` without splitting any character.
fn pack(widths: impl Iterator<Item = usize>, single: usize, part: usize) -> (usize, usize, usize) {
    let widths: Vec<usize> = widths.collect();
    let units: usize = widths.iter().sum();
    if units <= single {
        return (units, 1, single - units);
    }
    let mut segments = 1;
    let mut used = 0;
    for w in widths {
        if used + w > part {
            segments += 1;
            used = 0;
        }
        used += w;
    }
    (units, segments, part - used)
}

/// Counts the parts `text` will be sent in.
pub fn count(text: &str) -> SegmentInfo {
    if is_gsm7(text) {
        let (units, segments, remaining) = pack(text.chars().map(|c| gsm7_septets(c).unwrap_or(2)), 160, 153);
        SegmentInfo {
            encoding: Encoding::Gsm7,
            units,
            segments,
            remaining_in_segment: remaining,
        }
    } else {
        let (units, segments, remaining) = pack(text.chars().map(char::len_utf16), 70, 67);
        SegmentInfo {
            encoding: Encoding::Ucs2,
            units,
            segments,
            remaining_in_segment: remaining,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn gsm7_boundaries_160_and_153() {
        assert_eq!(count(&"a".repeat(160)).segments, 1);
        assert_eq!(count(&"a".repeat(161)).segments, 2);
        assert_eq!(count(&"a".repeat(306)).segments, 2);
        assert_eq!(count(&"a".repeat(307)).segments, 3);
        let info = count(&"a".repeat(150));
        assert_eq!(
            (info.encoding, info.units, info.remaining_in_segment),
            (Encoding::Gsm7, 150, 10)
        );
        assert_eq!(count("").segments, 1);
    }

    #[test]
    fn extension_characters_take_two_septets_and_are_not_split() {
        assert_eq!(count("€").units, 2);
        assert_eq!(count(&"€".repeat(80)).segments, 1);
        assert_eq!(count(&"€".repeat(81)).segments, 2);
        // 152 septets then an escape pair: the pair moves to part 2 instead of straddling.
        let text = format!("{}{}{}", "a".repeat(152), "{", "a".repeat(10));
        let info = count(&text);
        assert_eq!(info.units, 164);
        assert_eq!(info.segments, 2);
        assert_eq!(info.remaining_in_segment, 153 - 12);
        assert!(is_gsm7("Hello @ £5 {ok} ÄÖÜ\n"));
        assert!(!is_gsm7("\u{1b}"));
    }

    #[test]
    fn ucs2_boundaries_70_and_67_with_surrogate_pairs() {
        assert_eq!(count(&"谢".repeat(70)).segments, 1);
        assert_eq!(count(&"谢".repeat(71)).segments, 2);
        assert_eq!(count(&"谢".repeat(134)).segments, 2);
        assert_eq!(count(&"谢".repeat(135)).segments, 3);
        assert_eq!(count("😀").units, 2);
        assert_eq!(count(&"😀".repeat(35)).segments, 1);
        // 66 units then a surrogate pair: the pair is not split.
        let info = count(&format!("{}😀{}", "谢".repeat(66), "谢".repeat(5)));
        assert_eq!(
            (info.encoding, info.units, info.segments),
            (Encoding::Ucs2, 73, 2)
        );
        assert_eq!(
            count("abc é ç").encoding,
            Encoding::Ucs2,
            "ç is not in the GSM-7 alphabet (only Ç)"
        );
        assert_eq!(count("a谢").encoding, Encoding::Ucs2);
    }

    proptest! {
        #[test]
        fn segments_are_monotone_when_appending(text in "\\PC{0,400}", extra in "\\PC{1,20}") {
            prop_assert!(count(&(text.clone() + &extra)).segments >= count(&text).segments);
        }

        #[test]
        fn capacity_covers_the_units(text in "[a-z€{}谢😀 ]{0,500}") {
            let info = count(&text);
            let (single, part) = match info.encoding { Encoding::Gsm7 => (160, 153), Encoding::Ucs2 => (70, 67) };
            if info.segments == 1 {
                prop_assert!(info.units <= single);
                prop_assert_eq!(info.remaining_in_segment, single - info.units);
            } else {
                prop_assert!(info.units > single);
                prop_assert!(info.units <= info.segments * part);
                // Greedy packing wastes at most one unit per part boundary.
                prop_assert!(info.units + info.segments > (info.segments - 1) * part);
            }
        }

        #[test]
        fn gsm_text_counts_septets(text in "[A-Za-z0-9 @£$!?.,\\n]{0,300}") {
            let info = count(&text);
            prop_assert_eq!(info.encoding, Encoding::Gsm7);
            prop_assert_eq!(info.units, text.chars().count());
        }
    }
}
