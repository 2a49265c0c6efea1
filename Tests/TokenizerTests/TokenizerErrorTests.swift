import Foundation
import Testing

@testable import Tokenizer

/// Bad or missing files give one typed, one-line error naming the file (and line).
@Suite struct TokenizerErrorTests {
    let vocabURL = Fixtures.modelTokenizerDirectory.appendingPathComponent("vocab.json")

    /// Runs `body`, requires a TokenizerError equal to `expected` whose message is one line
    /// containing every string of `mentions`.
    func expectError(_ expected: TokenizerError, mentioning mentions: [String], _ body: () throws -> Void) {
        do {
            try body()
            Issue.record("expected \(expected), got no error")
        } catch let error as TokenizerError {
            #expect(error == expected)
            let message = error.localizedDescription
            #expect(!message.contains("\n"), "message spans lines: \(message)")
            for mention in mentions {
                #expect(message.contains(mention), "message \(message.debugDescription) lacks \(mention.debugDescription)")
            }
        } catch {
            Issue.record("expected TokenizerError, got \(error)")
        }
    }

    func write(_ text: String, _ name: String, in folder: URL) throws -> URL {
        let url = folder.appendingPathComponent(name)
        try Data(text.utf8).write(to: url)
        return url
    }

    @Test func emptyFolder() throws {
        let folder = try Fixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: folder) }
        expectError(.noTokenizerFiles(directory: folder.path, found: []),
                    mentioning: [folder.path, "vocab.json + merges.txt or tokenizer.json", "none of them"]) {
            _ = try GPT2Tokenizer.load(directory: folder)
        }
    }

    @Test func folderWithVocabOnly() throws {
        let folder = try Fixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: folder) }
        try FileManager.default.copyItem(at: vocabURL, to: folder.appendingPathComponent("vocab.json"))
        expectError(.noTokenizerFiles(directory: folder.path, found: ["vocab.json"]),
                    mentioning: [folder.path, "only vocab.json"]) {
            _ = try GPT2Tokenizer.load(directory: folder)
        }
    }

    @Test func missingMergesFile() throws {
        let folder = try Fixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: folder) }
        let merges = folder.appendingPathComponent("merges.txt")
        expectError(.fileNotFound(path: merges.path), mentioning: [merges.path, "does not exist"]) {
            _ = try GPT2Tokenizer(vocabURL: vocabURL, mergesURL: merges)
        }
    }

    /// An empty merges.txt would tokenize everything into single bytes, silently.
    @Test func emptyMergesFile() throws {
        let folder = try Fixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: folder) }
        for text in ["", "#version: 0.2\n", "\n\n"] {
            let merges = try write(text, "merges.txt", in: folder)
            expectError(.noMerges(path: merges.path), mentioning: [merges.path, "no merge rules"]) {
                _ = try GPT2Tokenizer(vocabURL: vocabURL, mergesURL: merges)
            }
        }
    }

    @Test func vocabWithDuplicateIDs() throws {
        let folder = try Fixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: folder) }
        var vocab = try JSONDecoder().decode([String: Int].self, from: Data(contentsOf: vocabURL))
        vocab["Ġzzzduplicate"] = 262  // " the"
        vocab["Ġyyyduplicate"] = 11  // ","
        let vocabFile = folder.appendingPathComponent("vocab.json")
        try JSONEncoder().encode(vocab).write(to: vocabFile)
        let merges = Fixtures.modelTokenizerDirectory.appendingPathComponent("merges.txt")
        expectError(.duplicateID(path: vocabFile.path, id: 11, first: ",", second: "Ġyyyduplicate"),
                    mentioning: [vocabFile.path, "id 11", "two tokens"]) {
            _ = try GPT2Tokenizer(vocabURL: vocabFile, mergesURL: merges)
        }
    }

    @Test func mergeLineWithThreeTokens() throws {
        let folder = try Fixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: folder) }
        let merges = try write("#version: 0.2\nĠ t\nĠ a b\n", "merges.txt", in: folder)
        expectError(.invalidMerge(path: merges.path, location: "line 3", text: "Ġ a b"),
                    mentioning: [merges.path, "line 3", "\"Ġ a b\""]) {
            _ = try GPT2Tokenizer(vocabURL: vocabURL, mergesURL: merges)
        }
    }

    @Test func mergeLineWithOneToken() throws {
        let folder = try Fixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: folder) }
        let merges = try write("#version: 0.2\r\nĠ t\r\nĠt\r\n", "merges.txt", in: folder)
        expectError(.invalidMerge(path: merges.path, location: "line 3", text: "Ġt"), mentioning: ["line 3"]) {
            _ = try GPT2Tokenizer(vocabURL: vocabURL, mergesURL: merges)
        }
    }

    @Test func mergeTokenOutsideVocabulary() throws {
        let folder = try Fixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: folder) }
        let merges = try write("#version: 0.2\nĠ t\nĠ ☃\n", "merges.txt", in: folder)
        expectError(.mergeTokenNotInVocab(path: merges.path, location: "line 3", token: "☃"),
                    mentioning: [merges.path, "line 3", "☃", "same model"]) {
            _ = try GPT2Tokenizer(vocabURL: vocabURL, mergesURL: merges)
        }
    }

    @Test func vocabWithStringID() throws {
        let folder = try Fixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: folder) }
        let vocab = try write("{\"a\": 0, \"b\": \"one\"}", "vocab.json", in: folder)
        let merges = try write("#version: 0.2\n", "merges.txt", in: folder)
        do {
            _ = try GPT2Tokenizer(vocabURL: vocab, mergesURL: merges)
            Issue.record("expected an error")
        } catch let TokenizerError.invalidVocab(path, reason) {
            #expect(path == vocab.path)
            #expect(reason.contains("b"), "\(reason)")
            let message = TokenizerError.invalidVocab(path: path, reason: reason).localizedDescription
            #expect(!message.contains("\n") && message.contains(vocab.path) && message.contains("integer ids"))
        }
    }

    @Test func vocabThatIsNotJSON() throws {
        let folder = try Fixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: folder) }
        let vocab = try write("{\"a\": 0,\n \"b\"", "vocab.json", in: folder)
        let merges = try write("#version: 0.2\n", "merges.txt", in: folder)
        do {
            _ = try GPT2Tokenizer(vocabURL: vocab, mergesURL: merges)
            Issue.record("expected an error")
        } catch let error as TokenizerError {
            guard case .invalidVocab(let path, _) = error else {
                Issue.record("expected invalidVocab, got \(error)")
                return
            }
            #expect(path == vocab.path)
            #expect(!error.localizedDescription.contains("\n"))
        }
    }

    @Test func vocabWithoutByteTokens() throws {
        let folder = try Fixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: folder) }
        let vocab = try write("{\"a\": 0, \"<|endoftext|>\": 1}", "vocab.json", in: folder)
        let merges = try write("#version: 0.2\n", "merges.txt", in: folder)
        let first = ByteLevel.characterForByte[0]
        expectError(.missingByteToken(path: vocab.path, byte: 0), mentioning: [vocab.path, "0x0", "\"\(first)\""]) {
            _ = try GPT2Tokenizer(vocabURL: vocab, mergesURL: merges)
        }
    }

    /// Strings compare by canonical equivalence, so the Kelvin sign U+212A once stood in for the
    /// token "K" of byte 0x4B and "K" decoded as the sign's three bytes.
    /// Input: fuzz/corpus/tokenizer/crash-kelvin-sign (the tokenizer fuzz target).
    @Test func byteTokenSpelledWithAnEquivalentCharacter() throws {
        var entries: [String: Int] = ["<|endoftext|>": 256, "Ġt": 257]
        for (byte, scalar) in ByteLevel.characterForByte.enumerated() where byte != 0x4B { entries[String(scalar)] = byte }
        entries["\u{212A}"] = 0x4B
        let vocab = try JSONEncoder().encode(entries)
        expectError(.missingByteToken(path: "vocab.json", byte: 0x4B), mentioning: ["vocab.json", "0x4B"]) {
            _ = try GPT2Tokenizer(vocab: vocab, merges: Data("Ġ t\n".utf8))
        }
        entries["\u{212A}"] = nil
        entries["K"] = 0x4B
        let tokenizer = try GPT2Tokenizer(vocab: JSONEncoder().encode(entries), merges: Data("Ġ t\n".utf8))
        #expect(tokenizer.decode(tokenizer.encode("OK")) == "OK")
    }

    @Test func vocabWithoutEndOfText() throws {
        let folder = try Fixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: folder) }
        var entries: [String: Int] = [:]
        for (byte, scalar) in ByteLevel.characterForByte.enumerated() { entries[String(scalar)] = byte }
        let vocab = folder.appendingPathComponent("vocab.json")
        try JSONEncoder().encode(entries).write(to: vocab)
        let merges = try write("#version: 0.2\n", "merges.txt", in: folder)
        expectError(.missingEndOfText(path: vocab.path), mentioning: [vocab.path, "<|endoftext|>"]) {
            _ = try GPT2Tokenizer(vocabURL: vocab, mergesURL: merges)
        }
    }

    @Test func tokenizerJSONWithoutModel() throws {
        let folder = try Fixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: folder) }
        let json = try write("{\"added_tokens\": []}", "tokenizer.json", in: folder)
        expectError(.invalidTokenizerJSON(path: json.path, reason: "missing key \"model\""),
                    mentioning: [json.path, "model.vocab"]) {
            _ = try GPT2Tokenizer.load(directory: folder)
        }
    }

    @Test func tokenizerJSONWithOtherModelType() throws {
        let folder = try Fixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: folder) }
        let json = try write("{\"model\": {\"type\": \"WordPiece\", \"vocab\": {}, \"merges\": []}}", "tokenizer.json", in: folder)
        expectError(.invalidTokenizerJSON(path: json.path, reason: "model.type is \"WordPiece\", not \"BPE\""),
                    mentioning: [json.path, "WordPiece"]) {
            _ = try GPT2Tokenizer(tokenizerJSONURL: json)
        }
    }

    @Test func tokenizerJSONWithBadMergePair() throws {
        let folder = try Fixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: folder) }
        let json = try write("{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, \"merges\": [[\"a\", \"b\", \"c\"]]}}",
                             "tokenizer.json", in: folder)
        expectError(.invalidMerge(path: json.path, location: "model.merges[0]", text: "a b c"),
                    mentioning: [json.path, "model.merges[0]"]) {
            _ = try GPT2Tokenizer(tokenizerJSONURL: json)
        }
    }
}
