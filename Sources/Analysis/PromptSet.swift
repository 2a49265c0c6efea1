import Foundation
import GPT2
import Support

/// The one thing prompt sets need from a tokenizer. `GPT2Tokenizer` conforms
/// (TokenizerConformance.swift); tests may use a small fake.
public protocol TextEncoder {
    func encode(_ text: String) -> [Int]
    /// `<|endoftext|>`, prepended as BOS when asked.
    var endOfTextID: Int { get }
}

/// One valid line of a prompt file, tokenized.
public struct PromptExample: Sendable, Codable, Equatable {
    /// 0-based among the valid lines.
    public var index: Int
    /// 1-based line number in the file.
    public var line: Int
    public var prompt: String
    public var answer: String
    public var wrong: String?
    public var corrupt: String?
    /// The prompt's token ids (with `<|endoftext|>` first if the set was loaded with prependBOS).
    public var tokens: [Int]
    public var answerID: Int
    public var wrongID: Int?
    /// Same length as `tokens`.
    public var corruptTokens: [Int]?

    public init(
        index: Int, line: Int, prompt: String, answer: String, wrong: String?, corrupt: String?,
        tokens: [Int], answerID: Int, wrongID: Int?, corruptTokens: [Int]?
    ) {
        self.index = index
        self.line = line
        self.prompt = prompt
        self.answer = answer
        self.wrong = wrong
        self.corrupt = corrupt
        self.tokens = tokens
        self.answerID = answerID
        self.wrongID = wrongID
        self.corruptTokens = corruptTokens
    }
}

/// A key of a prompt file that lnlens neither reads nor knows as metadata (a typo, usually).
public struct UnknownKey: Sendable, Equatable {
    public var key: String
    /// 1-based line numbers, ascending.
    public var lines: [Int]

    /// One line for stderr: `FILE:LINE: warning: unknown key "wrnog" …`.
    public func warning(path: String) -> String {
        let more = lines.count > 1 ? " (and \(lines.count - 1) more line\(lines.count == 2 ? "" : "s"))" : ""
        return "\(path):\(lines[0]): warning: unknown key \"\(key)\"\(more) is ignored; lnlens reads \(PromptSet.readKeys.joined(separator: ", ")) (metadata: \(PromptSet.metadataKeys.joined(separator: ", ")) or keys starting with _)"
    }
}

/// A line left out by `--skip-invalid`, and why.
public struct SkippedLine: Sendable, Equatable {
    /// 1-based line number in the file.
    public var line: Int
    public var problem: PromptProblem
    public var reason: String { problem.description }
}

/// A JSONL prompt file (DESIGN.md, "Definitions used by the analysis commands"), validated and
/// tokenized: one object per line with string keys `prompt`, `answer` and optionally `wrong`,
/// `corrupt`; blank lines skipped. Other keys are kept out of the analysis: the generators'
/// metadata (`set`, `template`, `year`), `meta` and keys starting with `_` silently, anything
/// else (a misspelt `wrnog`) with a warning naming the line and key.
public struct PromptSet: Sendable {
    /// The path as given (relative paths stay relative, for messages and the results store).
    public var path: String
    /// SHA-256 of the file's bytes, lowercase hex: the same file gives the same hash everywhere.
    public var contentHash: String
    public var examples: [PromptExample]
    public var skipped: [SkippedLine]
    /// Keys that are neither read nor known metadata, each with the lines it occurs on.
    public var unknownKeys: [UnknownKey] = []
    public var prependBOS: Bool

    /// Reads and validates `url`. Without `skipInvalid` the first invalid line throws
    /// `AnalysisError.invalidPrompt` naming the file and line; with it, invalid lines are
    /// recorded in `skipped`. A file without any valid line throws `noValidPrompts`.
    public static func load(
        url: URL, tokenizer: some TextEncoder, skipInvalid: Bool, prependBOS: Bool = false
    ) throws -> PromptSet {
        let path = url.relativePath
        let data: Data
        do {
            data = try Files.read(url)
        } catch {
            throw AnalysisError.promptFileUnreadable(path: path, reason: error.description)
        }
        return try parse(data: data, path: path, tokenizer: tokenizer, skipInvalid: skipInvalid, prependBOS: prependBOS)
    }

