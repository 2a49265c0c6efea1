import Foundation
import ResultsStore
import Testing

/// `sinks`, `norms` and `lens` through the binary on the embedded models: runs stored per model,
/// shards merged, the report and the plots drawn, bad input refused in one line.
@Suite struct AnalysisCLITests {
    typealias C = CLITests

    @Test func threeAnalysesStoreMergeAndDraw() throws {
        let dir = try C.tempDir()
        defer { try? FileManager.default.removeItem(at: dir) }
        let db = dir.appendingPathComponent("a.sqlite").path
        let text = ["--text", "corpus/heldout.txt", "--context", "64"]
        let sinks = try C.run(["sinks", "gpt2-tiny", "gpt2-tiny-lnfree"] + text + ["--db", db])
        #expect(sinks.status == 0, "\(sinks.stderr)")
        #expect(sinks.stdout.contains("all heads") && sinks.stdout.contains("gpt2-tiny-lnfree"), "\(sinks.stdout)")
        let norms = try C.run(["norms", "gpt2-tiny-lnfree"] + text + ["--db", db, "--json"])
        #expect(norms.status == 0, "\(norms.stderr)")
        let object = try JSONSerialization.jsonObject(with: Data(norms.stdout.utf8)) as! [String: Any]
        let run = (object["runs"] as! [[String: Any]])[0]
        #expect(run["ln_mode"] as? String == "ln-free" && run["run_id"] as? Int == 3)
        let lens = try C.run(["lens", "gpt2-tiny", "--prompts", "topic", "--incl-mid", "--db", db])
        #expect(lens.status == 0, "\(lens.stderr)")
        #expect(lens.stdout.contains("final_post") && lens.stdout.contains("0_mid"), "\(lens.stdout)")
        let store = try ResultsDatabase.openReadOnly(path: db)
        #expect(try store.runs().map(\.command) == ["sinks", "sinks", "norms", "lens"])
        #expect(try store.runs().allSatisfy { $0.status == .completed })
        #expect(try store.prompts(runID: 4).count == 200)

        let out = dir.appendingPathComponent("report.html").path
        let report = try C.run(["report", "1", "2", "3", "4", "--db", db, "--out", out])
        #expect(report.status == 0, "\(report.stderr)")
        let html = try String(contentsOfFile: out, encoding: .utf8)
        for heading in ["Attention sinks", "Residual-stream norms", "Logit lens"] { #expect(html.contains(heading)) }
        for kind in ["sink-rates", "norms", "lens"] {
            let id = ["sink-rates": "1", "norms": "3", "lens": "4"][kind]!
            let plot = try C.run(["plot", kind, id, "--db", db, "--svg", dir.appendingPathComponent("\(kind).svg").path])
            #expect(plot.status == 0, "\(kind): \(plot.stderr)")
        }
        try C.expectOneLineError(["plot", "norms", "1", "--db", db, "--svg", dir.appendingPathComponent("x.svg").path],
                                 mentions: ["norms", "run 1", "sinks"])
    }

    /// `lens --positions last` scores one target per window: its final resid_post probability is
    /// the model's own next-token probability there, as `compare` stores it (CE = −log p) from an
    /// ordinary forward; `--positions` with prompts or another value is refused.
    @Test func lensLastPositionIsTheModelsProbability() throws {
        let dir = try C.tempDir()
        defer { try? FileManager.default.removeItem(at: dir) }
        let db = dir.appendingPathComponent("l.sqlite").path
        let window = ["--text", "heldout", "--context", "16", "--windows", "4", "--db", db]
        let lens = try C.run(["lens", "gpt2-tiny", "--positions", "last"] + window)
        #expect(lens.status == 0 && lens.stdout.contains("each window's last next token"), "\(lens.stdout) \(lens.stderr)")
        let compare = try C.run(["compare", "gpt2-tiny", "gpt2-tiny-lnfree"] + window)
        #expect(compare.status == 0, "\(compare.stderr)")
        let store = try ResultsDatabase.openReadOnly(path: db)
        let runs = try store.runs()
        #expect(runs[0].optionsJSON.contains("\"positions\":\"last\""), "\(runs[0].optionsJSON)")
        let probs = try store.results(runID: runs[0].id!, site: "resid_post", quantity: "prob").sorted { $0.promptIndex < $1.promptIndex }
        let ce = try store.results(runID: runs[1].id!, site: "m0", quantity: "ce").filter { $0.position == 14 }
            .sorted { $0.promptIndex < $1.promptIndex }
        #expect(probs.count == 4 && ce.count == 4)
        for (p, c) in zip(probs, ce) { #expect(abs(p.value - exp(-c.value)) < 1e-5, "window \(p.promptIndex): \(p.value) vs \(exp(-c.value))") }
        try C.expectOneLineError(["lens", "gpt2-tiny", "--prompts", "topic", "--positions", "last", "--db", db], mentions: ["--positions"])
        try C.expectOneLineError(["lens", "gpt2-tiny", "--positions", "first", "--db", db], mentions: ["--positions"])
    }

    @Test func shardsMergeIntoOneRun() throws {
        try Self.expectShardsMerge(["sinks", "gpt2-tiny", "--text", "corpus/heldout.txt", "--context", "64", "--batch", "1"])
    }

    /// `common` run whole and as two shards merged store the same rows and summaries.
    static func expectShardsMerge(_ common: [String]) throws {
        let dir = try C.tempDir()
        defer { try? FileManager.default.removeItem(at: dir) }
        let whole = dir.appendingPathComponent("whole.sqlite").path
        #expect(try C.run(common + ["--db", whole]).status == 0)
        var shards: [String] = []
        for i in 0..<2 {
            let path = dir.appendingPathComponent("s\(i).sqlite").path
            let r = try C.run(common + ["--shard", "\(i)/2", "--db", path])
            #expect(r.status == 0, "\(r.stderr)")
            shards.append(path)
        }
        let merged = dir.appendingPathComponent("merged.sqlite").path
        let m = try C.run(["merge", merged] + shards)
        #expect(m.status == 0, "\(m.stderr)")
        let a = try ResultsDatabase.openReadOnly(path: whole), b = try ResultsDatabase.openReadOnly(path: merged)
        #expect(try a.results(runID: 1) == b.results(runID: 1))
        #expect(try a.summaries(runID: 1).filter { $0.scope != "check" } == b.summaries(runID: 1).filter { $0.scope != "check" })
    }

    @Test func badInputIsOneLine() throws {
        let dir = try C.tempDir()
        defer { try? FileManager.default.removeItem(at: dir) }
        let db = dir.appendingPathComponent("a.sqlite").path
        try C.expectOneLineError(["sinks", "gpt2-tiny", "--eps", "1.5", "--db", db], mentions: ["--eps"])
        try C.expectOneLineError(["lens", "gpt2-tiny", "--text", "heldout", "--prompts", "topic", "--db", db], mentions: ["--text", "--prompts"])
        try C.expectOneLineError(["norms", "gpt2-tiny", "--context", "4096", "--db", db], mentions: ["--context"])
        try C.expectOneLineError(["norms", "gpt2-tiny", "gpt2-tiny", "--db", db], mentions: ["given twice"])
        #expect(!FileManager.default.fileExists(atPath: db))
    }
}
