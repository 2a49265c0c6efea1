import Foundation
import Support

/// A generated prompt-file line, before tokenization: the same keys as the JSONL format plus
/// integer metadata (`set`, `template`, ...) that loaders ignore.
public struct PromptRecord: Sendable, Equatable {
    public var prompt: String
    public var answer: String
    public var wrong: String?
    public var corrupt: String?
    /// Written after the standard keys, in sorted key order.
    public var extra: [String: Int]

    public init(prompt: String, answer: String, wrong: String? = nil, corrupt: String? = nil, extra: [String: Int] = [:]) {
        self.prompt = prompt
        self.answer = answer
        self.wrong = wrong
        self.corrupt = corrupt
        self.extra = extra
    }

    /// One JSON line, formatted byte for byte like Python's `json.dumps` (", " and ": "
    /// separators, non-ASCII as \uXXXX), the format of prompts/paper_ioi.jsonl. No newline.
    public var jsonLine: String {
        var fields = [("prompt", JSONText.literal(prompt)), ("answer", JSONText.literal(answer))]
        if let wrong { fields.append(("wrong", JSONText.literal(wrong))) }
        if let corrupt { fields.append(("corrupt", JSONText.literal(corrupt))) }
        for key in extra.keys.sorted() { fields.append((key, String(extra[key]!))) }
        return "{" + fields.map { "\(JSONText.literal($0.0)): \($0.1)" }.joined(separator: ", ") + "}"
    }
}

/// Renders records as JSONL: one `jsonLine` per record, each ended by "\n".
public func renderJSONL(_ records: [PromptRecord]) -> String {
    records.map { $0.jsonLine + "\n" }.joined()
}

/// The generated tasks `lnlens prompts` knows.
public enum PromptTask: String, CaseIterable, Sendable {
    case ioi
    case greaterThan = "greater-than"
    case topic

    /// `n` records for `seed`; the same inputs give the same records on every machine.
    public func generate(n: Int, seed: UInt64, tokenizer: some TextEncoder) throws -> [PromptRecord] {
        switch self {
        case .ioi: try IOIGenerator(seed: seed).generate(n: n, tokenizer: tokenizer)
        case .greaterThan: try GreaterThanGenerator(seed: seed).generate(n: n, tokenizer: tokenizer)
        case .topic: try TopicGenerator(seed: seed).generate(n: n, tokenizer: tokenizer)
        }
    }
}

/// The words of `candidates` that are one token when written with a leading space, in order.
func singleTokenWords(_ candidates: [String], tokenizer: some TextEncoder) -> [String] {
    candidates.filter { tokenizer.encode(" " + $0).count == 1 }
}
