import Foundation
import ResultsStore
import Testing

/// `sinks`, `norms` and `lens` read a token file and a JSON Lines dataset as `compare` does (one
/// code path, `AnalysisRunOptions`): the same ids from a text, a nanoGPT .bin and a dataset give
/// the same rows; and two inputs, --windows with prompts and a malformed file are refused in one line.
@Suite struct AnalysisDataCLITests {
    typealias C = CLITests

    static let text = "The quick brown fox jumps over the lazy dog. It was a bright cold day in April, and the clocks were striking thirteen. Call me Ishmael. Some years ago, never mind how long precisely, having little or no money in my purse, and nothing particular to interest me on shore, I thought I would sail about a little and see the watery part of the world."

    /// The text, its ids (tokenized by the binary, then <|endoftext|> as a text file's documents
    /// end) as a u16 .bin, and the text as a one-row dataset, in `dir`.
    static func inputs(in dir: URL) throws -> (text: String, bin: String, dataset: String) {
        let text = dir.appendingPathComponent("doc.txt"), bin = dir.appendingPathComponent("doc.bin")
        let dataset = dir.appendingPathComponent("doc.jsonl")
        try Self.text.write(to: text, atomically: true, encoding: .utf8)
        let tokenized = try C.run(["tokenize", "gpt2-tiny", Self.text, "--json"])
        #expect(tokenized.status == 0, "\(tokenized.stderr)")
        let object = try JSONSerialization.jsonObject(with: Data(tokenized.stdout.utf8)) as! [String: Any]
        let ids = (object["tokens"] as! [Int]) + [50256]
        var bytes = Data()
        for id in ids { bytes.append(contentsOf: [UInt8(id & 0xff), UInt8(id >> 8)]) }
        try bytes.write(to: bin)
        let row = try JSONSerialization.data(withJSONObject: ["text": Self.text])
        try (String(decoding: row, as: UTF8.self) + "\n").write(to: dataset, atomically: true, encoding: .utf8)
        return (text.path, bin.path, dataset.path)
    }

    @Test(arguments: ["sinks", "norms", "lens"]) func tokenFileAndDatasetGiveTheTextsRows(command: String) throws {
        let dir = try C.tempDir()
        defer { try? FileManager.default.removeItem(at: dir) }
        let db = dir.appendingPathComponent("a.sqlite").path
        let (text, bin, dataset) = try Self.inputs(in: dir)
        let common = [command, "gpt2-tiny", "--context", "16", "--windows", "3", "--db", db]
        for input in [["--text", text], ["--tokens", bin], ["--dataset", dataset]] {
            let r = try C.run(common + input)
            #expect(r.status == 0, "\(input): \(r.stderr)")
        }
        let store = try ResultsDatabase.openReadOnly(path: db)
        let runs = try store.runs()
        #expect(runs.map(\.nPrompts) == [3, 3, 3])
        #expect(runs[1].optionsJSON.contains("doc.bin") && runs[2].optionsJSON.contains("doc.jsonl"), "\(runs[1].optionsJSON)")
        let rows = try runs.map { run in try store.results(runID: run.id!).filter { $0.site != "input" }.sorted { "\($0)" < "\($1)" } }
        #expect(!rows[0].isEmpty)
        #expect(rows[1] == rows[0], "\(command) --tokens differs from --text")
        #expect(rows[2] == rows[0], "\(command) --dataset differs from --text")
    }

    @Test func badDataIsOneLine() throws {
        let dir = try C.tempDir()
        defer { try? FileManager.default.removeItem(at: dir) }
        let db = dir.appendingPathComponent("a.sqlite").path
        let (text, bin, dataset) = try Self.inputs(in: dir)
        let broken = dir.appendingPathComponent("broken.jsonl")
        try "{\"text\": \"a\"}\n{not json\n".write(to: broken, atomically: true, encoding: .utf8)
        let odd = dir.appendingPathComponent("odd.bin")
        try Data([1, 2, 3]).write(to: odd)
        for command in ["sinks", "norms", "lens"] {
            try C.expectOneLineError([command, "gpt2-tiny", "--text", text, "--tokens", bin, "--db", db], mentions: ["--text", "--tokens"])
            try C.expectOneLineError([command, "gpt2-tiny", "--tokens", bin, "--dataset", dataset, "--db", db], mentions: ["--tokens", "--dataset"])
            try C.expectOneLineError([command, "gpt2-tiny", "--prompts", "topic", "--windows", "2", "--db", db], mentions: ["--windows"])
            try C.expectOneLineError([command, "gpt2-tiny", "--dataset", broken.path, "--db", db], mentions: ["broken.jsonl"])
            try C.expectOneLineError([command, "gpt2-tiny", "--tokens", odd.path, "--db", db], mentions: ["odd.bin"])
            try C.expectOneLineError([command, "gpt2-tiny", "--text", text, "--field", "ids", "--db", db], mentions: ["--field"])
        }
        #expect(!FileManager.default.fileExists(atPath: db))
    }
}
