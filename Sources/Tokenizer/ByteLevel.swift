// Stage 1 of GPT-2 tokenization: the reversible map between bytes and printable characters.
//
// GPT-2's BPE vocabulary is written over 256 printable unicode characters, one per byte, so that
// whitespace and control bytes never appear raw in vocab.json or merges.txt. Reference:
// `bytes_to_unicode` in openai/gpt-2 `src/encoder.py`.

/// The byte ↔ character map of GPT-2's byte-level BPE.
enum ByteLevel {
    /// `characterForByte[b]` is the character that stands for byte `b` in vocab.json and merges.txt.
    static let characterForByte: [Unicode.Scalar] = bytesToUnicode()

    /// Inverse of `characterForByte`, keyed by scalar value.
    static let byteForCharacter: [UInt32: UInt8] = {
        var map: [UInt32: UInt8] = [:]
        for (byte, scalar) in characterForByte.enumerated() { map[scalar.value] = UInt8(byte) }
        return map
    }()

    /// Bytes that are printable Latin-1 map to themselves; the other 68 bytes (controls, space,
    /// DEL, NBSP, soft hyphen) map, in byte order, to U+0100, U+0101, ….
    static func bytesToUnicode() -> [Unicode.Scalar] {
        let printable = Array(UInt32(0x21)...0x7E) + Array(UInt32(0xA1)...0xAC) + Array(UInt32(0xAE)...0xFF)
        let printableSet = Set(printable)
        var result = [Unicode.Scalar](repeating: " ", count: 256)
        var next: UInt32 = 256
        for byte in 0..<UInt32(256) {
            if printableSet.contains(byte) {
                result[Int(byte)] = Unicode.Scalar(byte)!
            } else {
                result[Int(byte)] = Unicode.Scalar(next)!
                next += 1
            }
        }
        return result
    }

    /// The bytes a vocabulary entry stands for, or nil if it contains a character outside the map
    /// (added tokens written in plain text are decoded as their own UTF-8, as Hugging Face does).
    static func bytes(ofToken token: String) -> [UInt8]? {
        var bytes: [UInt8] = []
        bytes.reserveCapacity(token.unicodeScalars.count)
        for scalar in token.unicodeScalars {
            guard let byte = byteForCharacter[scalar.value] else { return nil }
            bytes.append(byte)
        }
        return bytes
    }

    /// The vocabulary spelling of raw bytes (e.g. " the" → "Ġthe").
    static func token(ofBytes bytes: some Sequence<UInt8>) -> String {
        var string = String.UnicodeScalarView()
        for byte in bytes { string.append(characterForByte[Int(byte)]) }
        return String(string)
    }
}
