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
            path: path, contentHash: SHA256.hex(data), examples: examples, skipped: skipped, prependBOS: prependBOS)
        set.unknownKeys = unknown.map { UnknownKey(key: $0.key, lines: $0.value) }
            .sorted { ($0.lines[0], $0.key) < ($1.lines[0], $1.key) }
        return set
    }

    /// The examples a model with context `nCtx` and vocabulary `dVocab` can run: others are an
    /// error naming the file and line, or (with `skipInvalid`) skipped and counted. Indices are
    /// renumbered among the examples kept.
    public func checked(nCtx: Int, dVocab: Int, skipInvalid: Bool) throws -> PromptSet {
        try keeping(skipInvalid: skipInvalid) { ex in
            let problem: PromptProblem
            if ex.tokens.count > nCtx {
                problem = .tooLong(tokens: ex.tokens.count, nCtx: nCtx)
            } else if let bad = (ex.tokens + (ex.corruptTokens ?? []) + [ex.answerID] + (ex.wrongID.map { [$0] } ?? []))
                .first(where: { $0 < 0 || $0 >= dVocab }) {
                problem = .tokenOutsideVocabulary(id: bad, dVocab: dVocab)
            } else {
                return nil
            }
            return (problem, .invalidPrompt(path: path, line: ex.line, problem: problem))
        }
    }

    /// The examples in which `problem` finds nothing, renumbered; for the others the error it
    /// gives, or (with `skipInvalid`) a skipped line with its problem.
    func keeping(skipInvalid: Bool, _ problem: (PromptExample) -> (PromptProblem, AnalysisError)?) throws -> PromptSet {
        var out = self
        out.examples = []
        for ex in examples {
            if let (reason, error) = problem(ex) {
                guard skipInvalid else { throw error }
                out.skipped.append(SkippedLine(line: ex.line, problem: reason))
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
            return .failure(.badJSON(reason: "starts with \(JSONText.quoted(text))"))
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

extension PromptSet {
    /// The examples patching can run: each needs `wrong` and a `corrupt` prompt of the same token
    /// length. Others are an error naming the file and line, or (with `skipInvalid`) skipped and
    /// counted; indices are renumbered among the examples kept.
    public func requiringPairs(skipInvalid: Bool) throws -> PromptSet {
        try keeping(skipInvalid: skipInvalid) { ex in
            guard let missing = ex.wrongID == nil ? "wrong" : (ex.corruptTokens == nil ? "corrupt" : nil) else { return nil }
            return (.missingKey(missing), .patchPromptIncomplete(path: path, line: ex.line, missing: "\"\(missing)\""))
        }
    }
}
