import Foundation
import ResultsStore
import Testing

/// `lnlens patch` through the binary: the JSON shape, bad input, interruption and resume,
/// concurrent writers, diff of an LN model against its LN-free twin.
@Suite struct PatchCLITests {
    typealias C = CLITests

    /// Eight pairs from the shipped IOI set (two lengths).
    static func prompts(in dir: URL) throws -> String {
        let lines = try String(contentsOf: C.repo.appendingPathComponent("prompts/ioi.jsonl"), encoding: .utf8)
            .split(separator: "\n").prefix(8)
        let file = dir.appendingPathComponent("pairs.jsonl")
        try (lines.joined(separator: "\n") + "\n").write(to: file, atomically: true, encoding: .utf8)
        return file.path
    }

    @Test func jsonHasTheDocumentedShape() throws {
        let dir = try C.tempDir()
        defer { try? FileManager.default.removeItem(at: dir) }
        let r = try C.run(["patch", "--prompts", try Self.prompts(in: dir), "--db", dir.appendingPathComponent("r.sqlite").path,
                           "--sites", "resid_pre,z,pattern_by_pos", "--methods", "activation,atp,atp-star", "--json"])
        #expect(r.status == 0, "\(r.stderr)")
        let object = try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as! [String: Any]
        let runs = object["runs"] as! [[String: Any]]
        #expect(runs.count == 2)
        for run in runs {
            #expect(Set(run.keys) == ["run_id", "model", "model_name", "ln_mode", "direction", "task", "prompts", "errors", "rows"])
            let task = run["task"] as! [String: Any]
            #expect(Set(task.keys) == ["prompts", "mean_clean", "fraction_correct", "mean_abs_gap", "median_abs_gap", "min_gap",
                                       "small_gap_prompts", "small_gap_gaps", "passed"])
            #expect(run["direction"] as? String == "denoise")
            let prompts = run["prompts"] as! [[String: Any]]
            #expect(prompts.count == 8 && Set(prompts[0].keys) == ["prompt", "clean_metric", "corrupt_metric"])
            let errors = run["errors"] as! [String: [String: [String: Any]]]
            #expect(Set(errors.keys) == ["resid_pre", "z", "pattern_by_pos"])
            #expect(Set(errors["z"]!.keys) == ["atp", "atp_star"])
            #expect(Set(errors["z"]!["atp"]!.keys) == ["nmae", "pearson", "spearman", "sign_agreement", "topk_recall_10", "topk_recall_5pct"])
            let rows = run["rows"] as! [[String: Any]]
            let resid = rows.first { $0["site"] as? String == "resid_pre" }!
            #expect(Set(resid.keys) == ["prompt", "site", "layer", "pos", "head", "activation", "atp", "atp_star"])
            #expect(resid["head"] is NSNull && resid["pos"] is Int)
            let z = rows.first { $0["site"] as? String == "z" }!
            #expect(z["pos"] is NSNull && z["head"] is Int)
        }
        // Without atp-star, rows have no atp_star key.
        let plain = try C.run(["patch", "--model", "gpt2-tiny", "--prompts", try Self.prompts(in: dir),
                               "--db", dir.appendingPathComponent("s.sqlite").path, "--sites", "mlp_out", "--json"])
        let row = (((try JSONSerialization.jsonObject(with: Data(plain.stdout.utf8)) as! [String: Any])["runs"] as! [[String: Any]])[0]["rows"]
                   as! [[String: Any]])[0]
        #expect(!row.keys.contains("atp_star"))
    }

    /// A prompt set with zero-gap prompts (corrupt = prompt): the task check names them, they
    /// leave the errors and grids, and the model failing the task gets one warning line.
    @Test func zeroGapPromptsAreNamedAndLeftOut() throws {
        let dir = try C.tempDir()
        defer { try? FileManager.default.removeItem(at: dir) }
        let lines = try String(contentsOf: C.repo.appendingPathComponent("prompts/ioi.jsonl"), encoding: .utf8)
            .split(separator: "\n").prefix(4).enumerated().map { i, line -> String in
                guard i % 2 == 1 else { return String(line) }
                var object = try! JSONSerialization.jsonObject(with: Data(line.utf8)) as! [String: Any]
                object["corrupt"] = object["prompt"]
                return String(decoding: try! JSONSerialization.data(withJSONObject: object), as: UTF8.self)
            }
        let file = dir.appendingPathComponent("zero.jsonl")
        try (lines.joined(separator: "\n") + "\n").write(to: file, atomically: true, encoding: .utf8)
        let db = dir.appendingPathComponent("r.sqlite").path
        let args = ["patch", "--model", "gpt2-tiny", "--prompts", file.path, "--db", db, "--sites", "resid_pre", "--min-gap", "0.0001"]
        let r = try C.run(args)
        #expect(r.status == 0, "\(r.stderr)")
        #expect(r.stdout.contains("2 of 4 prompts below --min-gap 0.0001 (1, 3)"), "\(r.stdout)")
        #expect(r.stdout.contains("2 prompts below --min-gap left out"), "\(r.stdout)")
        #expect(r.stderr.split(separator: "\n").count == 1 && r.stderr.contains("gpt2-tiny does not do this task"), "\(r.stderr)")
        let json = try C.run(args + ["--json"])
        let run = ((try JSONSerialization.jsonObject(with: Data(json.stdout.utf8)) as! [String: Any])["runs"] as! [[String: Any]])[0]
        let task = run["task"] as! [String: Any]
        #expect(task["small_gap_prompts"] as? [Int] == [1, 3] && task["passed"] as? Bool == false && task["prompts"] as? Int == 4)
        try C.expectOneLineError(args + ["--min-gap", "-1"], mentions: ["--min-gap"])
        try C.expectOneLineError(["dla", "--prompts", file.path, "--db", db, "--bootstrap", "sideways"], mentions: ["--bootstrap", "crossed"])
        try C.expectOneLineError(["dla", "--prompts", file.path, "--db", db, "--min-gap", "nan"], mentions: ["--min-gap"])
    }

    @Test func badInputIsOneLine() throws {
        let dir = try C.tempDir()
        defer { try? FileManager.default.removeItem(at: dir) }
        let db = dir.appendingPathComponent("r.sqlite").path
        let noCorrupt = dir.appendingPathComponent("nc.jsonl")
        try #"{"prompt": "When Mary and John went to the store, John gave a drink to", "answer": " Mary", "wrong": " John"}"#
            .write(to: noCorrupt, atomically: true, encoding: .utf8)
        try C.expectOneLineError(["patch", "--prompts", noCorrupt.path, "--db", db], mentions: ["nc.jsonl:1", "\"corrupt\""])
        try C.expectOneLineError(["patch", "--prompts", "ioi", "--db", db, "--sites", "resid_pre,attn"], mentions: ["--sites", "attn"])
        try C.expectOneLineError(["patch", "--prompts", "ioi", "--db", db, "--methods", "atp"], mentions: ["--methods", "activation"])
        try C.expectOneLineError(["patch", "--prompts", "ioi", "--db", db, "--direction", "sideways"], mentions: ["--direction"])
        try C.expectOneLineError(["patch", "--prompts", "ioi", "--db", db, "--grid-normalize", "x"], mentions: ["--grid-normalize"])
        let noRuns = try !FileManager.default.fileExists(atPath: db) || ResultsDatabase.openReadOnly(path: db).runs().isEmpty
        #expect(noRuns)
    }

    /// kill -9 mid-run, then --resume: the rows and errors of an uninterrupted run.
    @Test func killedPatchRunResumesToTheSameRows() throws {
        let dir = try C.tempDir()
        defer { try? FileManager.default.removeItem(at: dir) }
        let args = ["patch", "--model", "gpt2-tiny", "--prompts", "prompts/ioi.jsonl", "--sites", "resid_pre,z",
                    "--batch-size", "1", "--chunk-size", "1"]
        let full = dir.appendingPathComponent("full.sqlite").path
        #expect(try C.run(args + ["--db", full]).status == 0)
        let killed = dir.appendingPathComponent("killed.sqlite").path
        let (p, _, _) = try C.start(args + ["--db", killed])
        let deadline = Date().addingTimeInterval(60)
        while Date() < deadline, p.isRunning {
            if let db = try? ResultsDatabase.openReadOnly(path: killed), let n = try? db.completedPromptIndices(runID: 1).count, n >= 3 { break }
            Thread.sleep(forTimeInterval: 0.005)
        }
        #expect(p.isRunning, "the run finished before it could be killed")
        kill(p.processIdentifier, SIGKILL)
        p.waitUntilExit()
        #expect(try ResultsDatabase.openReadOnly(path: killed).run(id: 1)?.status == .running)
        let resumed = try C.run(args + ["--db", killed, "--resume", "1"])
        #expect(resumed.status == 0, "\(resumed.stderr)")
        let a = try ResultsDatabase.openReadOnly(path: full), b = try ResultsDatabase.openReadOnly(path: killed)
        #expect(try b.run(id: 1)?.status == .completed)
        #expect(try a.results(runID: 1) == b.results(runID: 1))
        #expect(try a.estimatorErrors(runID: 1) == b.estimatorErrors(runID: 1))
        #expect(try a.prompts(runID: 1) == b.prompts(runID: 1))
    }

    /// Two patch processes on one database, and diff of the LN model against its LN-free twin.
    @Test func twoWritersAndDiff() throws {
        let dir = try C.tempDir()
        defer { try? FileManager.default.removeItem(at: dir) }
        let db = dir.appendingPathComponent("r.sqlite").path
        let prompts = try Self.prompts(in: dir)
        let starts = try ["gpt2-tiny", "gpt2-tiny-lnfree"].map {
            try C.start(["patch", "--model", $0, "--prompts", prompts, "--db", db, "--sites", "resid_pre,attn_out", "--chunk-size", "2",
                         "--min-gap", "0"])
        }
        for (p, o, e) in starts {
            _ = o.fileHandleForReading.readDataToEndOfFile()
            let err = String(decoding: e.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
            p.waitUntilExit()
            #expect(p.terminationStatus == 0, "\(err)")
        }
        let store = try ResultsDatabase.openReadOnly(path: db)
        #expect(try store.runs().allSatisfy { $0.status == .completed })
        let diff = try C.run(["diff", "1", "2", "--db", db])
        #expect(diff.status == 0, "\(diff.stderr)")
        #expect(diff.stdout.contains("AtP NMAE"), "\(diff.stdout)")
        // The embedded models do not do IOI: diff says so beside its verdict, and warns once.
        #expect(diff.stdout.contains("task check A: FAILED") && diff.stdout.contains("not a finding: a task check failed"), "\(diff.stdout)")
        #expect(diff.stderr.split(separator: "\n").count == 1 && diff.stderr.contains("runs A and B failed their task checks"), "\(diff.stderr)")
        let json = try C.run(["diff", "1", "2", "--db", db, "--json"])
        #expect(json.status == 0 && json.stdout.contains("\"entries\""))
        try C.expectOneLineError(["diff", "1", "3", "--db", db], mentions: ["no run 3"])
    }
}