    /// As `load`, from bytes already in memory; `path` is only used in messages.
    public static func parse(
        data: Data, path: String, tokenizer: some TextEncoder, skipInvalid: Bool, prependBOS: Bool = false
    ) throws -> PromptSet {
        var examples: [PromptExample] = []
        var skipped: [SkippedLine] = []
        var unknown: [String: [Int]] = [:]
        var bytes = [UInt8](data)
        if bytes.starts(with: [0xEF, 0xBB, 0xBF]) { bytes.removeFirst(3) }

        for (offset, raw) in bytes.split(separator: 0x0A, omittingEmptySubsequences: false).enumerated() {
            let lineNumber = offset + 1
            var lineBytes = raw
            if lineBytes.last == 0x0D { lineBytes = lineBytes.dropLast() }
            if lineBytes.allSatisfy({ $0 == 0x20 || $0 == 0x09 }) { continue }
            switch validate(
                lineBytes: Data(lineBytes), line: lineNumber, index: examples.count,
                tokenizer: tokenizer, prependBOS: prependBOS, unknownKeys: { unknown[$0, default: []].append(lineNumber) })
            {
            case let .success(example):
                examples.append(example)
            case let .failure(problem):
                guard skipInvalid else {
                    throw AnalysisError.invalidPrompt(path: path, line: lineNumber, problem: problem)
                }
                skipped.append(SkippedLine(line: lineNumber, problem: problem))
            }
        }
        if examples.isEmpty { throw AnalysisError.noValidPrompts(path: path, skipped: skipped.count) }
        var set = PromptSet(
            path: path, contentHash: sha256Hex(data), examples: examples, skipped: skipped, prependBOS: prependBOS)
        set.unknownKeys = unknown.map { UnknownKey(key: $0.key, lines: $0.value) }
            .sorted { ($0.lines[0], $0.key) < ($1.lines[0], $1.key) }
        return set
    }

    /// The examples a model with context `nCtx` and vocabulary `dVocab` can run: others are an
    /// error naming the file and line, or (with `skipInvalid`) skipped and counted. Indices are
    /// renumbered among the examples kept.
    public func checked(nCtx: Int, dVocab: Int, skipInvalid: Bool) throws -> PromptSet {
        var out = self
        out.examples = []
        for ex in examples {
            var problem: PromptProblem?
            if ex.tokens.count > nCtx {
                problem = .tooLong(tokens: ex.tokens.count, nCtx: nCtx)
            } else if let bad = (ex.tokens + (ex.corruptTokens ?? []) + [ex.answerID] + (ex.wrongID.map { [$0] } ?? []))
                .first(where: { $0 < 0 || $0 >= dVocab }) {
                problem = .tokenOutsideVocabulary(id: bad, dVocab: dVocab)
            }
            if let problem {
                guard skipInvalid else { throw AnalysisError.invalidPrompt(path: path, line: ex.line, problem: problem) }
                out.skipped.append(SkippedLine(line: ex.line, problem: problem))
                continue
            }
            var kept = ex
            kept.index = out.examples.count
            out.examples.append(kept)
        }
        if out.examples.isEmpty { throw AnalysisError.noValidPrompts(path: path, skipped: out.skipped.count) }
        out.skipped.sort { $0.line < $1.line }
        return out
    }

    /// The examples grouped by token length (ascending), each group cut into batches of at most
    /// `maxBatch` examples in file order: the engine runs equal-length prompts as one batch.
    public func batchesByLength(maxBatch: Int) -> [[PromptExample]] {
        let size = max(1, maxBatch)
        let groups = Dictionary(grouping: examples, by: { $0.tokens.count })
        var batches: [[PromptExample]] = []
        for length in groups.keys.sorted() {
            let group = groups[length]!.sorted { $0.index < $1.index }
            for start in stride(from: 0, to: group.count, by: size) {
                batches.append(Array(group[start..<min(start + size, group.count)]))
            }
        }
        return batches
    }

    /// The keys a line is read for.
    public static let readKeys = ["prompt", "answer", "wrong", "corrupt"]
    /// Keys that carry metadata and are ignored without a warning (besides `_…`).
    public static let metadataKeys = ["set", "template", "year", "sea", "meta"]

