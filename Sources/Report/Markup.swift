import Foundation

/// Text into HTML and SVG: the one escaper of the report, and its number formats.
enum Markup {
    /// `s` safe as element text and as a quoted attribute value in HTML and XML: `& < > " '`
    /// become entities, and characters XML 1.0 forbids (C0 controls other than tab, newline and
    /// carriage return) become U+FFFD, so that every SVG of the report parses as XML.
    static func escape(_ s: String) -> String {
        var out = ""
        out.reserveCapacity(s.utf8.count)
        for scalar in s.unicodeScalars {
            switch scalar {
            case "&": out += "&amp;"
            case "<": out += "&lt;"
            case ">": out += "&gt;"
            case "\"": out += "&quot;"
            case "'": out += "&#39;"
            case "\t", "\n", "\r": out.unicodeScalars.append(scalar)
            default:
                if scalar.value < 0x20 || (0xFFFE...0xFFFF).contains(scalar.value) || (0xD800...0xDFFF).contains(scalar.value) {
                    out += "\u{FFFD}"
                } else {
                    out.unicodeScalars.append(scalar)
                }
            }
        }
        return out
    }

    /// A coordinate: at most two decimals, no trailing zeros (`12`, `12.5`, `-0.25`).
    static func coordinate(_ v: Double) -> String {
        guard v.isFinite else { return "0" }
        var s = String(format: "%.2f", v)
        while s.hasSuffix("0") { s.removeLast() }
        if s.hasSuffix(".") { s.removeLast() }
        return s == "-0" ? "0" : s
    }

    /// A value for tables and tooltips: four significant digits (`3.101`, `12.35`, `1.2e-13`),
    /// `–` when undefined.
    static func number(_ v: Double, digits: Int = 4) -> String {
        guard v.isFinite else { return v.isNaN ? "–" : (v > 0 ? "∞" : "−∞") }
        if v == 0 { return "0" }
        return String(format: "%.\(digits)g", v)
    }

    /// A value with a fixed number of decimals (`49.12`), `–` when undefined.
    static func fixed(_ v: Double, _ decimals: Int) -> String {
        guard v.isFinite else { return v.isNaN ? "–" : (v > 0 ? "∞" : "−∞") }
        let s = String(format: "%.\(decimals)f", v)
        return Double(s) == 0 ? String(format: "%.\(decimals)f", 0.0) : s
    }

    /// An integer with thousands separators (`69,120`).
    static func count(_ n: Int) -> String {
        let digits = String(abs(n))
        var out = ""
        for (i, c) in digits.enumerated() {
            if i > 0 && (digits.count - i) % 3 == 0 { out += "," }
            out.append(c)
        }
        return n < 0 ? "-" + out : out
    }
}

/// One format for every number of a table, so that a column's decimal points line up and no
/// row reads in another notation than the next: a fixed number of decimals (at least
/// `minDecimals`, as many as the smallest nonzero value needs for two significant digits, at
/// most 4), or, when a
/// nonzero value would read as 0 with 4 decimals (the LN-free model's NMAE of 8e-13 %),
/// scientific notation with three significant digits for all of them.
struct NumberFormat: Equatable {
    /// Decimals of the fixed format; nil: scientific.
    let decimals: Int?

    init(decimals: Int?) {
        self.decimals = decimals
    }

    init(for values: [Double], minDecimals: Int = 2) {
        let smallest = values.filter { $0.isFinite && $0 != 0 }.map(abs).min()
        guard let smallest else {
            decimals = 2
            return
        }
        if smallest < 0.5e-4 {
            decimals = nil
        } else {
            // Two significant digits of `smallest`: its first digit is at 10^floor(log10).
            let needed = 1 - Int(log10(smallest).rounded(.down))
            decimals = min(4, max(minDecimals, needed))
        }
    }

    func callAsFunction(_ v: Double) -> String {
        guard v.isFinite else { return Markup.number(v) }
        guard let decimals else { return String(format: "%.2e", v) }
        return Markup.fixed(v, decimals)
    }
}
