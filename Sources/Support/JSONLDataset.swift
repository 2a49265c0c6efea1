import Foundation

/// A JSON Lines dataset (`--dataset FILE.jsonl --field NAME`): one document per line, each a JSON
/// object whose `field` is its text (a string, to be tokenized) or its token ids already (an array
/// of integers ≥ 0, as the Pile subsets pre-tokenized for GPT-2 store `input_ids`). Blank lines
/// are skipped; a byte-order mark is ignored; lines count from 1 in messages.
public struct JSONLDataset: Sendable {
    /// One row's `field`.
    public enum Value: Equatable, Sendable {
        case text(String)
        case tokens([Int])
    }

    public struct Row: Equatable, Sendable {
        /// The line of the file it is on (from 1).
        public var line: Int
        public var value: Value
        public init(line: Int, value: Value) { (self.line, self.value) = (line, value) }
    }

    /// The path as given (in messages).
    public var path: String
    public var field: String
    public var rows: [Row]
    /// SHA-256 of the file's bytes, lowercase hex.
    public var contentHash: String

    /// Reads the first `limit` rows (nil: all) of the file at `url`.
    public static func load(_ url: URL, field: String, limit: Int? = nil) throws(DataFileError) -> JSONLDataset {
        let path = url.relativePath
        let data: Data
        do { data = try Files.read(url) } catch { throw .unreadable(file: path, reason: error.description) }
        return try parse(data, path: path, field: field, limit: limit)
    }

    /// As `load`, from bytes in memory.
    public static func parse(_ data: Data, path: String, field: String, limit: Int? = nil) throws(DataFileError) -> JSONLDataset {
        guard !data.isEmpty else { throw .empty(file: path) }
        var rows: [Row] = []
        var bytes = data[...]
        if bytes.starts(with: [0xEF, 0xBB, 0xBF]) { bytes = bytes.dropFirst(3) }
        var line = 0
        while !bytes.isEmpty, rows.count < (limit ?? .max) {
            line += 1
            let end = bytes.firstIndex(of: 0x0A) ?? bytes.endIndex
            var text = bytes[bytes.startIndex..<end]
            bytes = end < bytes.endIndex ? bytes[(end + 1)...] : bytes[end...]
            if text.last == 0x0D { text = text.dropLast() }
            if text.allSatisfy({ $0 == 0x20 || $0 == 0x09 }) { continue }
            rows.append(Row(line: line, value: try value(of: Data(text), field: field, path: path, line: line)))
        }
        guard !rows.isEmpty else { throw .noRows(file: path) }
        return JSONLDataset(path: path, field: field, rows: rows, contentHash: SHA256.hex(data))
    }

    /// The token ids of each row: text rows through `encode` (all texts at once, in row order;
    /// token rows pass ""), token rows as stored, every id of theirs checked against the model's
    /// `vocabSize` (an error names the line and index).
    public func tokenIDs(vocabSize: Int, encode: ([String]) -> [[Int]]) throws(DataFileError) -> [[Int]] {
        let encoded = encode(rows.map { row in
            if case .text(let t) = row.value { return t }
            return ""
        })
        var out: [[Int]] = []
        out.reserveCapacity(rows.count)
        for (row, tokens) in zip(rows, encoded) {
            guard case .tokens(let ids) = row.value else { out.append(tokens); continue }
            if let i = ids.firstIndex(where: { $0 >= vocabSize }) {
                throw .badRow(file: path, line: row.line,
                              problem: "\(JSONText.quoted(field))[\(i)] is \(ids[i]), but the model's token ids are 0…\(vocabSize - 1)")
            }
            out.append(ids)
        }
        return out
    }

    /// The `field` of one line's object, or why there is none.
    static func value(of line: Data, field: String, path: String, line number: Int) throws(DataFileError) -> Value {
        func bad(_ problem: String) -> DataFileError { .badRow(file: path, line: number, problem: problem) }
        guard let object = try? JSONSerialization.jsonObject(with: line, options: [.fragmentsAllowed]) else {
            throw bad("not valid JSON (starts with \(JSONText.quoted(String(decoding: line.prefix(40), as: UTF8.self))))")
        }
        guard let dict = object as? [String: Any] else {
            throw bad("\(JSONKind(object).shown) is not a JSON object; each line must be one object such as {\"\(field)\": \"…\"}")
        }
        guard let found = dict[field] else {
            let keys = dict.keys.sorted().prefix(8).map { JSONText.quoted($0) }.joined(separator: ", ")
            throw bad("the row has no \(JSONText.quoted(field)) (its keys: \(keys.isEmpty ? "none" : keys)); name the text's key with --field")
        }
        if let text = found as? String { return .text(text) }
        if let items = found as? [Any] {
            var ids: [Int] = []
            ids.reserveCapacity(items.count)
            for (i, item) in items.enumerated() {
                guard case .integer(let id) = JSONKind(item), id >= 0 else {
                    throw bad("\(JSONText.quoted(field))[\(i)] is \(JSONKind(item).shown), not a token id (an integer ≥ 0)")
                }
                ids.append(id)
            }
            return .tokens(ids)
        }
        throw bad("\(JSONText.quoted(field)) is \(JSONKind(found).shown); give a string (text) or an array of token ids")
    }
}
