import Foundation
import Testing

/// `report` and `plot` as a user runs them.
@Suite struct ReportCLITests {
    /// A database with a dla run of each embedded model on three IOI prompts (runs 1 and 2).
    static func database() throws -> (dir: URL, db: String) {
        let dir = try CLITests.tempDir()
        let prompts = dir.appendingPathComponent("p.jsonl")
        let lines = try String(contentsOf: CLITests.repo.appendingPathComponent("prompts/ioi.jsonl"), encoding: .utf8)
            .split(separator: "\n").prefix(3)
        try (lines.joined(separator: "\n") + "\n").write(to: prompts, atomically: true, encoding: .utf8)
        let db = dir.appendingPathComponent("r.sqlite").path
        let r = try CLITests.run(["dla", "--prompts", prompts.path, "--db", db])
        #expect(r.status == 0, "\(r.stderr)")
        // stderr is not a terminal here: no progress line, nothing but the task check's warning
        // (the embedded models do not do IOI).
        #expect(r.stderr.split(separator: "\n").allSatisfy { $0.contains("does not do this task") }, "\(r.stderr.debugDescription)")
        return (dir, db)
    }

    @Test func reportAndPlotWriteFilesAndRefuseBadOutputs() throws {
        let (dir, db) = try Self.database()
        defer { try? FileManager.default.removeItem(at: dir) }
        let out = dir.appendingPathComponent("report.html").path
        let r = try CLITests.run(["report", "1", "2", "--db", db, "--out", out])
        #expect(r.status == 0, "\(r.stderr)")
        #expect(r.stdout == "wrote \(out) (runs 1, 2)\n")
        let html = try String(contentsOfFile: out, encoding: .utf8)
        #expect(html.hasPrefix("<!DOCTYPE html>") && html.contains("<svg") && !html.contains("http"))
        #expect(html.contains("gpt2-tiny · layernorm · p.jsonl · run 1") && html.contains("gpt2-tiny-lnfree · ln-free · p.jsonl · run 2"))
        // No temporary file left behind.
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir.path).sorted() == ["p.jsonl", "r.sqlite", "r.sqlite-shm", "r.sqlite-wal", "report.html"].filter {
            FileManager.default.fileExists(atPath: dir.appendingPathComponent($0).path)
        })

        try CLITests.expectOneLineError(["report", "1", "--db", db, "--out", out], mentions: ["already exists", "--force"])
        #expect(try CLITests.run(["report", "1", "--db", db, "--out", out, "--force"]).status == 0)
        try CLITests.expectOneLineError(["report", "1", "--db", db, "--out", db, "--force"], mentions: ["never overwrites an input"])
        try CLITests.expectOneLineError(["report", "1", "--db", db, "--out", dir.appendingPathComponent("no/such/r.html").path],
                                        mentions: ["does not exist"])
        try CLITests.expectOneLineError(["report", "9", "--db", db, "--out", dir.appendingPathComponent("x.html").path],
                                        mentions: ["no run 9"])
        try CLITests.expectOneLineError(["report", "1", "1", "--db", db, "--out", dir.appendingPathComponent("x.html").path],
                                        mentions: ["given twice"])
        try CLITests.expectOneLineError(["report", "--db", db, "--out", dir.appendingPathComponent("x.html").path],
                                        mentions: ["RUN_ID"])
        try CLITests.expectOneLineError(["report", "1", "--db", db], mentions: ["--out"])
        try CLITests.expectOneLineError(["report", "1", "--db", dir.appendingPathComponent("none.sqlite").path, "--out",
                                         dir.appendingPathComponent("x.html").path], mentions: ["no results database"])
        #expect(!FileManager.default.fileExists(atPath: dir.appendingPathComponent("x.html").path))

        let svg = dir.appendingPathComponent("heads.svg").path
        let p = try CLITests.run(["plot", "head-nmae", "1", "2", "--db", db, "--svg", svg])
        #expect(p.status == 0, "\(p.stderr)")
        let text = try String(contentsOfFile: svg, encoding: .utf8)
        #expect(text.hasPrefix("<?xml") && text.contains("xmlns=\"http://www.w3.org/2000/svg\"") && text.contains("L3H3: NMAE"))
        for kind in ["layer-nmae", "dla-scatter"] {
            #expect(try CLITests.run(["plot", kind, "1", "2", "--db", db, "--svg", dir.appendingPathComponent("\(kind).svg").path]).status == 0)
        }
        try CLITests.expectOneLineError(["plot", "heatmap", "1", "--db", db, "--svg", svg], mentions: ["unknown figure 'heatmap'", "head-nmae"])
        try CLITests.expectOneLineError(["plot", "patch-map", "1", "--db", db, "--svg", dir.appendingPathComponent("m.svg").path],
                                        mentions: ["patch-map draws patch runs; run 1 is a dla run"])
        try CLITests.expectOneLineError(["plot", "loss", "2", "--db", db, "--svg", dir.appendingPathComponent("m.svg").path],
                                        mentions: ["run 2 is a dla run"])
        #expect(!FileManager.default.fileExists(atPath: dir.appendingPathComponent("m.svg").path))
        // plot writes SVG only: another extension is refused before anything is written.
        let png = dir.appendingPathComponent("heads.png").path
        try CLITests.expectOneLineError(["plot", "head-nmae", "1", "--db", db, "--svg", png], mentions: ["--svg \(png)", "ending in .svg"])
        #expect(!FileManager.default.fileExists(atPath: png))
        try CLITests.expectOneLineError(["plot", "head-nmae", "1", "--db", db, "--svg", svg, "--force", "--templates", "-1"],
                                        mentions: ["--templates -1"])
    }
}
