import Foundation
import Support
import Testing

@testable import Analysis

/// A toy tokenizer for validation tests: a word with its leading space is one token when it has
/// at most 6 characters and is cut into 6-character pieces otherwise; every other character is
/// its own token. (" Mariana" → " Maria", "na": 2 tokens.) Ids are a stable hash below 50000.
struct ToyPromptEncoder: TextEncoder {
    let endOfTextID = 50256

    func encode(_ text: String) -> [Int] {
        var pieces: [String] = []
        var current = ""
        func flush() {
            var rest = Substring(current)
            while !rest.isEmpty {
                pieces.append(String(rest.prefix(6)))
                rest = rest.dropFirst(6)
            }
            current = ""
        }
        for ch in text {
            if ch.isLetter {
                current.append(ch)
            } else if ch == " " {
                flush()
                current = " "
            } else {
                flush()
                pieces.append(String(ch))
            }
        }
        flush()
        return pieces.map { piece in
            var h: UInt32 = 2_166_136_261
            for b in piece.utf8 { h = (h ^ UInt32(b)) &* 16_777_619 }
            return Int(h % 50000)
        }
    }
}

/// Helpers of the prompt-set tests, in a namespace so other AnalysisTests files can't collide.
enum PromptTestSupport {
    /// Writes `text` to a fresh temporary file and returns its URL.
    static func temporaryFile(_ text: String, name: String = "prompts.jsonl") throws -> URL {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("lnlens-prompts-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        let url = dir.appendingPathComponent(name)
        try Data(text.utf8).write(to: url)
        return url
    }
}

/// The problem reported for a one-line (after `prefix` valid lines) file, or nil if it loads.
private func problem(of line: String, prefixLines: Int = 0) throws -> (line: Int, problem: PromptProblem, message: String)? {
    let good = #"{"prompt": "Then, Mary and John went", "answer": " Mary"}"#
    let text = Array(repeating: good, count: prefixLines).joined(separator: "\n") + (prefixLines > 0 ? "\n" : "") + line + "\n"
    let url = try PromptTestSupport.temporaryFile(text)
    do {
        _ = try PromptSet.load(url: url, tokenizer: ToyPromptEncoder(), skipInvalid: false)
        return nil
    } catch let error as AnalysisError {
        guard case let .invalidPrompt(path, lineNumber, problem) = error else {
            Issue.record("unexpected error \(error)")
            return nil
        }
        #expect(path == url.relativePath)
        return (lineNumber, problem, error.localizedDescription)
    }
}

@Suite struct PromptSetTests {
    let enc = ToyPromptEncoder()

    @Test func loadsValidLinesAndIgnoresExtraKeys() throws {
        let text = """
            {"prompt": "Then, Mary and John went to the store. John gave a drink to", "answer": " Mary", "wrong": " John", "corrupt": "Then, Mary and John went to the store. Mary gave a drink to", "set": 0}

            {"prompt": "Hello there", "answer": " world", "extra": [1, 2]}
            """
        let url = try PromptTestSupport.temporaryFile(text)
        let set = try PromptSet.load(url: url, tokenizer: enc, skipInvalid: false)
        #expect(set.examples.count == 2)
        #expect(set.skipped.isEmpty)
        let first = set.examples[0]
        #expect(first.index == 0 && first.line == 1)
        #expect(first.tokens == enc.encode(first.prompt))
        #expect(first.answerID == enc.encode(" Mary")[0])
        #expect(first.wrongID == enc.encode(" John")[0])
        #expect(first.corruptTokens == enc.encode(first.corrupt!))
        let second = set.examples[1]
        #expect(second.index == 1 && second.line == 3)  // the blank line 2 is skipped
        #expect(second.wrong == nil && second.wrongID == nil && second.corruptTokens == nil)
        #expect(set.contentHash == SHA256.hex(Data(text.utf8)))
    }

