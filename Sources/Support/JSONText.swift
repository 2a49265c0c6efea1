/// Strings written into JSON and strings shown quoted in messages and labels: the one escaper.
///
/// The escapes are JSON's, as Python's `json.dumps` writes them: `\"`, `\\`, `\n`, `\r`, `\t`,
/// `\b`, `\f`, and `\u00XX` for the other control characters (and DEL). A JSON literal also
/// writes every character outside printable ASCII as `\uXXXX` (UTF-16 units; `ensure_ascii`), so
/// that generated files match Python's byte for byte; display keeps them as they are.
public enum JSONText {
    /// A JSON string literal for `s`, as `json.dumps(s)` writes it.
    public static func literal(_ s: String) -> String { "\"" + escaped(s, asciiOnly: true) + "\"" }

    /// `s` in double quotes with its line breaks, tabs, other control characters, quotes and
    /// backslashes visible (`"\n"` for a newline token), for messages and printed tables.
    public static func quoted(_ s: String) -> String { "\"" + escaped(s) + "\"" }

    /// `s` with JSON's escapes, without the surrounding quotes; with `asciiOnly` also every
    /// character outside printable ASCII escaped.
    public static func escaped(_ s: String, asciiOnly: Bool = false) -> String {
        var out = ""
        out.reserveCapacity(s.utf8.count + 2)
        func unicodeEscape(_ unit: UInt16) {
            let hex = String(unit, radix: 16)
            out += "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
        }
        for scalar in s.unicodeScalars {
            switch scalar.value {
            case 0x22: out += "\\\""
            case 0x5C: out += "\\\\"
            case 0x0A: out += "\\n"
            case 0x0D: out += "\\r"
            case 0x09: out += "\\t"
            case 0x08: out += "\\b"
            case 0x0C: out += "\\f"
            case 0x20..<0x7F: out.unicodeScalars.append(scalar)
            case 0..<0x20, 0x7F: unicodeEscape(UInt16(scalar.value))
            default:
                if asciiOnly { for unit in String(scalar).utf16 { unicodeEscape(unit) } } else { out.unicodeScalars.append(scalar) }
            }
        }
        return out
    }
}
