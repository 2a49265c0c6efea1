import Foundation
import Support
import Testing

/// The token-file and JSON Lines readers against files numpy and Python wrote
/// (scripts/reference/make_data_fixtures.py → Tests/Fixtures/data), and their refusals.
@Suite struct DataFileTests {
    static let data = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("Fixtures/data")

    struct Expected: Decodable {
        struct OutOfRange: Decodable { let offset: Int; let value: Int }
        let eot: Int
        let documents: [[Int]]
        let stream: [Int]
        let outOfRange: OutOfRange
        enum CodingKeys: String, CodingKey { case eot, documents, stream, outOfRange = "out_of_range" }
    }

    static let expected = try! JSONDecoder().decode(Expected.self, from: Data(contentsOf: data.appendingPathComponent("expected.json")))

    static func file(_ name: String) -> URL { data.appendingPathComponent(name) }

    static func ids(_ f: TokenFile) -> [Int] { (0..<f.count).map { Int(f[$0]) } }

    /// A file in a fresh temporary folder holding `bytes`.
    static func scratch(_ name: String, _ bytes: [UInt8]) throws -> URL {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("lnlens-data-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        let url = dir.appendingPathComponent(name)
        try Data(bytes).write(to: url)
        return url
    }

    /// `open` fails with a message that names the file and mentions each of `needles`.
    static func expectRefused(_ url: URL, dtype: TokenDType? = nil, _ needles: [String]) {
        do {
            let f = try TokenFile.open(url, dtype: dtype)
            Issue.record("\(url.lastPathComponent) opened with \(f.count) ids")
        } catch {
            let message = error.errorDescription ?? ""
            #expect(message.contains(url.lastPathComponent), "\(message)")
            for n in needles { #expect(message.contains(n), "'\(message)' does not mention \(n)") }
            #expect(!message.contains("\n"))
        }
    }

    @Test(arguments: ["u2", "u4", "i4", "i8"], [1, 2, 3])
    func everyNpyDtypeAndVersionReadsNumpysIDs(descr: String, version: Int) throws {
        let f = try TokenFile.open(Self.file("stream.\(descr).v\(version).npy"))
        #expect(f.npyVersion == version && f.dtype.npyDescr == "<" + descr)
        #expect(Self.ids(f) == Self.expected.stream)
    }

    @Test func nanoGPTBinFilesRead() throws {
        let u16 = try TokenFile.open(Self.file("stream.u16.bin"))
        #expect(u16.dtype == .u16 && u16.npyVersion == nil && Self.ids(u16) == Self.expected.stream)
        let u32 = try TokenFile.open(Self.file("stream.u32.bin"), dtype: .u32)
        #expect(Self.ids(u32) == Self.expected.stream)
        // The same ids stored in the same type hash alike whatever the container.
        #expect(try TokenFile.open(Self.file("stream.u2.v2.npy")).hash == u16.hash)
        #expect(u32.hash != u16.hash)
        #expect(Array(u16.ids(3..<7)) == Self.expected.stream[3..<7].map(Int32.init))
    }

    @Test func validateCountsDocumentsAndNamesTheFirstIDOutsideTheVocabulary() throws {
        let f = try TokenFile.open(Self.file("stream.u16.bin"))
        #expect(try f.validate(vocabSize: 50257, eot: Self.expected.eot) == Self.expected.documents.count)
        let bad = try TokenFile.open(Self.file("bad/out_of_range.bin"))
        let o = Self.expected.outOfRange
        #expect(throws: DataFileError.tokenOutOfRange(file: bad.path, offset: o.offset, byte: 2 * o.offset, value: Int64(o.value), vocabSize: 50257)) {
            try bad.validate(vocabSize: 50257, eot: Self.expected.eot)
        }
        // A smaller vocabulary: the first id at or past it, wherever it is.
        let limit = 1000
        let first = Self.expected.stream.firstIndex { $0 >= limit }!
        #expect(throws: DataFileError.tokenOutOfRange(file: f.path, offset: first, byte: 2 * first, value: Int64(Self.expected.stream[first]), vocabSize: limit)) {
            try f.validate(vocabSize: limit, eot: Self.expected.eot)
        }
        let npy = try TokenFile.open(Self.file("stream.i8.v1.npy"))
        #expect(throws: DataFileError.tokenOutOfRange(file: npy.path, offset: first, byte: npy.dataOffset + 8 * first, value: Int64(Self.expected.stream[first]), vocabSize: limit)) {
            try npy.validate(vocabSize: limit, eot: Self.expected.eot)
        }
    }

    @Test func numpysMalformedFilesAreRefusedSayingWhy() throws {
        Self.expectRefused(Self.file("bad/fortran.npy"), ["fortran_order is True"])
        Self.expectRefused(Self.file("bad/c2d.npy"), ["shape (2, 3) is 2-D", "1-D"])
        Self.expectRefused(Self.file("bad/float.npy"), ["'<f4'", "not supported"])
        Self.expectRefused(Self.file("bad/bigendian.npy"), ["'>u2'"])
        Self.expectRefused(Self.file("bad/scalar.npy"), ["scalar"])
        Self.expectRefused(Self.file("bad/truncated.npy"), ["truncated", "\(Self.expected.stream.count) ids"])
        Self.expectRefused(Self.file("bad/odd.bin"), ["7 bytes", "u16"])
        // An odd number of u16 ids is no whole number of u32s.
        #expect(Self.expected.stream.count % 2 == 1)
        Self.expectRefused(Self.file("stream.u16.bin"), dtype: .u32, ["\(2 * Self.expected.stream.count) bytes", "u32"])
        Self.expectRefused(Self.file("stream.u4.v1.npy"), dtype: .u16, ["<u4", "--token-dtype"])
    }

    @Test func handMadeDamageIsRefused() throws {
        let good = [UInt8](try Data(contentsOf: Self.file("stream.u2.v1.npy")))
        Self.expectRefused(try Self.scratch("empty.npy", []), ["empty"])
        Self.expectRefused(try Self.scratch("empty.bin", []), ["empty"])
        Self.expectRefused(try Self.scratch("text.npy", Array("hello world, not numpy".utf8)), ["magic"])
        Self.expectRefused(try Self.scratch("extra.npy", good + [0, 0]), ["extra bytes"])
        var v4 = good
        v4[6] = 4
        Self.expectRefused(try Self.scratch("v4.npy", v4), ["version 4.0"])
        Self.expectRefused(try Self.scratch("short.npy", Array(good[0..<20])), ["truncated"])
        Self.expectRefused(try Self.scratch("numpy.bin", good), ["name it FILE.npy"])
        #expect(throws: DataFileError.unreadable(file: "/nonexistent/x.bin", reason: "does not exist")) {
            try TokenFile.open(URL(fileURLWithPath: "/nonexistent/x.bin"))
        }
    }

    /// A version-1.0 .npy with `header` (padded as numpy pads it) and `count` u16 ids after it.
    static func npy(_ header: String, count: Int = 3, newline: Bool = true) -> [UInt8] {
        var text = Array(header.utf8)
        let total = 10 + text.count + (newline ? 1 : 0)
        text += [UInt8](repeating: 0x20, count: (64 - total % 64) % 64)
        if newline { text.append(0x0A) }
        return NpyHeader.magic + [1, 0, UInt8(text.count & 0xFF), UInt8(text.count >> 8)] + text + [UInt8](repeating: 1, count: 2 * count)
    }

    static func describe(_ error: any Error) -> String { (error as? LocalizedError)?.errorDescription ?? "\(error)" }

    static func parse(_ bytes: [UInt8]) throws -> NpyHeader {
        try bytes.withUnsafeBytes { try NpyHeader.parse($0, file: "h.npy") }
    }

    @Test func theHeaderParserTakesNumpysLiteralsAndNothingElse() throws {
        #expect(try Self.parse(Self.npy("{'descr': '<u2', 'fortran_order': False, 'shape': (3,), }")).count == 3)
        #expect(try Self.parse(Self.npy("{\"descr\":\"<u2\",\"fortran_order\":False,\"shape\":( 3 , )}")).count == 3)
        #expect(try Self.parse(Self.npy("{'shape': (3,), 'descr': '<u2', 'fortran_order': False}")).dtype == .u16)
        let refused: [(String, String)] = [
            ("{'descr': '<u2', 'fortran_order': False, 'shape': (3)}", "not numpy's"),
            ("{'descr': '<u2', 'fortran_order': 0, 'shape': (3,)}", "not numpy's"),
            ("{'descr': '<u2', 'fortran_order': False, 'shape': (3,), 'x': 1}", "not numpy's"),
            ("{'descr': '<u2', 'fortran_order': False, 'shape': (3,), 'extra': True}", "keys"),
            ("{'descr': '<u2', 'descr': '<u2', 'fortran_order': False, 'shape': (3,)}", "twice"),
            ("{'descr': '<u2', 'fortran_order': False}", "keys"),
            ("{'descr': '<u2', 'fortran_order': False, 'shape': (0,)}", "no token ids"),
            ("{'descr': '<u2', 'fortran_order': False, 'shape': (-3,)}", "not numpy's"),
            ("{'descr': '<u\\2', 'fortran_order': False, 'shape': (3,)}", "not numpy's"),
            ("{'descr': [('a', '<u2')], 'fortran_order': False, 'shape': (3,)}", "not numpy's"),
            ("{'descr': '|u1', 'fortran_order': False, 'shape': (3,)}", "'|u1'"),
            ("{'descr': '<u2', 'fortran_order': False, 'shape': (99999999999999999999,)}", "not numpy's"),
        ]
        for (header, needle) in refused {
            #expect(throws: DataFileError.self) { try Self.parse(Self.npy(header)) }
            do { _ = try Self.parse(Self.npy(header)) } catch {
                #expect(Self.describe(error).contains(needle), "\(header): \(Self.describe(error))")
            }
        }
        do { _ = try Self.parse(Self.npy("{'descr': '<u2', 'fortran_order': False, 'shape': (3,)}", newline: false)) } catch {
            #expect(Self.describe(error).contains("newline"), "\(Self.describe(error))")
        }
        // A count whose byte size overflows is truncated data, not a crash.
        #expect(throws: DataFileError.self) {
            try Self.parse(Self.npy("{'descr': '<i8', 'fortran_order': False, 'shape': (\(Int.max / 4),)}"))
        }
    }

    // MARK: JSON Lines

    @Test func jsonlRowsReadTextsAndTokenArrays() throws {
        let docs = try JSONLDataset.load(Self.file("docs.jsonl"), field: "text")
        #expect(docs.rows.count == Self.expected.documents.count && docs.rows.map(\.line) == Array(1...docs.rows.count))
        #expect(docs.rows.allSatisfy { if case .text = $0.value { true } else { false } })
        let ids = try JSONLDataset.load(Self.file("ids.jsonl"), field: "input_ids")
        #expect(ids.rows.map(\.value) == Self.expected.documents.map { .tokens($0) })
        #expect(try ids.tokenIDs(vocabSize: 50257) { $0.map { _ in [] } } == Self.expected.documents)
        #expect(try JSONLDataset.load(Self.file("ids.jsonl"), field: "input_ids", limit: 4).rows.count == 4)
        #expect(ids.contentHash == SHA256.hex(try Data(contentsOf: Self.file("ids.jsonl"))))
    }

    static func rows(_ text: String, field: String = "text") throws -> JSONLDataset {
        try JSONLDataset.parse(Data(text.utf8), path: "rows.jsonl", field: field)
    }

    @Test func jsonlLinesCountFromOneWithBlankLinesBOMAndCRLF() throws {
        let set = try Self.rows("\u{FEFF}{\"text\": \"a\"}\r\n\n  \n{\"text\": \"b\", \"x\": 1}\r\n")
        #expect(set.rows == [.init(line: 1, value: .text("a")), .init(line: 4, value: .text("b"))])
    }

    @Test func badRowsNameTheLine() throws {
        let cases: [(String, DataFileError)] = [
            ("{\"text\": \"a\"}\n[1, 2]\n", .badRow(file: "rows.jsonl", line: 2, problem: "an array is not a JSON object; each line must be one object such as {\"text\": \"…\"}")),
            ("{\"text\": \"a\"}\n\n{\"body\": \"b\", \"id\": 3}\n", .badRow(file: "rows.jsonl", line: 3, problem: "the row has no \"text\" (its keys: \"body\", \"id\"); name the text's key with --field")),
            ("{\"text\": 7}\n", .badRow(file: "rows.jsonl", line: 1, problem: "\"text\" is 7; give a string (text) or an array of token ids")),
            ("{\"text\": [1, -2]}\n", .badRow(file: "rows.jsonl", line: 1, problem: "\"text\"[1] is -2, not a token id (an integer ≥ 0)")),
            ("{\"text\": [1, 2.5]}\n", .badRow(file: "rows.jsonl", line: 1, problem: "\"text\"[1] is 2.5, not a token id (an integer ≥ 0)")),
            ("\"just a string\"\n", .badRow(file: "rows.jsonl", line: 1, problem: "a string is not a JSON object; each line must be one object such as {\"text\": \"…\"}")),
            ("\n \n", .noRows(file: "rows.jsonl")),
            ("", .empty(file: "rows.jsonl")),
        ]
        for (text, error) in cases { #expect(throws: error) { try Self.rows(text) } }
        #expect(throws: DataFileError.self) { try Self.rows("{\"text\": \"a\"\n") }
        let big = try Self.rows("{\"ids\": [5, 50257]}\n", field: "ids")
        #expect(throws: DataFileError.badRow(file: "rows.jsonl", line: 1, problem: "\"ids\"[1] is 50257, but the model's token ids are 0…50256")) {
            try big.tokenIDs(vocabSize: 50257) { $0.map { _ in [] } }
        }
    }
}
