import Foundation
import ResultsStore
import Testing

/// `neurons` through the binary on the embedded models: runs stored per model, the table printed,
/// the report and the plots drawn, bad input refused in one line.
@Suite struct NeuronsCLITests {
    typealias C = CLITests

    @Test func neuronsStoreAndDraw() throws {
        let dir = try C.tempDir()
        defer { try? FileManager.default.removeItem(at: dir) }
        let db = dir.appendingPathComponent("n.sqlite").path
        let r = try C.run(["neurons", "gpt2-tiny", "gpt2-tiny-lnfree", "--windows", "3", "--context", "32", "--top", "2", "--db", db])
        #expect(r.status == 0, "\(r.stderr)")
        #expect(r.stdout.contains("null-space fraction") && r.stdout.contains("k2") && r.stdout.contains("gpt2-tiny-lnfree"), "\(r.stdout)")
        let store = try ResultsDatabase.openReadOnly(path: db)
        #expect(try store.runs().map(\.command) == ["neurons", "neurons"])
        #expect(try store.runs().allSatisfy { $0.status == .completed && $0.nPrompts == 5 })
        #expect(try store.prompts(runID: 1).map(\.prompt).contains("nothing ablated (k = 0)"))
        // The same neurons in both models: the first model's top two.
        let keys = { (id: Int64) in Set(try store.summaries(runID: id).filter { $0.scope == "neurons" }.map(\.key)) }
        #expect(try keys(1) == keys(2) && keys(1).count == 2)

        let out = dir.appendingPathComponent("report.html").path
        let report = try C.run(["report", "1", "2", "--db", db, "--out", out])
        #expect(report.status == 0, "\(report.stderr)")
        let html = try String(contentsOfFile: out, encoding: .utf8)
        #expect(html.contains("Entropy neurons") && html.contains("null-space fraction"))
        for kind in ["neuron-ablation", "neuron-null-space"] {
            let plot = try C.run(["plot", kind, "1", "2", "--db", db, "--svg", dir.appendingPathComponent("\(kind).svg").path])
            #expect(plot.status == 0, "\(kind): \(plot.stderr)")
        }
        let given = try C.run(["neurons", "gpt2-tiny", "--windows", "2", "--context", "16", "--neurons", "5,7", "--json", "--db", db])
        #expect(given.status == 0, "\(given.stderr)")
        #expect(given.stdout.contains("\"N5\"") && given.stdout.contains("\"N7\""), "\(given.stdout)")
    }

    @Test func badInputIsOneLine() throws {
        let dir = try C.tempDir()
        defer { try? FileManager.default.removeItem(at: dir) }
        let db = dir.appendingPathComponent("n.sqlite").path
        try C.expectOneLineError(["neurons", "gpt2-tiny", "--top", "0", "--db", db], mentions: ["--top"])
        try C.expectOneLineError(["neurons", "gpt2-tiny", "--windows", "0", "--db", db], mentions: ["--windows"])
        try C.expectOneLineError(["neurons", "gpt2-tiny", "--neurons", "3,x", "--db", db], mentions: ["--neurons"])
        try C.expectOneLineError(["neurons", "gpt2-tiny", "--neurons", "3,3", "--db", db], mentions: ["--neurons", "once"])
        try C.expectOneLineError(["neurons", "gpt2-tiny", "--neurons", "3", "--select-from", "gpt2-tiny", "--db", db],
                                 mentions: ["--neurons", "--select-from"])
        try C.expectOneLineError(["neurons", "gpt2-tiny", "--null-dims", "0", "--db", db], mentions: ["--null-dims"])
        try C.expectOneLineError(["neurons", "gpt2-tiny", "--neurons", "99999", "--db", db], mentions: ["--neurons", "99999", "d_mlp"])
        try C.expectOneLineError(["neurons", "gpt2-tiny", "--text", "heldout", "--tokens", "x.bin", "--db", db], mentions: ["--text", "--tokens"])
        #expect(!FileManager.default.fileExists(atPath: db))
    }
}
