import Foundation

/// The integer type of the ids in a token file: nanoGPT's `.bin` holds `u16` (or `u32` for
/// vocabularies past 65,536); an `.npy` may also hold `i32` or `i64` (torch's and numpy's
/// default integer types).
public enum TokenDType: String, CaseIterable, Codable, Sendable {
    case u16, u32, i32, i64

    public var byteSize: Int {
        switch self {
        case .u16: 2
        case .u32, .i32: 4
        case .i64: 8
        }
    }

    /// numpy's `descr` of the type, little-endian.
    public var npyDescr: String {
        switch self {
        case .u16: "<u2"
        case .u32: "<u4"
        case .i32: "<i4"
        case .i64: "<i8"
        }
    }

    public init?(npyDescr: String) {
        guard let t = Self.allCases.first(where: { $0.npyDescr == npyDescr }) else { return nil }
        self = t
    }

    /// The types a headerless `.bin` may hold (`--token-dtype`).
    public static let binTypes: [TokenDType] = [.u16, .u32]
}

/// The header of a NumPy `.npy` file holding token ids, format versions 1.0, 2.0 and 3.0 as
/// numpy's `lib/format.py` writes them: the magic `\x93NUMPY`, the version, the header's length
/// (2 bytes little-endian in 1.0, 4 in 2.0 and 3.0), then a Python dictionary literal with exactly
/// the keys `descr`, `fortran_order` and `shape`, padded with spaces and ended by a newline
/// (ASCII; UTF-8 in 3.0). Read strictly: a 1-D array in C order of '<u2', '<u4', '<i4' or '<i8',
/// and exactly its bytes after the header; anything else is an error saying what.
public struct NpyHeader: Equatable, Sendable {
    /// The format's major version (1, 2 or 3; the minor is always 0).
    public var version: Int
    public var dtype: TokenDType
    /// Ids in the array (its one dimension).
    public var count: Int
    /// Byte offset of the first id.
    public var dataOffset: Int

    public static let magic: [UInt8] = [0x93, 0x4E, 0x55, 0x4D, 0x50, 0x59]
    /// numpy's own limit on the header's length (`_MAX_HEADER_SIZE`).
    public static let maxHeaderLength = 10_000

    /// Reads the header at the start of `bytes` (a whole file) and checks that exactly `count`
    /// ids follow it; `file` names it in errors.
    public static func parse(_ bytes: UnsafeRawBufferPointer, file: String) throws(DataFileError) -> NpyHeader {
        func bad(_ problem: String) -> DataFileError { .malformed(file: file, problem: problem) }
        guard !bytes.isEmpty else { throw .empty(file: file) }
        guard bytes.count >= 8, Array(bytes[0..<6]) == magic else {
            throw bad("not a .npy file (it does not start with numpy's magic \\x93NUMPY)")
        }
        let (major, minor) = (Int(bytes[6]), Int(bytes[7]))
        guard (1...3).contains(major), minor == 0 else {
            throw bad("npy format version \(major).\(minor) is not supported (1.0, 2.0 and 3.0 are)")
        }
        let lengthBytes = major == 1 ? 2 : 4
        guard bytes.count >= 8 + lengthBytes else { throw bad("truncated: the file ends inside the header") }
        let length = (0..<lengthBytes).reduce(0) { $0 | Int(bytes[8 + $1]) << (8 * $1) }
        guard length <= maxHeaderLength else {
            throw bad("the header is \(length) bytes, more than numpy's limit of \(maxHeaderLength)")
        }
        let start = 8 + lengthBytes
        guard bytes.count >= start + length else {
            throw bad("truncated: the header is \(length) bytes but the file ends after \(bytes.count - start)")
        }
        let raw = Array(bytes[start..<start + length])
        guard major == 3 || raw.allSatisfy({ $0 < 0x80 }) else { throw bad("the header is not ASCII (only version 3.0 allows UTF-8)") }
        guard let text = String(validating: raw, as: UTF8.self) else { throw bad("the header is not UTF-8 text") }
        let fields = try parseDictionary(text, file: file)
        let (dtype, count) = try check(fields, file: file)
        let (dataBytes, overflow) = count.multipliedReportingOverflow(by: dtype.byteSize)
        let following = bytes.count - start - length
        guard !overflow, dataBytes <= following else {
            throw bad("truncated: the header says \(count) ids (\(overflow ? "too many" : "\(dataBytes)") bytes) but \(following) bytes follow it")
        }
        guard dataBytes == following else {
            throw bad("the header says \(count) ids (\(dataBytes) bytes) but \(following) bytes follow it: the file has extra bytes after the array")
        }
        return NpyHeader(version: major, dtype: dtype, count: count, dataOffset: start + length)
    }

    /// A header value: a string, a boolean or a tuple of non-negative integers.
    enum Value: Equatable {
        case string(String), bool(Bool), tuple([Int])
    }