    private static func validate(
        lineBytes: Data, line: Int, index: Int, tokenizer: some TextEncoder, prependBOS: Bool,
        unknownKeys: (String) -> Void
    ) -> Result<PromptExample, PromptProblem> {
        let object: Any
        do {
            object = try JSONSerialization.jsonObject(with: lineBytes, options: [])
        } catch {
            let text = String(decoding: lineBytes.prefix(40), as: UTF8.self)
            return .failure(.badJSON(reason: "starts with \(PromptProblem.quoted(text))"))
        }
        guard let dict = object as? [String: Any] else { return .failure(.notAnObject) }
        for key in dict.keys where !readKeys.contains(key) && !metadataKeys.contains(key) && !key.hasPrefix("_") {
            unknownKeys(key)
        }

        func string(_ key: String, required: Bool) -> Result<String?, PromptProblem> {
            guard let value = dict[key], !(value is NSNull) else {
                return required ? .failure(.missingKey(key)) : .success(nil)
            }
            // NSNumber never bridges to String, so numbers and booleans land here.
            guard let s = value as? String else { return .failure(.wrongType(key: key, expected: "a string")) }
            return .success(s)
        }

        do throws(PromptProblem) {
            let prompt = try string("prompt", required: true).get()!
            let answer = try string("answer", required: true).get()!
            let wrong = try string("wrong", required: false).get()
            let corrupt = try string("corrupt", required: false).get()
            guard !prompt.isEmpty else { return .failure(.emptyPrompt) }

            let bos = prependBOS ? [tokenizer.endOfTextID] : []
            let tokens = bos + tokenizer.encode(prompt)
            let answerTokens = tokenizer.encode(answer)
            guard answerTokens.count == 1 else {
                return .failure(.notOneToken(key: "answer", text: answer, tokens: answerTokens))
            }
            var wrongID: Int?
            if let wrong {
                let wrongTokens = tokenizer.encode(wrong)
                guard wrongTokens.count == 1 else {
                    return .failure(.notOneToken(key: "wrong", text: wrong, tokens: wrongTokens))
                }
                wrongID = wrongTokens[0]
                if wrongID == answerTokens[0] { return .failure(.answerIsWrong(text: wrong)) }
            }
            var corruptTokens: [Int]?
            if let corrupt {
                let ct = bos + tokenizer.encode(corrupt)
                guard ct.count == tokens.count else {
                    return .failure(.corruptLengthMismatch(promptTokens: tokens.count, corruptTokens: ct.count))
                }
                corruptTokens = ct
            }
            return .success(
                PromptExample(
                    index: index, line: line, prompt: prompt, answer: answer, wrong: wrong, corrupt: corrupt,
                    tokens: tokens, answerID: answerTokens[0], wrongID: wrongID, corruptTokens: corruptTokens))
        } catch {
            return .failure(error)
        }
    }
}

extension PromptProblem: Error {}

// MARK: - SHA-256 (FIPS 180-4), so content hashes need no extra dependency.

