// Reading vocab.json + merges.txt (the files GPT2Tokenizer reads) or a Hugging Face tokenizer.json
// (what GPT2TokenizerFast saves) into the same plain form.
import Foundation
import Support

/// A tokenizer's files, parsed but not yet checked against each other.
struct TokenizerFiles {
    /// Vocabulary spelling (byte-level characters, e.g. "Ġthe") → id.
    var vocabulary: [String: Int]
    /// Merge pairs in rank order, each with where it came from for error messages.
    var merges: [(left: String, right: String, location: String)]
    /// Tokens matched literally in the input before pre-tokenization (e.g. "<|endoftext|>").
    var addedTokens: [(content: String, id: Int)]
    var vocabularyPath: String
    var mergesPath: String
}

private func readFile(_ url: URL) throws -> Data {
    guard FileManager.default.fileExists(atPath: url.path) else {
        throw TokenizerError.fileNotFound(path: url.path)
    }
    do {
        return try Files.read(url)
    } catch {
        throw TokenizerError.unreadableFile(path: url.path, reason: error.description)
    }
}

/// Splits one merge rule "left right" (exactly one space, both sides non-empty).
private func splitMerge(_ line: Substring) -> (String, String)? {
    let parts = line.split(separator: " ", omittingEmptySubsequences: false)
    guard parts.count == 2, !parts[0].isEmpty, !parts[1].isEmpty else { return nil }
    return (String(parts[0]), String(parts[1]))
}

/// The id of exactly `token` in `vocabulary`. A plain lookup goes by canonical equivalence, so
/// "K" would find a token spelled with the Kelvin sign U+212A, which stands for other bytes.
func exactID(of token: String, in vocabulary: [String: Int]) -> Int? {
    guard let index = vocabulary.index(forKey: token), vocabulary[index].key.utf8.elementsEqual(token.utf8) else {
        return nil
    }
    return vocabulary[index].value
}

extension TokenizerFiles {
    /// vocab.json and merges.txt as written by GPT-2 / `GPT2Tokenizer.save_pretrained`.
    static func read(vocabURL: URL, mergesURL: URL) throws -> TokenizerFiles {
        let vocabData = try readFile(vocabURL)
        let mergesData = try readFile(mergesURL)
        return try parse(vocab: vocabData, vocabPath: vocabURL.path, merges: mergesData, mergesPath: mergesURL.path)
    }

    /// As `read(vocabURL:mergesURL:)`, from the files' bytes; the paths are only used in messages.
    static func parse(vocab vocabData: Data, vocabPath: String, merges mergesData: Data, mergesPath: String) throws
        -> TokenizerFiles
    {
        let vocabulary: [String: Int]
        do {
            vocabulary = try JSONDecoder().decode([String: Int].self, from: vocabData)
        } catch {
            throw TokenizerError.invalidVocab(path: vocabPath, reason: describe(error))
        }

        guard let text = String(data: mergesData, encoding: .utf8) else {
            throw TokenizerError.unreadableFile(path: mergesPath, reason: "not valid UTF-8")
        }
        var merges: [(left: String, right: String, location: String)] = []
        merges.reserveCapacity(50_000)
        // Work on UTF-8 bytes: splitting the String would go by grapheme clusters, and is slower.
        let space = UInt8(ascii: " "), tab = UInt8(ascii: "\t"), cr = UInt8(ascii: "\r")
        let lines = text.utf8.split(separator: UInt8(ascii: "\n"), omittingEmptySubsequences: false)
        for (index, fullLine) in lines.enumerated() {
            let line = fullLine.last == cr ? fullLine.dropLast() : fullLine
            if line.allSatisfy({ $0 == space || $0 == tab }) { continue }
            if index == 0 && line.starts(with: "#version".utf8) { continue }
            let parts = line.split(separator: space, omittingEmptySubsequences: false)
            guard parts.count == 2, !parts[0].isEmpty, !parts[1].isEmpty else {
                throw TokenizerError.invalidMerge(
                    path: mergesPath, location: "line \(index + 1)", text: String(decoding: line, as: UTF8.self))
            }
            merges.append((String(decoding: parts[0], as: UTF8.self), String(decoding: parts[1], as: UTF8.self),
                           "line \(index + 1)"))
        }
        var added: [(content: String, id: Int)] = []
        if let id = exactID(of: GPT2Tokenizer.endOfText, in: vocabulary) { added.append((GPT2Tokenizer.endOfText, id)) }
        return TokenizerFiles(
            vocabulary: vocabulary, merges: merges, addedTokens: added,
            vocabularyPath: vocabPath, mergesPath: mergesPath)
    }

    /// A Hugging Face tokenizer.json with a BPE model; merges as "a b" strings or ["a", "b"] pairs.
    static func read(tokenizerJSONURL url: URL) throws -> TokenizerFiles {
        try parse(tokenizerJSON: readFile(url), path: url.path)
    }

    /// As `read(tokenizerJSONURL:)`, from the file's bytes; `path` is only used in messages.
    static func parse(tokenizerJSON data: Data, path: String) throws -> TokenizerFiles {
        let file: TokenizerJSON
        do {
            file = try JSONDecoder().decode(TokenizerJSON.self, from: data)
        } catch {
            throw TokenizerError.invalidTokenizerJSON(path: path, reason: describe(error))
        }
        if let type = file.model.type, type != "BPE" {
            throw TokenizerError.invalidTokenizerJSON(path: path, reason: "model.type is \"\(type)\", not \"BPE\"")
        }
        var merges: [(left: String, right: String, location: String)] = []
        merges.reserveCapacity(file.model.merges.count)
        for (index, entry) in file.model.merges.enumerated() {
            let location = "model.merges[\(index)]"
            switch entry {
            case .joined(let line):
                guard let (left, right) = splitMerge(Substring(line)) else {
                    throw TokenizerError.invalidMerge(path: path, location: location, text: line)
                }
                merges.append((left, right, location))
            case .pair(let parts):
                guard parts.count == 2 else {
                    throw TokenizerError.invalidMerge(
                        path: path, location: location, text: parts.joined(separator: " "))
                }
                merges.append((parts[0], parts[1], location))
            }
        }
        let added = (file.addedTokens ?? []).map { (content: $0.content, id: $0.id) }
        return TokenizerFiles(
            vocabulary: file.model.vocab, merges: merges, addedTokens: added,
            vocabularyPath: path, mergesPath: path)
    }
}

/// The parts of tokenizer.json that a byte-level BPE tokenizer needs, with the file's own keys.
struct TokenizerJSON: Decodable {
    struct Model: Decodable {
        var type: String?
        var vocab: [String: Int]
        var merges: [MergeEntry]
    }
    struct AddedToken: Decodable {
        var id: Int
        var content: String
    }
    enum MergeEntry: Decodable {
        case joined(String)
        case pair([String])

        init(from decoder: Decoder) throws {
            let container = try decoder.singleValueContainer()
            if let line = try? container.decode(String.self) {
                self = .joined(line)
            } else {
                self = .pair(try container.decode([String].self))
            }
        }
    }

    var model: Model
    var addedTokens: [AddedToken]?

    enum CodingKeys: String, CodingKey {
        case model
        case addedTokens = "added_tokens"
    }
}
