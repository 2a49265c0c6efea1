import Foundation
import GRDB
import ResultsStore
import Testing

/// `lnlens patch --freeze` / `--decompose` through the binary: what is stored, the printed table,
/// bad input, and `freeze` in the same-computation check of --resume.
@Suite struct FreezeCLITests {
    typealias C = CLITests

    @Test func decomposeStoresEveryVariantAndPrintsTheTable() throws {
        let dir = try C.tempDir()
        defer { try? FileManager.default.removeItem(at: dir) }
        let db = dir.appendingPathComponent("r.sqlite").path
        let r = try C.run(["patch", "--prompts", try PatchCLITests.prompts(in: dir), "--db", db,
                           "--sites", "resid_pre,q", "--decompose", "--min-gap", "0"])
        #expect(r.status == 0, "\(r.stderr)")
        #expect(r.stdout.contains("which nonlinearity breaks AtP"))
        let table = r.stdout.split(separator: "\n").filter { $0.hasPrefix("  resid_pre ") || $0.hasPrefix("  q ") }
        #expect(table.count == 2 && table.allSatisfy { $0.contains("gpt2-tiny (layernorm)") }, "\(r.stdout)")
        #expect(r.stdout.contains("gpt2-tiny-lnfree (ln-free)"))
        let queue = try DatabaseQueue(path: db)
        let (quantities, methods, options, inert, frozen) = try queue.read { db in
            (Set(try String.fetchAll(db, sql: "SELECT DISTINCT quantity FROM results WHERE site <> 'metric'")),
             Set(try String.fetchAll(db, sql: "SELECT DISTINCT method FROM estimator_errors")),
             try String.fetchOne(db, sql: "SELECT options_json FROM runs WHERE id = 1") ?? "",
             try Double.fetchOne(db, sql: "SELECT max(abs(value)) FROM results WHERE site = 'q' AND quantity LIKE '%@freeze=attention'"),
             try Double.fetchOne(db, sql: """
                SELECT max(abs(a.value - b.value)) FROM results a JOIN results b ON a.run_id = b.run_id
                AND a.prompt_index = b.prompt_index AND a.site = b.site AND a.layer = b.layer AND a.position IS b.position
                AND a.head IS b.head WHERE a.quantity = 'activation@freeze=all' AND b.quantity = 'atp@freeze=all'
                """))
        }
        let variants = ["attention", "mlp", "ln", "all"]
        #expect(quantities == Set(["activation", "atp"] + variants.flatMap { ["activation@freeze=\($0)", "atp@freeze=\($0)"] }))
        #expect(methods == Set(["atp"] + variants.map { "atp@freeze=\($0)" }))
        #expect(options.contains(#""freeze":"none;attention;mlp;ln;all""#), "\(options)")
        // q with frozen patterns changes nothing, and AtP says so; fully frozen, AtP is activation patching.
        #expect(inert == 0)
        #expect(try #require(frozen) < 1e-5)
        // diff prints the table for both runs; report draws one bar per site, variant and run.
        let diff = try C.run(["diff", "1", "2", "--db", db])
        #expect(diff.status == 0 && diff.stdout.contains("which nonlinearity breaks AtP"), "\(diff.stderr)")
        #expect(diff.stdout.split(separator: "\n").filter { $0.contains("A: run 1") || $0.contains("B: run 2") }.count >= 4)
        let out = dir.appendingPathComponent("report.html").path
        let report = try C.run(["report", "1", "2", "--db", db, "--out", out])
        #expect(report.status == 0, "\(report.stderr)")
        let html = try String(contentsOfFile: out, encoding: .utf8)
        #expect(html.contains("Which nonlinearity breaks AtP"))
        #expect(html.components(separatedBy: ": AtP NMAE ").count - 1 == 2 * 2 * 5)
    }

    @Test func badFreezeOptionsAreOneLineErrors() throws {
        let dir = try C.tempDir()
        defer { try? FileManager.default.removeItem(at: dir) }
        let base = ["patch", "--prompts", try PatchCLITests.prompts(in: dir), "--db", dir.appendingPathComponent("r.sqlite").path]
        try C.expectOneLineError(base + ["--freeze", "softmax"], mentions: ["--freeze softmax", "attention, mlp, ln, all"])
        try C.expectOneLineError(base + ["--freeze", "mlp", "--decompose"], mentions: ["--freeze and --decompose"])
        try C.expectOneLineError(base + ["--freeze", "attention", "--methods", "activation,atp,atp-star"],
                                 mentions: ["--freeze", "AtP*", "--methods activation,atp"])
        try C.expectOneLineError(base + ["--decompose", "--methods", "activation"], mentions: ["--decompose", "atp"])
        #expect(!FileManager.default.fileExists(atPath: dir.appendingPathComponent("r.sqlite").path))
    }

    @Test func resumeComparesTheFrozenParts() throws {
        let dir = try C.tempDir()
        defer { try? FileManager.default.removeItem(at: dir) }
        let args = ["patch", "--model", "gpt2-tiny", "--prompts", try PatchCLITests.prompts(in: dir),
                    "--db", dir.appendingPathComponent("r.sqlite").path, "--sites", "mlp_out"]
        let first = try C.run(args + ["--freeze", "ln,attention"])
        #expect(first.status == 0, "\(first.stderr)")
        try C.expectOneLineError(args + ["--freeze", "mlp", "--resume", "1"], mentions: ["cannot resume run 1", "freeze"])
        let again = try C.run(args + ["--freeze", "attention,ln", "--resume", "1"])
        #expect(again.status == 0, "\(again.stderr)")
    }
}