/// Lowercase hex SHA-256 of `data`.
public func sha256Hex(_ data: Data) -> String {
    var h: [UInt32] = [
        0x6a09_e667, 0xbb67_ae85, 0x3c6e_f372, 0xa54f_f53a, 0x510e_527f, 0x9b05_688c, 0x1f83_d9ab, 0x5be0_cd19,
    ]
    let k: [UInt32] = [
        0x428a_2f98, 0x7137_4491, 0xb5c0_fbcf, 0xe9b5_dba5, 0x3956_c25b, 0x59f1_11f1, 0x923f_82a4, 0xab1c_5ed5,
        0xd807_aa98, 0x1283_5b01, 0x2431_85be, 0x550c_7dc3, 0x72be_5d74, 0x80de_b1fe, 0x9bdc_06a7, 0xc19b_f174,
        0xe49b_69c1, 0xefbe_4786, 0x0fc1_9dc6, 0x240c_a1cc, 0x2de9_2c6f, 0x4a74_84aa, 0x5cb0_a9dc, 0x76f9_88da,
        0x983e_5152, 0xa831_c66d, 0xb003_27c8, 0xbf59_7fc7, 0xc6e0_0bf3, 0xd5a7_9147, 0x06ca_6351, 0x1429_2967,
        0x27b7_0a85, 0x2e1b_2138, 0x4d2c_6dfc, 0x5338_0d13, 0x650a_7354, 0x766a_0abb, 0x81c2_c92e, 0x9272_2c85,
        0xa2bf_e8a1, 0xa81a_664b, 0xc24b_8b70, 0xc76c_51a3, 0xd192_e819, 0xd699_0624, 0xf40e_3585, 0x106a_a070,
        0x19a4_c116, 0x1e37_6c08, 0x2748_774c, 0x34b0_bcb5, 0x391c_0cb3, 0x4ed8_aa4a, 0x5b9c_ca4f, 0x682e_6ff3,
        0x748f_82ee, 0x78a5_636f, 0x84c8_7814, 0x8cc7_0208, 0x90be_fffa, 0xa450_6ceb, 0xbef9_a3f7, 0xc671_78f2,
    ]
    var message = [UInt8](data)
    let bitLength = UInt64(message.count) &* 8
    message.append(0x80)
    while message.count % 64 != 56 { message.append(0) }
    for shift in stride(from: 56, through: 0, by: -8) { message.append(UInt8(truncatingIfNeeded: bitLength >> UInt64(shift))) }

    func rotr(_ x: UInt32, _ n: UInt32) -> UInt32 { (x >> n) | (x << (32 - n)) }
    var w = [UInt32](repeating: 0, count: 64)
    for chunk in stride(from: 0, to: message.count, by: 64) {
        for i in 0..<16 {
            let j = chunk + 4 * i
            w[i] = UInt32(message[j]) << 24 | UInt32(message[j + 1]) << 16 | UInt32(message[j + 2]) << 8 | UInt32(message[j + 3])
        }
        for i in 16..<64 {
            let s0 = rotr(w[i - 15], 7) ^ rotr(w[i - 15], 18) ^ (w[i - 15] >> 3)
            let s1 = rotr(w[i - 2], 17) ^ rotr(w[i - 2], 19) ^ (w[i - 2] >> 10)
            w[i] = w[i - 16] &+ s0 &+ w[i - 7] &+ s1
        }
        var (a, b, c, d, e, f, g, hh) = (h[0], h[1], h[2], h[3], h[4], h[5], h[6], h[7])
        for i in 0..<64 {
            let s1 = rotr(e, 6) ^ rotr(e, 11) ^ rotr(e, 25)
            let ch = (e & f) ^ (~e & g)
            let t1 = hh &+ s1 &+ ch &+ k[i] &+ w[i]
            let s0 = rotr(a, 2) ^ rotr(a, 13) ^ rotr(a, 22)
            let maj = (a & b) ^ (a & c) ^ (b & c)
            let t2 = s0 &+ maj
            (hh, g, f, e, d, c, b, a) = (g, f, e, d &+ t1, c, b, a, t1 &+ t2)
        }
        h[0] &+= a; h[1] &+= b; h[2] &+= c; h[3] &+= d
        h[4] &+= e; h[5] &+= f; h[6] &+= g; h[7] &+= hh
    }
    return h.map { word in
        let s = String(word, radix: 16)
        return String(repeating: "0", count: 8 - s.count) + s
    }.joined()
}

extension PromptSet {
    /// The examples patching can run: each needs `wrong` and a `corrupt` prompt of the same token
    /// length. Others are an error naming the file and line, or (with `skipInvalid`) skipped and
    /// counted; indices are renumbered among the examples kept.
    public func requiringPairs(skipInvalid: Bool) throws -> PromptSet {
        var out = self
        out.examples = []
        for ex in examples {
            let missing = ex.wrongID == nil ? "\"wrong\"" : (ex.corruptTokens == nil ? "\"corrupt\"" : nil)
            if let missing {
                guard skipInvalid else { throw AnalysisError.patchPromptIncomplete(path: path, line: ex.line, missing: missing) }
                out.skipped.append(SkippedLine(line: ex.line, problem: .missingKey(missing.trimmingCharacters(in: ["\""]))))
                continue
            }
            var kept = ex
            kept.index = out.examples.count
            out.examples.append(kept)
        }
        if out.examples.isEmpty { throw AnalysisError.noValidPrompts(path: path, skipped: out.skipped.count) }
        out.skipped.sort { $0.line < $1.line }
        return out
    }
}