    /// The type and length the three keys describe, or why they describe no token array.
    static func check(_ fields: [String: Value], file: String) throws(DataFileError) -> (TokenDType, Int) {
        func bad(_ problem: String) -> DataFileError { .malformed(file: file, problem: problem) }
        let keys = fields.keys.sorted()
        guard keys == ["descr", "fortran_order", "shape"] else {
            throw bad("the header's keys are \(keys.joined(separator: ", ")); numpy writes exactly descr, fortran_order and shape")
        }
        guard case .string(let descr)? = fields["descr"] else { throw bad("descr is not a string: a structured dtype is not token ids") }
        guard let dtype = TokenDType(npyDescr: descr) else {
            throw bad("dtype '\(descr)' is not supported: token ids must be '<u2', '<u4', '<i4' or '<i8' (little-endian integers)")
        }
        guard case .bool(let fortran)? = fields["fortran_order"] else { throw bad("fortran_order is not True or False") }
        guard !fortran else {
            throw bad("fortran_order is True: save the ids in C order (np.save(path, np.ascontiguousarray(ids)))")
        }
        guard case .tuple(let shape)? = fields["shape"] else { throw bad("shape is not a tuple of integers") }
        guard shape.count == 1 else {
            let shown = "(" + shape.map(String.init).joined(separator: ", ") + (shape.count == 1 ? ",)" : ")")
            throw bad("shape \(shown) is \(shape.isEmpty ? "a scalar" : "\(shape.count)-D"): token ids must be a 1-D array (np.save(path, ids.reshape(-1)))")
        }
        guard shape[0] > 0 else { throw bad("shape (0,) holds no token ids") }
        return (dtype, shape[0])
    }

    /// The dictionary literal of a header: `{'key': value, …}` then spaces and one newline, values
    /// as numpy writes them ('…' or "…" strings without escapes, True, False, tuples of decimal
    /// integers with a comma after a single element). Anything else is an error naming the byte.
    static func parseDictionary(_ text: String, file: String) throws(DataFileError) -> [String: Value] {
        var p = LiteralScanner(Array(text.unicodeScalars))
        var fields: [String: Value] = [:]
        func bad(_ what: String) -> DataFileError {
            .malformed(file: file, problem: "the header is not numpy's {'descr': …, 'fortran_order': …, 'shape': …} dictionary: \(what) at character \(p.index)")
        }
        guard p.take("{") else { throw bad("no '{'") }
        while !p.take("}") {
            guard let key = p.string() else { throw bad("a key that is not a quoted string") }
            guard p.take(":") else { throw bad("no ':' after '\(key)'") }
            guard let value = p.value() else { throw bad("a value that is not a string, True, False or a tuple of integers") }
            guard fields.updateValue(value, forKey: key) == nil else { throw bad("the key '\(key)' twice") }
            if !p.take(",") {
                guard p.take("}") else { throw bad("no ',' or '}' after '\(key)'") }
                break
            }
        }
        p.skipSpaces()
        guard p.take("\n", skippingSpaces: false), p.atEnd else { throw bad("no newline right after the dictionary and its padding") }
        return fields
    }
}

/// Reads the few Python literals an .npy header holds, one character at a time.
struct LiteralScanner {
    let chars: [Unicode.Scalar]
    var index = 0
    init(_ chars: [Unicode.Scalar]) { self.chars = chars }

    var atEnd: Bool { index == chars.count }

    mutating func skipSpaces() {
        while index < chars.count, chars[index] == " " || chars[index] == "\t" { index += 1 }
    }

    /// Consumes `c` (after spaces, unless `skippingSpaces` is false) when it is next.
    mutating func take(_ c: Unicode.Scalar, skippingSpaces: Bool = true) -> Bool {
        if skippingSpaces { skipSpaces() }
        guard index < chars.count, chars[index] == c else { return false }
        index += 1
        return true
    }

    /// A quoted string without escapes.
    mutating func string() -> String? {
        skipSpaces()
        guard index < chars.count, chars[index] == "'" || chars[index] == "\"" else { return nil }
        let quote = chars[index]
        guard let end = chars[(index + 1)...].firstIndex(of: quote) else { return nil }
        let body = chars[(index + 1)..<end]
        guard !body.contains("\\"), !body.contains("\n") else { return nil }
        index = end + 1
        var s = String.UnicodeScalarView()
        s.append(contentsOf: body)
        return String(s)
    }

    mutating func value() -> NpyHeader.Value? {
        if let s = string() { return .string(s) }
        if word("True") { return .bool(true) }
        if word("False") { return .bool(false) }
        guard take("(") else { return nil }
        var items: [Int] = []
        while !take(")") {
            guard let n = integer() else { return nil }
            items.append(n)
            if !take(",") {
                // `(3)` is the number 3 in Python, not a tuple.
                guard items.count > 1, take(")") else { return nil }
                break
            }
        }
        return .tuple(items)
    }

    mutating func word(_ w: String) -> Bool {
        skipSpaces()
        let scalars = Array(w.unicodeScalars)
        guard chars.count - index >= scalars.count, Array(chars[index..<index + scalars.count]) == scalars else { return false }
        index += scalars.count
        return true
    }

    /// A decimal integer ≥ 0 that fits an Int.
    mutating func integer() -> Int? {
        skipSpaces()
        var n = 0, digits = 0
        while index < chars.count, ("0"..."9").contains(chars[index]) {
            let (m, o1) = n.multipliedReportingOverflow(by: 10)
            let (s, o2) = m.addingReportingOverflow(Int(chars[index].value) - 48)
            guard !o1, !o2 else { return nil }
            (n, digits, index) = (s, digits + 1, index + 1)
        }
        return digits > 0 ? n : nil
    }
}
