import Foundation
import GRDB
import ResultsStore
import Testing

/// The `lnlens` binary as a user runs it: exit codes, one-line errors, stored runs that survive
/// kill -9, and two processes writing one database.
@Suite struct CLITests {
    static let repo = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent()
    static let fixtures = repo.appendingPathComponent("Tests/Fixtures")

    /// The lnlens built next to this test bundle.
    static var binary: URL {
        let candidates = [
            URL(fileURLWithPath: CommandLine.arguments[0]).resolvingSymlinksInPath().deletingLastPathComponent(),
            Bundle.main.bundleURL.deletingLastPathComponent(), Bundle.main.bundleURL,
        ].map { $0.appendingPathComponent("lnlens") }
        return candidates.first { FileManager.default.isExecutableFile(atPath: $0.path) } ?? candidates[0]
    }

    struct Result { let status: Int32; let stdout: String; let stderr: String }

    static func start(_ args: [String], environment extra: [String: String] = [:]) throws -> (Process, Pipe, Pipe) {
        let p = Process()
        p.executableURL = binary
        p.arguments = args
        p.currentDirectoryURL = repo
        var env = ProcessInfo.processInfo.environment
        env["LNLENS_HOME"] = repo.path
        // Run as a Slurm array task only when a test says so (dla would take its shard from these).
        for key in env.keys where key.hasPrefix("SLURM_ARRAY_") { env[key] = nil }
        env.merge(extra) { $1 }
        p.environment = env
        let out = Pipe(), err = Pipe()
        p.standardOutput = out
        p.standardError = err
        try p.run()
        return (p, out, err)
    }

    static func run(_ args: [String], environment: [String: String] = [:]) throws -> Result {
        let (p, out, err) = try start(args, environment: environment)
        let o = out.fileHandleForReading.readDataToEndOfFile(), e = err.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        return Result(status: p.terminationStatus, stdout: String(decoding: o, as: UTF8.self),
                      stderr: String(decoding: e, as: UTF8.self))
    }