    @Test func prependBOSPutsEndOfTextFirstInBothRuns() throws {
        let url = try PromptTestSupport.temporaryFile(#"{"prompt": "a b", "answer": " c", "corrupt": "a d"}"#)
        let set = try PromptSet.load(url: url, tokenizer: enc, skipInvalid: false, prependBOS: true)
        #expect(set.examples[0].tokens == [50256] + enc.encode("a b"))
        #expect(set.examples[0].corruptTokens == [50256] + enc.encode("a d"))
    }

    @Test func badJSONNamesTheLine() throws {
        let p = try #require(try problem(of: #"{"prompt": "x", "answer": " y""#, prefixLines: 2))
        #expect(p.line == 3)
        guard case .badJSON = p.problem else { Issue.record("got \(p.problem)"); return }
        #expect(p.message.hasSuffix("or pass --skip-invalid"))
        #expect(!p.message.contains("\n"))
    }

    @Test func notAnObject() throws {
        let p = try #require(try problem(of: #"["prompt", "answer"]"#))
        #expect(p.line == 1 && p.problem == .notAnObject)
    }

    @Test func missingKeys() throws {
        #expect(try problem(of: #"{"answer": " y"}"#)?.problem == .missingKey("prompt"))
        #expect(try problem(of: #"{"prompt": "x"}"#, prefixLines: 4)?.problem == .missingKey("answer"))
        #expect(try problem(of: #"{"prompt": "x"}"#, prefixLines: 4)?.line == 5)
    }

    @Test func wrongTypes() throws {
        #expect(try problem(of: #"{"prompt": 3, "answer": " y"}"#)?.problem == .wrongType(key: "prompt", expected: "a string"))
        #expect(try problem(of: #"{"prompt": "x", "answer": true}"#)?.problem == .wrongType(key: "answer", expected: "a string"))
        #expect(try problem(of: #"{"prompt": "x", "answer": " y", "wrong": [" z"]}"#)?.problem == .wrongType(key: "wrong", expected: "a string"))
        #expect(try problem(of: #"{"prompt": "x", "answer": " y", "corrupt": 1.5}"#)?.problem == .wrongType(key: "corrupt", expected: "a string"))
        // null means "absent" for the optional keys
        #expect(try problem(of: #"{"prompt": "x", "answer": " y", "wrong": null}"#) == nil)
    }

    @Test func emptyPrompt() throws {
        #expect(try problem(of: #"{"prompt": "", "answer": " y"}"#)?.problem == .emptyPrompt)
    }

    @Test func multiTokenAnswerAndWrong() throws {
        let p = try #require(try problem(of: #"{"prompt": "x", "answer": " Mariana"}"#, prefixLines: 11))
        #expect(p.line == 12)
        #expect(p.problem == .notOneToken(key: "answer", text: " Mariana", tokens: enc.encode(" Mariana")))
        #expect(p.message.contains(":12: answer \" Mariana\" is 2 tokens ("))
        #expect(p.message.contains("pick a one-token answer"))
        let w = try #require(try problem(of: #"{"prompt": "x", "answer": " y", "wrong": " Johnathan"}"#))
        #expect(w.problem == .notOneToken(key: "wrong", text: " Johnathan", tokens: enc.encode(" Johnathan")))
        let empty = try #require(try problem(of: #"{"prompt": "x", "answer": ""}"#))
        #expect(empty.problem == .notOneToken(key: "answer", text: "", tokens: []))
    }

    @Test func corruptOfOtherLength() throws {
        let p = try #require(try problem(of: #"{"prompt": "a b c", "answer": " y", "corrupt": "a b c d"}"#))
        #expect(p.problem == .corruptLengthMismatch(promptTokens: 3, corruptTokens: 4))
        #expect(p.message.contains("corrupt is 4 tokens but prompt is 3"))
    }

    @Test func skipInvalidCountsReasonsAndKeepsValidIndices() throws {
        let text = """
            {"prompt": "one", "answer": " a"}
            {"prompt": "two", "answer": " Mariana"}
            not json

            {"prompt": "three", "answer": " b", "corrupt": "three more"}
            {"prompt": "four", "answer": " c"}
            """
        let url = try PromptTestSupport.temporaryFile(text)
        #expect(throws: AnalysisError.invalidPrompt(
            path: url.relativePath, line: 2,
            problem: .notOneToken(key: "answer", text: " Mariana", tokens: enc.encode(" Mariana")))) {
            try PromptSet.load(url: url, tokenizer: enc, skipInvalid: false)
        }
        let set = try PromptSet.load(url: url, tokenizer: enc, skipInvalid: true)
        #expect(set.examples.map(\.line) == [1, 6])
        #expect(set.examples.map(\.index) == [0, 1])
        #expect(set.skipped.map(\.line) == [2, 3, 5])
        #expect(set.skipped[1].reason.hasPrefix("not valid JSON"))
        #expect(set.skipped[2].problem == .corruptLengthMismatch(promptTokens: 1, corruptTokens: 2))
    }

