import Foundation
import ResultsStore
import Testing

/// `compare` through the binary on the embedded models: one run for all the models (from a text,
/// a token file and a dataset), --windows, shards merged, resumed, drawn by the report, bad input
/// refused in one line.
@Suite struct CompareCLITests {
    typealias C = CLITests

    @Test func storesOneRunFromEachReaderAndDrawsIt() throws {
        let dir = try C.tempDir()
        defer { try? FileManager.default.removeItem(at: dir) }
        let db = dir.appendingPathComponent("c.sqlite").path
        let trio = try C.run(["compare", "--text", "heldout", "--context", "32", "--windows", "3", "--db", db])
        #expect(trio.status == 0, "\(trio.stderr)")
        for needle in ["gpt2-tiny-vanilla", "gpt2-tiny-lnfree", "JSD vs original, all positions", "KL(original ‖ model), other", "at 93 positions of 3 units"] {
            #expect(trio.stdout.contains(needle), "\(needle): \(trio.stdout)")
        }
        let tokens = try C.run(["compare", "gpt2-tiny", "gpt2-tiny-lnfree", "--tokens", "Tests/Fixtures/data/stream.u16.bin",
                                "--context", "16", "--windows", "5", "--db", db, "--json"])
        #expect(tokens.status == 0, "\(tokens.stderr)")
        let dataset = try C.run(["compare", "gpt2-tiny", "gpt2-tiny-lnfree", "--dataset", "Tests/Fixtures/data/docs.jsonl",
                                 "--context", "16", "--db", db])
        #expect(dataset.status == 0, "\(dataset.stderr)")
        let store = try ResultsDatabase.openReadOnly(path: db)
        #expect(try store.runs().map(\.command) == ["compare", "compare", "compare"])
        #expect(try store.runs().map(\.nPrompts).prefix(2) == [3, 5])
        #expect(try store.runs()[0].modelPath.components(separatedBy: " | ").count == 3)
        let sites = Set(try store.results(runID: 2).map(\.site))
        #expect(sites == ["m0", "m1", "input"], "the token file has documents: eot rows, \(sites)")
        let resumed = try C.run(["compare", "--text", "heldout", "--context", "32", "--windows", "3", "--db", db, "--resume", "1"])
        #expect(resumed.status == 0 && resumed.stdout.contains("as run 1"), "\(resumed.stdout) \(resumed.stderr)")

        let out = dir.appendingPathComponent("report.html").path
        let report = try C.run(["report", "1", "2", "--db", db, "--out", out])
        #expect(report.status == 0, "\(report.stderr)")
        let html = try String(contentsOfFile: out, encoding: .utf8)
        #expect(html.contains("Divergence from the original") && html.contains("JSD against the original"))
        #expect(html.components(separatedBy: "<polyline").count - 1 == 3 + 3 + 2 + 2 + 2 + 2 + 1 + 1)
    }

    @Test func shardsMergeIntoOneRun() throws {
        try AnalysisCLITests.expectShardsMerge(["compare", "gpt2-tiny", "gpt2-tiny-lnfree", "--context", "32", "--windows", "4", "--batch", "1"])
    }

    @Test func badInputIsOneLine() throws {
        let dir = try C.tempDir()
        defer { try? FileManager.default.removeItem(at: dir) }
        let db = dir.appendingPathComponent("a.sqlite").path
        try C.expectOneLineError(["compare", "gpt2-tiny", "--db", db], mentions: ["original", "at least one other"])
        try C.expectOneLineError(["compare", "gpt2-tiny", "gpt2-tiny-lnfree", "--text", "heldout", "--tokens", "x.bin", "--db", db],
                                 mentions: ["--text", "--tokens"])
        try C.expectOneLineError(["compare", "gpt2-tiny", "gpt2-tiny-lnfree", "--windows", "0", "--db", db], mentions: ["--windows"])
        try C.expectOneLineError(["compare", "gpt2-tiny", "gpt2-tiny-lnfree", "--prompts", "topic", "--windows", "2", "--db", db],
                                 mentions: ["--windows"])
        try C.expectOneLineError(["compare", "gpt2-tiny", "gpt2-tiny-lnfree", "--tokens", dir.appendingPathComponent("none.bin").path,
                                  "--db", db], mentions: ["none.bin"])
        #expect(!FileManager.default.fileExists(atPath: db))
    }
}
