import Foundation
import GPT2
import Support
import Testing
import Training

/// `--tokens` and `--dataset` corpora against the windows scripts/reference/make_data_fixtures.py
/// computed with transformers' tokenizer: streams cut across documents, datasets never.
@Suite struct DataCorpusTests {
    static let data = Fixtures.root.appendingPathComponent("data")

    struct Expected: Decodable {
        struct Cut: Decodable {
            let tokens: [Int]
            let windows: Int
            let shortDocuments: Int
            let dropped: Int
            enum CodingKeys: String, CodingKey { case tokens, windows, shortDocuments = "short_documents", dropped }
        }
        let eot: Int
        let documents: [[Int]]
        let stream: [Int]
        let windows: [String: Cut]
    }

    static let expected = try! JSONDecoder().decode(Expected.self, from: Data(contentsOf: data.appendingPathComponent("expected.json")))

    static func dataset(_ name: String = "docs.jsonl", field: String = "text", window: Int, vocabSize: Int = 50257) throws -> TokenCorpus {
        try CorpusSource.dataset(data.appendingPathComponent(name), field: field).load(tokenizer: Fixtures.tokenizer(), vocabSize: vocabSize,
                                                                                          window: window)
    }

    @Test(arguments: [8, 16, 32])
    func datasetsAreCutIntoWindowsThatNeverCrossDocuments(window: Int) throws {
        let corpus = try Self.dataset(window: window)
        let want = Self.expected.windows["\(window)"]!
        #expect(corpus.windowLength == window && corpus.documents == Self.expected.documents.count)
        #expect(corpus.tokens(0..<corpus.tokenCount) == want.tokens)
        #expect(corpus.blockCount(seqLen: window) == want.windows)
        let cut = try #require(corpus.cut)
        #expect(cut.windows == want.windows && cut.shortDocuments == want.shortDocuments && cut.droppedTokens == want.dropped)
        #expect(cut.tokens == Self.expected.stream.count && cut.tokens == cut.windows * window + cut.droppedTokens)
        // Pre-tokenized rows make the same corpus.
        #expect(try Self.dataset("ids.jsonl", field: "input_ids", window: window).hash == corpus.hash)
    }

    @Test func theCutRules() {
        let eot: Int32 = 99
        // 7 tokens + EOS fill a window of 8 exactly: the EOS is in it. 9 + EOS: one window, 2 dropped.
        // 2 + EOS: shorter than a window, dropped whole.
        let (tokens, cut) = DocumentCut.cut([Array(1...7), Array(11...19), [21, 22]], window: 8, eot: eot)
        #expect(tokens == Array(1...7) + [eot] + Array(11...18))
        #expect(cut.window == 8 && cut.documents == 3 && cut.windows == 2 && cut.tokens == 8 + 10 + 3)
        #expect(cut.shortDocuments == 1 && cut.droppedTokens == 2 + 3)
    }

    @Test func tokenFilesAreStreamsWithDocumentsCountedByTheirEOS() throws {
        let tok = try Fixtures.tokenizer()
        var hashes = Set<String>()
        for (name, dtype) in [("stream.u16.bin", nil), ("stream.u32.bin", TokenDType.u32), ("stream.i8.v3.npy", nil), ("stream.u2.v1.npy", nil)] {
            let corpus = try CorpusSource.tokens(Self.data.appendingPathComponent(name), dtype: dtype).load(tokenizer: tok, vocabSize: 50257, window: 16)
            #expect(corpus.windowLength == nil && corpus.cut == nil && corpus.documents == Self.expected.documents.count)
            #expect(corpus.tokenCount == Self.expected.stream.count && corpus.blockCount(seqLen: 16) == Self.expected.stream.count / 16)
            #expect(corpus.block(3, seqLen: 16) == Array(Self.expected.stream[48..<64]), "\(name)")
            #expect(corpus.blockCount(seqLen: 10) == Self.expected.stream.count / 10)
            hashes.insert(corpus.hash)
        }
        // The hash is the ids' bytes with their type: u16 .bin and '<u2' .npy agree.
        #expect(hashes.count == 3)
    }

    @Test func idsOutsideTheModelsVocabularyAreRefused() throws {
        let tok = try Fixtures.tokenizer()
        let first = Self.expected.stream.firstIndex { $0 >= 500 }!
        let url = Self.data.appendingPathComponent("stream.u16.bin")
        #expect(throws: DataFileError.tokenOutOfRange(file: url.relativePath, offset: first, byte: 2 * first,
                                                      value: Int64(Self.expected.stream[first]), vocabSize: 500)) {
            try CorpusSource.tokens(url, dtype: nil).load(tokenizer: tok, vocabSize: 500, window: 16)
        }
        let row = Self.expected.documents.firstIndex { $0.contains { $0 >= 500 } }!
        let index = Self.expected.documents[row].firstIndex { $0 >= 500 }!
        #expect(throws: DataFileError.badRow(file: Self.data.appendingPathComponent("ids.jsonl").relativePath, line: row + 1,
                                             problem: "\"input_ids\"[\(index)] is \(Self.expected.documents[row][index]), but the model's token ids are 0…499")) {
            try Self.dataset("ids.jsonl", field: "input_ids", window: 16, vocabSize: 500)
        }
    }

    @Test func aDatasetIsReadOnlyInTheWindowsItWasCutFor() throws {
        let corpus = try Self.dataset(window: 16)
        let settings = TrainingSettings(seqLen: 8, sequencesPerStep: 2, microBatch: 2, steps: 2, seed: 0,
                                        learningRate: .init(peak: 1e-3, floor: 1e-4, warmupSteps: 0, totalSteps: 2))
        #expect(throws: TrainingError.badOption(option: "--seq-len", reason: "8 differs from the 16 the dataset \(corpus.path) was cut for")) {
            try Trainer(model: try Fixtures.tinyModel(), corpus: corpus, settings: settings, layerNorms: nil)
        }
        #expect(throws: TrainingError.badOption(option: "--context", reason: "8 differs from the 16 the dataset \(corpus.path) was cut for")) {
            try Evaluation.validate(model: try Fixtures.tinyModel(), text: corpus, context: 8)
        }
        let tooLong = Self.expected.documents.map(\.count).max()! + 2
        #expect(throws: TrainingError.self) { try Self.dataset(window: tooLong) }
    }
}