    static func tempDir() throws -> URL {
        let d = FileManager.default.temporaryDirectory.appendingPathComponent("lnlens-cli-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: d, withIntermediateDirectories: true)
        return d
    }

    /// Fails the test unless the command failed with exactly one line on stderr containing `needle`.
    static func expectOneLineError(_ args: [String], environment: [String: String] = [:], mentions needles: [String]) throws {
        let r = try run(args, environment: environment)
        let lines = r.stderr.split(separator: "\n", omittingEmptySubsequences: true)
        #expect(r.status != 0, "\(args) exited 0")
        #expect(lines.count == 1, "\(args): stderr was \(r.stderr.debugDescription)")
        for n in needles { #expect(r.stderr.contains(n), "\(args): '\(r.stderr)' does not mention \(n)") }
        #expect(!r.stderr.contains("Fatal error"), "crashed: \(r.stderr)")
    }

    @Test func runJSONOnTheEmbeddedModel() throws {
        let r = try Self.run(["run", "--prompt", "The cat sat on the", "--top-k", "3", "--json"])
        #expect(r.status == 0, "\(r.stderr)")
        let obj = try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: Any]
        #expect((obj?["tokens"] as? [Int]) == [464, 3797, 3332, 319, 262])
        let top = obj?["top"] as? [[String: Any]]
        #expect(top?.count == 3)
        #expect(Set(top?.first?.keys.map { $0 } ?? []) == ["id", "token", "logit", "prob"])
    }

    /// `dla --json` rows on a test checkpoint agree with TransformerLens (the reference fixture).
    @Test func dlaJSONRowsMatchTransformerLens() throws {
        let dir = try Self.tempDir()
        defer { try? FileManager.default.removeItem(at: dir) }
        // The test checkpoint has no tokenizer of its own: give it the GPT-2 one.
        let model = dir.appendingPathComponent("tiny-ln")
        try FileManager.default.createDirectory(at: model, withIntermediateDirectories: true)
        for f in ["config.json", "model.safetensors"] {
            try FileManager.default.copyItem(at: Self.fixtures.appendingPathComponent("models/tiny-ln/\(f)"),
                                             to: model.appendingPathComponent(f))
        }
        for f in ["vocab.json", "merges.txt"] {
            try FileManager.default.copyItem(at: Self.repo.appendingPathComponent("models/tokenizer/\(f)"),
                                             to: model.appendingPathComponent(f))
        }
        // The reference is TransformerLens without BOS (default_prepend_bos False).
        let r = try Self.run(["dla", "--model", model.path, "--no-prepend-bos", "--prompts",
                              Self.fixtures.appendingPathComponent("reference/dla/prompts.jsonl").path,
                              "--db", dir.appendingPathComponent("r.sqlite").path, "--json"])
        #expect(r.status == 0, "\(r.stderr)")
        struct Row: Decodable { let prompt: Int; let component: String; let dla: Double; let direct_effect: Double }
        struct Run: Decodable { let run_id: Int; let ln_mode: String; let nmae_heads_global: Double; let rows: [Row] }
        struct Output: Decodable { let runs: [Run] }
        struct Reference: Decodable { let nmae_heads_global: Double; let rows: [Row] }
        let out = try JSONDecoder().decode(Output.self, from: Data(r.stdout.utf8))
        let ref = try JSONDecoder().decode(Reference.self, from: Data(contentsOf: Self.fixtures.appendingPathComponent("reference/dla/tiny-ln.json")))
        let run = try #require(out.runs.first)
        #expect(run.ln_mode == "layernorm" && run.rows.count == ref.rows.count)
        let got = Dictionary(uniqueKeysWithValues: run.rows.map { ("\($0.prompt)|\($0.component)", $0) })
        var worst = 0.0
        for e in ref.rows {
            let g = try #require(got["\(e.prompt)|\(e.component)"])
            worst = max(worst, abs(g.dla - e.dla), abs(g.direct_effect - e.direct_effect))
        }
        print("dla --json vs TransformerLens: max |diff| \(worst); NMAE \(run.nmae_heads_global) vs \(ref.nmae_heads_global)")
        #expect(worst <= 1e-4)
        #expect(abs(run.nmae_heads_global - ref.nmae_heads_global) <= 0.01)
    }

    @Test func missingFolder() throws {
        try Self.expectOneLineError(["inspect", "/nonexistent/model-folder"], mentions: ["/nonexistent/model-folder"])
    }

    @Test func unknownHubName() throws {
        let cache = try Self.tempDir()
        defer { try? FileManager.default.removeItem(at: cache) }
        // A hub cache holding one other model: the error names the request and what the cache holds.
        let snapshot = cache.appendingPathComponent("models--openai-community--gpt2/snapshots/abc")
        try FileManager.default.createDirectory(at: snapshot, withIntermediateDirectories: true)
        try FileManager.default.createDirectory(at: cache.appendingPathComponent("models--openai-community--gpt2/refs"),
                                                withIntermediateDirectories: true)
        try "abc".write(to: cache.appendingPathComponent("models--openai-community--gpt2/refs/main"), atomically: true,
                        encoding: .utf8)
        let (p, out, err) = try Self.start(["inspect", "someorg/not-a-model"], environment: ["HF_HUB_CACHE": cache.path])
        _ = out.fileHandleForReading.readDataToEndOfFile()
        let stderr = String(decoding: err.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        p.waitUntilExit()
        #expect(p.terminationStatus != 0)
        #expect(stderr.contains("someorg/not-a-model") && stderr.contains("openai-community/gpt2"), "\(stderr)")
        #expect(stderr.split(separator: "\n").count == 1)
    }

    @Test func corruptSafetensors() throws {
        let dir = try Self.tempDir()
        defer { try? FileManager.default.removeItem(at: dir) }
        try FileManager.default.copyItem(at: Self.fixtures.appendingPathComponent("models/tiny-ln/config.json"),
                                         to: dir.appendingPathComponent("config.json"))
        // A header length far beyond the file.
        var bytes = [UInt8](repeating: 0, count: 16)
        bytes[0] = 0xFF; bytes[1] = 0xFF; bytes[2] = 0xFF
        try Data(bytes).write(to: dir.appendingPathComponent("model.safetensors"))
        try Self.expectOneLineError(["inspect", dir.path], mentions: ["model.safetensors"])
        // Truncated: the real file cut in half.
        let real = try Data(contentsOf: Self.fixtures.appendingPathComponent("models/tiny-ln/model.safetensors"))
        try real.prefix(real.count / 2).write(to: dir.appendingPathComponent("model.safetensors"))
        try Self.expectOneLineError(["run", dir.path, "--prompt", "hi"], mentions: ["model.safetensors"])
    }

    @Test func configMissingKey() throws {
        let dir = try Self.tempDir()
        defer { try? FileManager.default.removeItem(at: dir) }
        var config = try JSONSerialization.jsonObject(
            with: Data(contentsOf: Self.fixtures.appendingPathComponent("models/tiny-ln/config.json"))) as! [String: Any]
        config.removeValue(forKey: "n_embd")
        try JSONSerialization.data(withJSONObject: config).write(to: dir.appendingPathComponent("config.json"))
        try FileManager.default.copyItem(at: Self.fixtures.appendingPathComponent("models/tiny-ln/model.safetensors"),
                                         to: dir.appendingPathComponent("model.safetensors"))
        try Self.expectOneLineError(["inspect", dir.path], mentions: ["config.json", "n_embd"])
    }

    @Test func promptLongerThanContextAndEmptyPrompt() throws {
        let long = String(repeating: "word ", count: 300)  // the embedded model's n_positions is 256
        try Self.expectOneLineError(["run", "--prompt", long], mentions: ["n_positions"])
        try Self.expectOneLineError(["run", "--prompt", ""], mentions: ["empty"])
    }

    @Test func unknownHookPattern() throws {
        let out = try Self.tempDir()
        defer { try? FileManager.default.removeItem(at: out) }
        try Self.expectOneLineError(
            ["run", "--prompt", "hello", "--cache", out.appendingPathComponent("c.safetensors").path,
             "--hooks", "blocks.*.hook_nothing"], mentions: ["blocks.*.hook_nothing"])
    }

    @Test func invalidPromptLineNamesTheLine() throws {
        let dir = try Self.tempDir()
        defer { try? FileManager.default.removeItem(at: dir) }
        let file = dir.appendingPathComponent("p.jsonl")
        try """
            {"prompt": "When Mary and John went to the store, John gave a drink to", "answer": " Mary", "wrong": " John"}
            {"prompt": "When Mary and John went to the store, John gave a drink to", "answer": " Mariana Smith", "wrong": " John"}
            """.write(to: file, atomically: true, encoding: .utf8)
        let db = dir.appendingPathComponent("r.sqlite").path
        try Self.expectOneLineError(["dla", "--prompts", file.path, "--db", db], mentions: [":2:", "--skip-invalid"])
        let ok = try Self.run(["dla", "--prompts", file.path, "--db", db, "--skip-invalid", "--model", "gpt2-tiny", "--json"])
        #expect(ok.status == 0, "\(ok.stderr)")
    }

    @Test func badDLAOptionsAndForeignDatabase() throws {
        let dir = try Self.tempDir()
        defer { try? FileManager.default.removeItem(at: dir) }
        let db = dir.appendingPathComponent("r.sqlite").path
        try Self.expectOneLineError(["dla", "--prompts", "prompts/ioi.jsonl", "--db", db, "--top", "-1"], mentions: ["--top"])
        try Self.expectOneLineError(["dla", "--text", "prompts/pride-and-prejudice.txt", "--prepend-bos", "--db", db],
                                    mentions: ["--prepend-bos"])
        // Another program's SQLite file is never written into.
        let foreign = dir.appendingPathComponent("other.sqlite").path
        try DatabaseQueue(path: foreign).write { try $0.execute(sql: "CREATE TABLE foo (a); INSERT INTO foo VALUES (1)") }
        try Self.expectOneLineError(["dla", "--prompts", "prompts/ioi.jsonl", "--db", foreign, "--model", "gpt2-tiny"],
                                    mentions: ["another program's", "--db"])
        let tables = try DatabaseQueue(path: foreign).read { try String.fetchAll($0, sql: "SELECT name FROM sqlite_master") }
        #expect(tables == ["foo"])
    }

    @Test func queryNeverWrites() throws {
        let dir = try Self.tempDir()
        defer { try? FileManager.default.removeItem(at: dir) }
        let db = dir.appendingPathComponent("r.sqlite").path
        #expect(try Self.run(["dla", "--prompts", "prompts/ioi.jsonl", "--db", db, "--model", "gpt2-tiny"]).status == 0)
        try Self.expectOneLineError(["query", "--db", db, "--sql", "DELETE FROM results"], mentions: ["never writes"])
        try Self.expectOneLineError(["query", "--db", dir.appendingPathComponent("missing.sqlite").path, "nmae"],
                                    mentions: ["missing.sqlite"])
        #expect(!FileManager.default.fileExists(atPath: dir.appendingPathComponent("missing.sqlite").path))
        let rows = try ResultsDatabase.openReadOnly(path: db).results(runID: 1)
        #expect(rows.count == 200 * (2 + 4 * 6) * 2 + 200 + 200 * 2)  // dla + DE per component, the sum check, clean and corrupt metric
    }

    /// kill -9 in the middle of a run; --resume ends with exactly the rows of an uninterrupted run.
    @Test func killedRunResumesToTheSameRows() throws {
        let dir = try Self.tempDir()
        defer { try? FileManager.default.removeItem(at: dir) }
        let args = ["dla", "--model", "gpt2-tiny", "--prompts", "prompts/paper_ioi.jsonl", "--batch-size", "1",
                    "--chunk-size", "1"]
        let full = dir.appendingPathComponent("full.sqlite").path
        #expect(try Self.run(args + ["--db", full]).status == 0)

        let killed = dir.appendingPathComponent("killed.sqlite").path
        let (p, _, _) = try Self.start(args + ["--db", killed])
        var stored = 0
        let deadline = Date().addingTimeInterval(60)
        while Date() < deadline && p.isRunning {
            if FileManager.default.fileExists(atPath: killed),
               let db = try? ResultsDatabase.openReadOnly(path: killed),
               let n = try? db.completedPromptIndices(runID: 1).count, n >= 5 {
                stored = n
                break
            }
            Thread.sleep(forTimeInterval: 0.005)
        }
        #expect(p.isRunning, "the run finished before it could be killed")
        kill(p.processIdentifier, SIGKILL)
        p.waitUntilExit()
        let before = try ResultsDatabase.openReadOnly(path: killed)
        let status = try before.run(id: 1)?.status
        #expect(status == .running)
        let storedAfterKill = try before.completedPromptIndices(runID: 1).count
        #expect(stored >= 5 && storedAfterKill < 480)

        let resumed = try Self.run(args + ["--db", killed, "--resume", "1"])
        #expect(resumed.status == 0, "\(resumed.stderr)")
        let a = try ResultsDatabase.openReadOnly(path: full), b = try ResultsDatabase.openReadOnly(path: killed)
        #expect(try b.run(id: 1)?.status == .completed)
        #expect(try a.results(runID: 1) == b.results(runID: 1))
        #expect(try a.summaries(runID: 1) == b.summaries(runID: 1))
        #expect(try a.prompts(runID: 1) == b.prompts(runID: 1))
    }

    /// Two processes writing one database at once lose nothing.
    @Test func twoProcessesWriteOneDatabase() throws {
        let dir = try Self.tempDir()
        defer { try? FileManager.default.removeItem(at: dir) }
        let db = dir.appendingPathComponent("shared.sqlite").path
        let common = ["dla", "--prompts", "prompts/ioi.jsonl", "--db", db, "--chunk-size", "4"]
        let (p1, o1, e1) = try Self.start(common + ["--model", "gpt2-tiny"])
        let (p2, o2, e2) = try Self.start(common + ["--model", "gpt2-tiny-lnfree"])
        for (p, o, e) in [(p1, o1, e1), (p2, o2, e2)] {
            _ = o.fileHandleForReading.readDataToEndOfFile()
            let err = String(decoding: e.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
            p.waitUntilExit()
            #expect(p.terminationStatus == 0, "\(err)")
        }
        let store = try ResultsDatabase.openReadOnly(path: db)
        let runs = try store.runs()
        #expect(runs.count == 2 && runs.allSatisfy { $0.status == .completed })
        for run in runs {
            #expect(try store.results(runID: run.id!).count == 200 * (2 + 4 * 6) * 2 + 200 + 200 * 2)
        }
        let diff = try Self.run(["diff", "\(runs[0].id!)", "\(runs[1].id!)", "--db", db, "--json"])
        #expect(diff.status == 0, "\(diff.stderr)")
    }

    /// Two shards (one from --shard, one from Slurm's array variables) merged by the binary equal
    /// one unsharded run, and read back like it; bad shards are one-line errors.
    @Test func shardedDLAMergedEqualsOneRun() throws {
        let dir = try Self.tempDir()
        defer { try? FileManager.default.removeItem(at: dir) }
        func path(_ name: String) -> String { dir.appendingPathComponent(name).path }
        // One prompt per batch: every prompt's numbers are then the same in any shard.
        let common = ["dla", "--prompts", "prompts/ioi.jsonl", "--batch-size", "1"]
        let full = try Self.run(common + ["--db", path("full.sqlite")])
        #expect(full.status == 0, "\(full.stderr)")
        let s0 = try Self.run(common + ["--shard", "0/2", "--db", path("s0.sqlite")])
        #expect(s0.status == 0 && s0.stdout.contains("as shard 0/2"), "\(s0.stderr)")
        let s1 = try Self.run(common + ["--db", path("s1.sqlite")],
                              environment: ["SLURM_ARRAY_TASK_ID": "2", "SLURM_ARRAY_TASK_MIN": "1", "SLURM_ARRAY_TASK_COUNT": "2"])
        #expect(s1.status == 0 && s1.stderr.contains("shard 1/2 from SLURM_ARRAY_TASK_ID=2"), "\(s1.stderr)")

        let out = path("merged.sqlite")
        let merged = try Self.run(["merge", out, path("s1.sqlite"), path("s0.sqlite")])
        #expect(merged.status == 0, "\(merged.stderr)")
        #expect(merged.stdout.contains("merged 2 shards of dla gpt2-tiny (layernorm) into run 1"), "\(merged.stdout)")
        #expect(merged.stdout.contains("merged 2 shards of dla gpt2-tiny-lnfree (ln-free) into run 2"), "\(merged.stdout)")
        let again = try Self.run(["merge", out, path("s0.sqlite"), path("s1.sqlite")])
        #expect(again.status == 0 && again.stdout.contains("already merged: run 1"), "\(again.stdout)")

        let a = try ResultsDatabase.openReadOnly(path: path("full.sqlite")), b = try ResultsDatabase.openReadOnly(path: out)
        #expect(try b.runs().count == 2)
        for id in [Int64(1), 2] {
            #expect(try a.results(runID: id) == b.results(runID: id), "run \(id)")
            #expect(try a.summaries(runID: id) == b.summaries(runID: id), "run \(id)")
            #expect(try a.prompts(runID: id) == b.prompts(runID: id), "run \(id)")
            #expect(try b.shards(runID: id).count == 2)
        }
        // Read back with the same commands as an unsharded run.
        for args in [["query", "nmae", "--csv"], ["query", "top-heads", "1", "--csv"], ["diff", "1", "2", "--json"]] {
            let x = try Self.run(args + ["--db", path("full.sqlite")]), y = try Self.run(args + ["--db", out])
            #expect(x.status == 0 && y.status == 0, "\(args): \(y.stderr)")
            if args[0] == "query" { #expect(x.stdout == y.stdout, "\(args)") }
        }

        try Self.expectOneLineError(common + ["--shard", "2/2", "--db", path("x.sqlite")], mentions: ["--shard 2/2"])
        try Self.expectOneLineError(common + ["--shard", "half", "--db", path("x.sqlite")], mentions: ["--shard half"])
        try Self.expectOneLineError(common + ["--db", path("x.sqlite")], environment: ["SLURM_ARRAY_TASK_ID": "x", "SLURM_ARRAY_TASK_COUNT": "2"],
                                    mentions: ["SLURM_ARRAY_TASK_ID=x"])
        #expect(!FileManager.default.fileExists(atPath: path("x.sqlite")))
        try Self.expectOneLineError(["merge", path("m2.sqlite"), path("s0.sqlite")], mentions: ["shard 1/2", "missing"])
        try Self.expectOneLineError(["merge", path("m2.sqlite"), path("s0.sqlite"), path("none.sqlite")], mentions: [path("none.sqlite")])
        try Self.expectOneLineError(["merge", path("m2.sqlite")], mentions: ["SHARD.sqlite"])
        try Self.expectOneLineError(["merge", path("m2.sqlite"), path("s0.sqlite"), path("full.sqlite")],
                                    mentions: [path("full.sqlite"), "no sharded run"])
        #expect(!FileManager.default.fileExists(atPath: path("m2.sqlite")))
    }
}
