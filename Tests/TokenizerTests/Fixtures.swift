import Foundation
import Testing

@testable import Tokenizer

/// Paths and fixtures shared by the tokenizer tests (made by scripts/reference/make_tokenizer_fixtures.py).
enum Fixtures {
    static let repoRoot = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    static let modelTokenizerDirectory = repoRoot.appendingPathComponent("models/tokenizer")
    static let directory = repoRoot.appendingPathComponent("Tests/Fixtures/tokenizer")
    static let tokenizerJSON = directory.appendingPathComponent("tokenizer.json")

    struct EncodeCase: Decodable, Sendable, CustomTestStringConvertible {
        var text: String
        var ids: [Int]
        var pieces: [String]?
        var testDescription: String {
            let shown = text.debugDescription
            return shown.count > 60 ? String(shown.prefix(57)) + "…\"" : shown
        }
    }

    struct DecodeCase: Decodable, Sendable, CustomTestStringConvertible {
        var ids: [Int]
        var text: String
        var testDescription: String { "\(ids.prefix(8))\(ids.count > 8 ? "…" : "")" }
    }

    struct Info: Decodable, Sendable {
        var vocabSize: Int
        var endOfTextID: Int
        var endOfText: String
        enum CodingKeys: String, CodingKey {
            case vocabSize = "vocab_size", endOfTextID = "end_of_text_id", endOfText = "end_of_text"
        }
    }

    static func load<T: Decodable>(_ name: String, as type: T.Type) -> T? {
        guard let data = try? Data(contentsOf: directory.appendingPathComponent(name)) else { return nil }
        return try? JSONDecoder().decode(T.self, from: data)
    }

    static let encodeCases: [EncodeCase] = load("cases.json", as: [EncodeCase].self) ?? []
    static let decodeCases: [DecodeCase] = load("decode_cases.json", as: [DecodeCase].self) ?? []
    static let info: Info? = load("tokenizer_info.json", as: Info.self)

    /// The committed GPT-2 tokenizer, loaded once.
    static let loaded: Result<GPT2Tokenizer, TokenizerError> = Result {
        try GPT2Tokenizer.load(directory: modelTokenizerDirectory)
    }.mapError { $0 as? TokenizerError ?? .unreadableFile(path: "models/tokenizer", reason: "\($0)") }

    static func tokenizer() throws -> GPT2Tokenizer { try loaded.get() }

    /// A fresh empty folder under the temporary directory.
    static func temporaryDirectory() throws -> URL {
        let url = FileManager.default.temporaryDirectory
            .appendingPathComponent("lnlens-tokenizer-tests-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
        return url
    }
}

/// Scalar-exact equality: `String ==` treats canonically equivalent strings as equal.
func sameScalars(_ a: String, _ b: String) -> Bool {
    a.unicodeScalars.elementsEqual(b.unicodeScalars)
}
