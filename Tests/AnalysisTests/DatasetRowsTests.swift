import Analysis
import Foundation
import Support
import Testing
import Tokenizer

/// `dla --dataset`'s input: each row's first `context` tokens, short rows skipped, against the
/// windows scripts/reference/make_data_fixtures.py computed with transformers' tokenizer.
@Suite struct DatasetRowsTests {
    static let data = PromptTestSupport.repositoryRoot.appendingPathComponent("Tests/Fixtures/data")

    struct Expected: Decodable {
        struct Rows: Decodable {
            let windows: [[Int]]
            let skippedLines: [Int]
            enum CodingKeys: String, CodingKey { case windows, skippedLines = "skipped_lines" }
        }
        let documents: [[Int]]
        let dla: [String: Rows]
    }

    static let expected = try! JSONDecoder().decode(Expected.self, from: Data(contentsOf: data.appendingPathComponent("expected.json")))

    static func windows(_ name: String, field: String, context: Int, limit: Int? = nil) throws -> TextPrompts {
        let rows = try JSONLDataset.load(data.appendingPathComponent(name), field: field, limit: limit)
        return try TextPrompts.firstTokens(of: rows, context: context, tokenizer: PromptTestSupport.gpt2Tokenizer.get(), vocabSize: 50257)
    }

    @Test(arguments: [8, 16])
    func eachRowGivesItsFirstContextTokensAndShortRowsAreSkipped(context: Int) throws {
        let want = Self.expected.dla["\(context)"]!
        for (name, field) in [("docs.jsonl", "text"), ("ids.jsonl", "input_ids")] {
            let prompts = try Self.windows(name, field: field, context: context)
            #expect(prompts.windows.map(\.tokens) == want.windows, "\(name)")
            #expect(prompts.skippedLines == want.skippedLines && prompts.rows == Self.expected.documents.count)
            #expect(prompts.windows.map(\.firstTokenIndex) == Array(0..<want.windows.count).map { $0 * context })
            #expect(prompts.contentHash == SHA256.hex(try Data(contentsOf: Self.data.appendingPathComponent(name))))
            // One target per row with --targets paper: its last position, to the token there.
            let units = AttributionInput.text(prompts, .lastTokenOfWindow).units
            #expect(units.map { $0.targets.map(\.answerID) } == want.windows.map { [$0.last!] })
        }
    }

    @Test func rowsLimitsTheRowsRead() throws {
        let prompts = try Self.windows("docs.jsonl", field: "text", context: 16, limit: 5)
        let lengths = Self.expected.documents.prefix(5).map(\.count)
        #expect(prompts.rows == 5 && prompts.windows.count == lengths.filter { $0 >= 16 }.count)
        #expect(prompts.skippedLines == lengths.indices.filter { lengths[$0] < 16 }.map { $0 + 1 })
    }

    @Test func rowsAllShorterThanTheContextAreAnError() throws {
        let longest = Self.expected.documents.map(\.count).max()!
        #expect(throws: AnalysisError.rowsTooShort(path: Self.data.appendingPathComponent("docs.jsonl").relativePath,
                                                   rows: Self.expected.documents.count, context: longest + 1)) {
            try Self.windows("docs.jsonl", field: "text", context: longest + 1)
        }
    }
}