    @Test func allInvalidOrEmptyFileIsAnError() throws {
        let bad = try PromptTestSupport.temporaryFile("nope\n")
        #expect(throws: AnalysisError.noValidPrompts(path: bad.relativePath, skipped: 1)) {
            try PromptSet.load(url: bad, tokenizer: enc, skipInvalid: true)
        }
        let empty = try PromptTestSupport.temporaryFile("\n\n")
        #expect(throws: AnalysisError.noValidPrompts(path: empty.relativePath, skipped: 0)) {
            try PromptSet.load(url: empty, tokenizer: enc, skipInvalid: false)
        }
    }

    @Test func missingFileIsOneLineError() throws {
        let url = URL(fileURLWithPath: "/nonexistent/lnlens/x.jsonl")
        #expect(throws: AnalysisError.promptFileUnreadable(path: url.relativePath, reason: "does not exist")) {
            try PromptSet.load(url: url, tokenizer: enc, skipInvalid: false)
        }
    }

    @Test func crlfAndBOMAreAccepted() throws {
        let url = try PromptTestSupport.temporaryFile("\u{FEFF}{\"prompt\": \"a\", \"answer\": \" b\"}\r\n{\"prompt\": \"c\", \"answer\": \" d\"}\r\n")
        let set = try PromptSet.load(url: url, tokenizer: enc, skipInvalid: false)
        #expect(set.examples.map(\.answer) == [" b", " d"])
    }

    @Test func batchesGroupEqualLengthsInFileOrder() throws {
        let lines = ["a b", "a", "c d", "e f", "g", "h i"].map { #"{"prompt": "\#($0)", "answer": " z"}"# }
        let set = try PromptSet.load(url: try PromptTestSupport.temporaryFile(lines.joined(separator: "\n")), tokenizer: enc, skipInvalid: false)
        let batches = set.batchesByLength(maxBatch: 2)
        #expect(batches.map { $0.map(\.index) } == [[1, 4], [0, 2], [3, 5]])
        #expect(set.batchesByLength(maxBatch: 10).map { $0.map(\.index) } == [[1, 4], [0, 2, 3, 5]])
        for batch in batches { #expect(Set(batch.map(\.tokens.count)).count == 1) }
    }
}

@Suite struct TextPromptsTests {
    let enc = ToyPromptEncoder()

    @Test func windowsCoverTheTextWithoutOverlap() throws {
        let text = (0..<25).map { "w\($0 % 7)" }.joined(separator: " ")  // w0, " w1", ...: letters+digit
        let url = try PromptTestSupport.temporaryFile(text, name: "t.txt")
        let all = enc.encode(text)
        let prompts = try TextPrompts.load(url: url, tokenizer: enc, context: 8)
        #expect(prompts.totalTokens == all.count)
        #expect(prompts.windows.map(\.firstTokenIndex) == Array(stride(from: 0, to: all.count - 1, by: 8)))
        for w in prompts.windows {
            #expect(w.tokens == Array(all[w.firstTokenIndex..<w.firstTokenIndex + w.tokens.count]))
            #expect(w.tokens.count <= 8 && w.tokens.count >= 2)
            #expect(Array(w.targets) == Array(all[w.firstTokenIndex + 1..<w.firstTokenIndex + w.tokens.count]))
        }
        #expect(prompts.contentHash == SHA256.hex(Data(text.utf8)))
    }

    @Test func maxTokensCutsTheLastWindowExactly() throws {
        let text = String(repeating: "ab, ", count: 30)
        let url = try PromptTestSupport.temporaryFile(text, name: "t.txt")
        let prompts = try TextPrompts.load(url: url, tokenizer: enc, context: 10, maxTokens: 20)
        #expect(prompts.predictedPositions == 20)
        #expect(prompts.windows.map(\.tokens.count) == [10, 10, 3])
        #expect(prompts.windows.map(\.firstTokenIndex) == [0, 10, 20])
    }

    @Test func trailingSingleTokenIsDropped() throws {
        // 4 toy tokens: "a", ",", " b", "," → context 3 gives [a , b] and a lone ","
        let url = try PromptTestSupport.temporaryFile("a, b,", name: "t.txt")
        let prompts = try TextPrompts.load(url: url, tokenizer: enc, context: 3)
        #expect(prompts.windows.map(\.tokens.count) == [3])
    }

    @Test func errors() throws {
        let url = try PromptTestSupport.temporaryFile("hello world, again", name: "t.txt")
        #expect(throws: AnalysisError.contextTooSmall(context: 1)) {
            try TextPrompts.load(url: url, tokenizer: enc, context: 1)
        }
        #expect(throws: AnalysisError.maxTokensTooSmall(maxTokens: 0)) {
            try TextPrompts.load(url: url, tokenizer: enc, maxTokens: 0)
        }
        let empty = try PromptTestSupport.temporaryFile("", name: "e.txt")
        #expect(throws: AnalysisError.textTooShort(path: empty.relativePath, tokens: 0)) {
            try TextPrompts.load(url: empty, tokenizer: enc)
        }
        let missing = URL(fileURLWithPath: "/nonexistent/lnlens/t.txt")
        #expect(throws: AnalysisError.textFileUnreadable(path: missing.relativePath, reason: "does not exist")) {
            try TextPrompts.load(url: missing, tokenizer: enc)
        }
        let latin1 = try PromptTestSupport.temporaryFile("", name: "l.txt")
        try Data([0x63, 0x61, 0x66, 0xE9, 0x20, 0xFF]).write(to: latin1)
        #expect(throws: AnalysisError.textNotUTF8(path: latin1.relativePath)) {
            try TextPrompts.load(url: latin1, tokenizer: enc)
        }
    }
}
