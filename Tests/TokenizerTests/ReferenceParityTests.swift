import Foundation
import Testing

@testable import Tokenizer

/// Parity with Hugging Face GPT2TokenizerFast (cross-checked against the slow tokenizer and tiktoken).
@Suite struct ReferenceParityTests {
    @Test func fixturesArePresent() {
        #expect(Fixtures.encodeCases.count >= 200)
        #expect(Fixtures.decodeCases.count >= 100)
        #expect(Fixtures.info != nil)
    }

    @Test(arguments: Fixtures.encodeCases)
    func encodeMatchesReference(_ c: Fixtures.EncodeCase) throws {
        let tokenizer = try Fixtures.tokenizer()
        if let pieces = c.pieces {
            let ours = PreTokenizer.pieces(of: c.text)
            #expect(ours.count == pieces.count && zip(ours, pieces).allSatisfy(sameScalars), "pieces \(ours) vs \(pieces)")
        }
        #expect(tokenizer.encode(c.text) == c.ids)
        let decoded = tokenizer.decode(c.ids)
        #expect(sameScalars(decoded, c.text), "decoded \(decoded.debugDescription)")
    }

    @Test(arguments: Fixtures.decodeCases)
    func decodeMatchesReference(_ c: Fixtures.DecodeCase) throws {
        let decoded = try Fixtures.tokenizer().decode(c.ids)
        #expect(sameScalars(decoded, c.text), "decoded \(decoded.debugDescription) expected \(c.text.debugDescription)")
    }

    @Test func vocabularySizeAndEndOfText() throws {
        let tokenizer = try Fixtures.tokenizer()
        let info = try #require(Fixtures.info)
        #expect(tokenizer.vocabSize == info.vocabSize)
        #expect(tokenizer.endOfTextID == info.endOfTextID)
        #expect(tokenizer.id(of: info.endOfText) == info.endOfTextID)
        #expect(tokenizer.tokenString(info.endOfTextID) == info.endOfText)
    }

    /// Every single-token case: `id(of:)` and `tokenString` are inverses.
    @Test func singleTokenLookups() throws {
        let tokenizer = try Fixtures.tokenizer()
        let single = Fixtures.encodeCases.filter { $0.ids.count == 1 }
        #expect(single.count >= 20)
        for c in single {
            #expect(tokenizer.id(of: c.text) == c.ids[0], "\(c.text.debugDescription)")
            #expect(sameScalars(tokenizer.tokenString(c.ids[0]), c.text))
        }
        #expect(tokenizer.id(of: "not one token at all") == nil)
    }

    /// tokenizer.json (as saved by GPT2TokenizerFast, merges as pairs) gives the same ids.
    @Test func tokenizerJSONMatchesVocabAndMerges() throws {
        let fromJSON = try GPT2Tokenizer(tokenizerJSONURL: Fixtures.tokenizerJSON)
        let reference = try Fixtures.tokenizer()
        #expect(fromJSON.vocabSize == reference.vocabSize)
        #expect(fromJSON.endOfTextID == reference.endOfTextID)
        for c in Fixtures.encodeCases {
            #expect(fromJSON.encode(c.text) == c.ids, "\(c.testDescription)")
        }
        for c in Fixtures.decodeCases {
            #expect(sameScalars(fromJSON.decode(c.ids), c.text))
        }
    }

    /// The older tokenizer.json form with merges as "a b" strings, found through `load(directory:)`.
    @Test func tokenizerJSONWithStringMerges() throws {
        let data = try Data(contentsOf: Fixtures.tokenizerJSON)
        var root = try #require(try JSONSerialization.jsonObject(with: data) as? [String: Any])
        var model = try #require(root["model"] as? [String: Any])
        let pairs = try #require(model["merges"] as? [[String]])
        model["merges"] = pairs.map { $0.joined(separator: " ") }
        root["model"] = model
        let folder = try Fixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: folder) }
        try JSONSerialization.data(withJSONObject: root).write(to: folder.appendingPathComponent("tokenizer.json"))

        let tokenizer = try GPT2Tokenizer.load(directory: folder)
        for c in Fixtures.encodeCases {
            #expect(tokenizer.encode(c.text) == c.ids, "\(c.testDescription)")
        }
    }
}
