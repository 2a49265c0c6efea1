import Foundation
import Testing

/// Exit statuses are the same for one kind of error in every command (README, "Exit codes"):
/// 64 for a usage error whether the parser, `validate()` or the command after reading its input
/// finds it, 1 for a failure; named queries are subcommands of `query`, their options before or
/// after the name.
@Suite struct ExitCodeTests {
    typealias C = CLITests

    @Test func usageErrorsExit64FailuresExit1() throws {
        let dir = try C.tempDir()
        defer { try? FileManager.default.removeItem(at: dir) }
        let db = dir.appendingPathComponent("r.sqlite").path
        let usage: [[String]] = [
            ["dla", "--batch-size", "0", "--prompts", "ioi"],                                              // validate()
            ["run", "--prompt", "hi", "--metric", "logit", "--answer", " Mariana Smith"],                    // after reading the model
            ["query", "--db", db, "no-such-query"],                                                        // the parser
            ["query", "nmae", "--sql", "SELECT 1", "--db", db],                                            // both
            ["query", "--db", db],                                                                         // neither
        ]
        for args in usage {
            let r = try C.run(args)
            #expect(r.status == 64, "\(args): \(r.status) \(r.stderr)")
            #expect(r.stderr.split(separator: "\n").count == 1, "\(args): \(r.stderr)")
        }
        for args in [["inspect", "/nonexistent/model-folder"], ["query", "top-heads", "1", "--db", dir.appendingPathComponent("missing.sqlite").path]] {
            let r = try C.run(args)
            #expect(r.status == 1, "\(args): \(r.status) \(r.stderr)")
        }
    }

    @Test func namedQueryOptionsBeforeOrAfterTheName() throws {
        let dir = try C.tempDir()
        defer { try? FileManager.default.removeItem(at: dir) }
        let db = dir.appendingPathComponent("r.sqlite").path
        let prompts = try ConventionsTests.prompts(3, in: dir)
        #expect(try C.run(["dla", "--model", "gpt2-tiny", "--prompts", prompts, "--db", db]).status == 0)
        for (before, after) in [(["query", "--db", db, "--csv", "nmae"], ["query", "nmae", "--db", db, "--csv"]),
                                (["query", "--db", db, "top-heads", "1", "--limit", "3"], ["query", "top-heads", "1", "--limit", "3", "--db", db])] {
            let a = try C.run(before), b = try C.run(after)
            #expect(a.status == 0 && b.status == 0, "\(a.stderr) \(b.stderr)")
            #expect(a.stdout == b.stdout && !a.stdout.isEmpty)
        }
        let top = try C.run(["query", "top-heads", "1", "--limit", "3", "--db", db, "--csv"])
        #expect(top.stdout.split(separator: "\n").count == 4, "\(top.stdout)")
    }
}
