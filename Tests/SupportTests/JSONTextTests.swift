import Foundation
import Support
import Testing

/// The one escaper against Python's `json.dumps` (scripts/reference/make_json_text_vectors.py,
/// Tests/Fixtures/reference/jsontext/) and against Foundation's JSON parser.
@Suite struct JSONTextTests {
    struct Literal: Decodable { let text: String; let literal: String }

    static let literals: [Literal] = {
        let url = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("Fixtures/reference/jsontext/literals.json")
        return try! JSONDecoder().decode([Literal].self, from: Data(contentsOf: url))
    }()

    static func decoded(_ literal: String) throws -> String {
        try JSONDecoder().decode([String].self, from: Data("[\(literal)]".utf8))[0]
    }

    @Test func literalIsPythonsJSONDumps() {
        #expect(Self.literals.count > 10)
        for l in Self.literals { #expect(JSONText.literal(l.text) == l.literal, "\(l.literal)") }
    }

    /// What display quoting shows reads back as the same string, and keeps non-ASCII characters.
    @Test func quotedReadsBackAsJSON() throws {
        for l in Self.literals {
            let shown = JSONText.quoted(l.text)
            #expect(try Self.decoded(shown) == l.text, "\(shown)")
            #expect(!shown.unicodeScalars.contains { $0.value < 0x20 || $0.value == 0x7F }, "\(shown)")
        }
        #expect(JSONText.quoted("Ġcafé\n") == "\"Ġcafé\\n\"")
        #expect(JSONText.escaped("a\tb\"c") == "a\\tb\\\"c")
    }
}
