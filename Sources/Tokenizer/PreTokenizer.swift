// Stage 2 of GPT-2 tokenization: splitting text into pieces that BPE never merges across.
//
// GPT-2 splits with the regex (openai/gpt-2 `src/encoder.py`)
//     's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
// This is a hand-written scanner over unicode scalars that reproduces the regex's leftmost,
// first-alternative-wins behaviour exactly, without a regex engine: `\s` is the Unicode White_Space
// property, `\p{L}` and `\p{N}` the general categories L* and N*, and the optional prefix is the
// ASCII space only. Contractions are case-sensitive ("'S" is not one), as in the original regex.

/// The four character classes the GPT-2 pattern distinguishes.
enum ScalarClass: UInt8 {
    case letter, number, whitespace, other

    init(_ scalar: Unicode.Scalar) {
        let value = scalar.value
        if value < 0x80 {
            switch value {
            case 0x41...0x5A, 0x61...0x7A: self = .letter
            case 0x30...0x39: self = .number
            case 0x09...0x0D, 0x20: self = .whitespace
            default: self = .other
            }
            return
        }
        if scalar.properties.isWhitespace {
            self = .whitespace
            return
        }
        switch scalar.properties.generalCategory {
        case .uppercaseLetter, .lowercaseLetter, .titlecaseLetter, .modifierLetter, .otherLetter:
            self = .letter
        case .decimalNumber, .letterNumber, .otherNumber:
            self = .number
        default:
            self = .other
        }
    }
}

/// GPT-2's pre-tokenizer.
enum PreTokenizer {
    /// Calls `body` with the index range of each piece of `scalars[range]`, in order. The pieces
    /// tile the range exactly. `range` is treated as the whole string (the end of the range is
    /// the end of input for the `\s+(?!\S)` lookahead).
    static func forEachPiece(
        in scalars: [Unicode.Scalar], classes: [ScalarClass], range: Range<Int>,
        _ body: (Range<Int>) -> Void
    ) {
        let end = range.upperBound
        var i = range.lowerBound
        while i < end {
            let length = pieceLength(scalars, classes, at: i, end: end)
            body(i..<(i + length))
            i += length
        }
    }

    /// Pieces of a string, as strings (for tests and debugging).
    static func pieces(of text: String) -> [String] {
        let scalars = Array(text.unicodeScalars)
        let classes = scalars.map(ScalarClass.init)
        var result: [String] = []
        forEachPiece(in: scalars, classes: classes, range: 0..<scalars.count) { piece in
            var view = String.UnicodeScalarView()
            view.append(contentsOf: scalars[piece])
            result.append(String(view))
        }
        return result
    }

    /// Length of the regex match that starts at `i` (always ≥ 1 since every scalar falls in
    /// some alternative).
    private static func pieceLength(
        _ s: [Unicode.Scalar], _ c: [ScalarClass], at i: Int, end: Int
    ) -> Int {
        // 's|'t|'re|'ve|'m|'ll|'d
        if s[i] == "'" && i + 1 < end {
            switch s[i + 1] {
            case "s", "t", "m", "d": return 2
            case "r", "v", "l":
                if i + 2 < end {
                    let pair = (s[i + 1], s[i + 2])
                    if pair == ("r", "e") || pair == ("v", "e") || pair == ("l", "l") { return 3 }
                }
            default: break
            }
        }
        // ` ?\p{L}+`, ` ?\p{N}+`, ` ?[^\s\p{L}\p{N}]+`: an optional ASCII space, then a run of one class.
        var start = i
        if s[i] == " " && i + 1 < end && c[i + 1] != .whitespace { start = i + 1 }
        let cls = c[start]
        if cls != .whitespace {
            var j = start + 1
            while j < end && c[j] == cls { j += 1 }
            return j - i
        }
        // `\s+(?!\S)`: a whitespace run that reaches the end, or all of it but its last character
        // (which then starts the next piece); otherwise `\s+` with a single character.
        var j = i + 1
        while j < end && c[j] == .whitespace { j += 1 }
        if j == end { return j - i }
        return j - i >= 2 ? j - i - 1 : 1
    }
}
