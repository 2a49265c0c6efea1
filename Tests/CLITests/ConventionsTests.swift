import Foundation
import GRDB
import ResultsStore
import Support
import Testing

@testable import lnlens

/// The conventions a Python user expects (issue 17, item 6), through the binary: snake_case JSON
/// keys, rows keyed as the database keys them, NMAE printed with its magnitude, BOS by default
/// in `dla` and `patch`, and runs recorded before schema v3 (options as strings) still resumed
/// with the same options and refused with others.
@Suite struct ConventionsTests {
    typealias C = CLITests

    /// The first `n` prompts of the shipped topic set (a task the embedded models do).
    static func prompts(_ n: Int, in dir: URL) throws -> String {
        let lines = try String(contentsOf: C.repo.appendingPathComponent("prompts/topic.jsonl"), encoding: .utf8)
            .split(separator: "\n").prefix(n)
        let file = dir.appendingPathComponent("topic\(n).jsonl")
        try (lines.joined(separator: "\n") + "\n").write(to: file, atomically: true, encoding: .utf8)
        return file.path
    }

    /// Run `id`'s stored options as a JSON object.
    static func options(_ path: String, run id: Int64) throws -> [String: Any] {
        let record = try #require(try ResultsDatabase.openReadOnly(path: path).run(id: id))
        return try #require(try JSONSerialization.jsonObject(with: Data(record.optionsJSON.utf8)) as? [String: Any])
    }

    static func json(_ r: C.Result, _ args: [String]) throws -> Any {
        #expect(r.status == 0, "\(args): \(r.stderr)")
        return try JSONSerialization.jsonObject(with: Data(r.stdout.utf8))
    }

    /// Every key of every object in `value` that is not snake_case, with where it is. Maps keyed
    /// by data (heads `L0H0`, layers `L0`) are skipped.
    static func nonSnakeKeys(_ value: Any, at path: String = "") -> [String] {
        if let array = value as? [Any] { return array.flatMap { nonSnakeKeys($0, at: path + "[]") } }
        guard let object = value as? [String: Any] else { return [] }
        let dataKeyed: Set<String> = ["nmae_per_head", "nmae_per_layer"]
        return object.flatMap { key, child -> [String] in
            let snake = key.range(of: #"^[a-z][a-z0-9]*(_[a-z0-9]+)*$"#, options: .regularExpression) != nil
            let here = snake ? [] : ["\(path).\(key)"]
            return here + (dataKeyed.contains(key) ? [] : nonSnakeKeys(child, at: path + "." + key))
        }
    }

    /// `--json` of every command that has it, on one database: no key anywhere is camelCase.
    @Test func everyJSONOutputHasSnakeCaseKeys() throws {
        let dir = try C.tempDir()
        defer { try? FileManager.default.removeItem(at: dir) }
        let db = dir.appendingPathComponent("r.sqlite").path
        let prompts = try Self.prompts(4, in: dir)
        let text = dir.appendingPathComponent("text.txt")
        let heldout = try String(contentsOf: C.repo.appendingPathComponent("corpus/heldout.txt"), encoding: .utf8)
        try String(heldout.prefix(3_000)).write(to: text, atomically: true, encoding: .utf8)
        let commands: [[String]] = [
            ["dla", "--prompts", prompts, "--db", db, "--json"],                                     // runs 1, 2
            ["patch", "--prompts", prompts, "--sites", "resid_pre,z", "--db", db, "--json"],         // runs 3, 4
            ["eval", "gpt2-tiny", "gpt2-tiny-lnfree", "--text", text.path, "--context", "32", "--db", db, "--json"],  // run 5
            ["runs", "--db", db, "--json"],
            ["query", "nmae", "--db", db, "--json"],
            ["query", "top-heads", "1", "--db", db, "--json"],
            ["query", "--sql", "SELECT id, command, ln_mode FROM runs", "--db", db, "--json"],
            ["diff", "1", "2", "--db", db, "--json"],
            ["diff", "3", "4", "--db", db, "--json"],
            ["inspect", "gpt2-tiny-lnfree", "--json"],
            ["tokenize", "Hello world", "--json"],
            ["run", "gpt2-tiny", "--prompt", "When Mary and John went to the store, John gave a drink to", "--metric", "logit-diff",
             "--answer", " Mary", "--wrong", " John", "--json"],
        ]
        var outputs: [String: Any] = [:]
        for args in commands {
            let value = try Self.json(try C.run(args), args)
            #expect(Self.nonSnakeKeys(value).isEmpty, "\(args.prefix(2)): \(Self.nonSnakeKeys(value))")
            outputs[args.prefix(2).joined(separator: " ")] = value
        }
        // What the keys name is there: the diff's snake_case fields, eval's LN mode per model,
        // the prompt set of every run.
        let dlaDiff = try #require(outputs["diff 1"] as? [String: Any])
        #expect(Set(dlaDiff.keys).isSuperset(of: ["a", "b", "prompt_set_hash", "n_prompts", "prompts_compared", "layers", "heads",
                                                   "spearman", "rank_moves", "sign_flips", "task_a", "task_b"]))
        let head = try #require((dlaDiff["heads"] as? [[String: Any]])?.first)
        #expect(Set(head.keys) == ["component", "layer", "head", "nmae_a", "nmae_b", "mean_dla_a", "mean_dla_b", "mean_de_a",
                                   "mean_de_b", "mean_abs_de_a", "mean_abs_de_b", "rank_a", "rank_b", "rank_shift"])
        #expect(Set((dlaDiff["a"] as? [String: Any] ?? [:]).keys) == ["run_id", "model_path", "model_hash", "ln_mode", "status", "head_nmae"])
        let patchDiff = try #require(outputs["diff 3"] as? [String: Any])
        #expect(Set(patchDiff.keys) == ["a", "b", "prompt_set_hash", "entries", "task_a", "task_b"])
        let runs = try #require(outputs["runs --db"] as? [[String: Any]])
        #expect(runs.map { $0["prompt_set"] as? String } == ["topic4.jsonl", "topic4.jsonl", "topic4.jsonl", "topic4.jsonl", "text.txt"])
        let store = try ResultsDatabase.openReadOnly(path: db)
        let lnFree = try store.summaries(runID: 5).filter { $0.metric == "ln_free" }.map { "\($0.key) \($0.value)" }
        #expect(lnFree == ["gpt2-tiny 0.0", "gpt2-tiny-lnfree 1.0"])
    }

    /// `dla --json` and `--csv` rows carry the database's keys (`site`, `layer`, `pos`, `head`)
    /// beside the component's name, and each run the model's short name beside its path; the
    /// values are those the database holds under those keys.
    @Test func dlaRowsCarryTheDatabaseKeys() throws {
        let dir = try C.tempDir()
        defer { try? FileManager.default.removeItem(at: dir) }
        let db = dir.appendingPathComponent("r.sqlite").path
        let prompts = try Self.prompts(3, in: dir)
        let args = ["dla", "--model", "gpt2-tiny", "--prompts", prompts, "--db", db]
        let object = try #require(try Self.json(try C.run(args + ["--json"]), args) as? [String: Any])
        let run = try #require((object["runs"] as? [[String: Any]])?.first)
        #expect(run["model_name"] as? String == "gpt2-tiny" && (run["model"] as? String)?.hasSuffix("models/gpt2-tiny") == true)
        let rows = try #require(run["rows"] as? [[String: Any]])
        #expect(rows.count == 3 * (2 + 4 * 6))
        let stored = try ResultsDatabase.openReadOnly(path: db).results(runID: 1).filter { $0.quantity == "dla" }
        var byKey: [String: Double] = [:]
        for r in stored { byKey["\(r.promptIndex) \(r.site) \(r.layer ?? -1) \(r.position ?? -1) \(r.head ?? -1)"] = r.value }
        for row in rows {
            #expect(Set(row.keys) == ["prompt", "component", "site", "layer", "pos", "head", "dla", "direct_effect"])
            func int(_ key: String) -> Int { row[key] as? Int ?? -1 }
            let key = "\(int("prompt")) \(row["site"] as! String) \(int("layer")) \(int("pos")) \(int("head"))"
            // Within float rounding: Foundation's JSON parser on Linux is not correctly rounded (Python's
            // json reads these files back bit for bit).
            let stored = try #require(byKey[key], "\(key)"), printed = try #require(row["dla"] as? Double)
            #expect(abs(stored - printed) <= 1e-14 * abs(stored), "\(row)")
        }
        let head = try #require(rows.first { $0["component"] as? String == "L2H3" })
        #expect(head["site"] as? String == "result" && head["layer"] as? Int == 2 && head["head"] as? Int == 3 && head["pos"] is NSNull)
        let bias = try #require(rows.first { $0["component"] as? String == "L1_bO" })
        #expect(bias["site"] as? String == "b_O" && bias["layer"] as? Int == 1 && bias["head"] is NSNull)
        let embed = try #require(rows.first { $0["component"] as? String == "embed" })
        #expect(embed["site"] as? String == "embed" && embed["layer"] is NSNull)

        let csv = try C.run(args + ["--csv", "--db", dir.appendingPathComponent("c.sqlite").path])
        let lines = csv.stdout.split(separator: "\n")
        #expect(lines.first == "run_id,model,model_name,ln_mode,prompt,component,site,layer,pos,head,dla,direct_effect")
        let l2h3 = try #require(lines.first { $0.contains(",L2H3,") })
        #expect(l2h3.contains(",gpt2-tiny,layernorm,0,L2H3,result,2,,3,"), "\(l2h3)")
        #expect(lines.contains { $0.contains(",mlp_out,3,,,") })
        // patch --csv and --json name the model the same way.
        let patch = try C.run(["patch", "--model", "gpt2-tiny", "--prompts", prompts, "--sites", "resid_pre", "--db", db, "--csv"])
        #expect(patch.stdout.hasPrefix("run_id,model,model_name,ln_mode,prompt,site,layer,pos,head,activation,atp,atp_star\n"))
        #expect(patch.stdout.split(separator: "\n")[1].contains(",gpt2-tiny,layernorm,0,resid_pre,0,0,,"))
    }

    /// NMAE is printed so that the LN-free model's 1e-12 % is not a row of zeros: one
    /// formatter for the summary, the per-head table and grid, side by side, and diff.
    @Test func nmaeIsPrintedWithItsMagnitude() throws {
        #expect(nmaeText(8.2e-13) == "8.20e-13" && nmaeText(0) == "0.0000" && nmaeText(36.034) == "36.0340")
        #expect(nmaeText(0.01) == "0.0100" && nmaeText(0.00999) == "9.99e-03" && nmaeText(nil) == "-" && nmaeText(.nan) == "-")
        #expect(nmaeText(8.2e-13, compact: true) == "8e-13" && nmaeText(88.06, compact: true) == "88.1")
        #expect(nmaeText(0.05, compact: true) == "5e-02" && nmaeText(1234, compact: true) == ">999")
        let dir = try C.tempDir()
        defer { try? FileManager.default.removeItem(at: dir) }
        let db = dir.appendingPathComponent("r.sqlite").path
        let r = try C.run(["dla", "--prompts", try Self.prompts(4, in: dir), "--db", db])
        #expect(r.status == 0, "\(r.stderr)")
        let tiny = r.stdout.components(separatedBy: "gpt2-tiny-lnfree (ln-free)")
        #expect(tiny.count == 2)
        let lnFree = tiny[1]
        #expect(lnFree.range(of: #"NMAE over heads: [1-9]\.\d\de-1[0-9] % \(95 % CI [1-9]\.\d\de-1\d–[1-9]\.\d\de-1\d"#,
                             options: .regularExpression) != nil, "\(lnFree)")
        #expect(!lnFree.contains("0.0000"), "\(lnFree)")
        #expect(lnFree.range(of: #"heads \(all\) +\d+\.\d{4} +[1-9]\.\d\de-1\d"#, options: .regularExpression) != nil, "\(lnFree)")
        let diff = try C.run(["diff", "1", "2", "--db", db])
        #expect(diff.stdout.range(of: #"heads \(all\) +\d+\.\d{4} +[1-9]\.\d\de-1\d"#, options: .regularExpression) != nil,
                "\(diff.stdout)")
    }

    /// `dla` and `patch` put `<|endoftext|>` first by default (TransformerLens's `to_tokens`, the
    /// paper), `--no-prepend-bos` not; the run records which; text windows never get one.
    @Test func bosIsTheDefaultInDLAAndPatch() throws {
        let dir = try C.tempDir()
        defer { try? FileManager.default.removeItem(at: dir) }
        let db = dir.appendingPathComponent("r.sqlite").path
        let prompts = try Self.prompts(2, in: dir)
        for args in [["dla", "--model", "gpt2-tiny", "--prompts", prompts], ["dla", "--model", "gpt2-tiny", "--prompts", prompts, "--no-prepend-bos"],
                     ["patch", "--model", "gpt2-tiny", "--prompts", prompts, "--sites", "resid_pre"],
                     ["patch", "--model", "gpt2-tiny", "--prompts", prompts, "--sites", "resid_pre", "--no-prepend-bos"],
                     ["dla", "--model", "gpt2-tiny", "--text", "prompts/pride-and-prejudice.txt", "--max-tokens", "8"]] {
            let r = try C.run(args + ["--db", db])
            #expect(r.status == 0, "\(args): \(r.stderr)")
        }
        let store = try ResultsDatabase.openReadOnly(path: db)
        let recorded = try (1...5).map { try Self.options(db, run: Int64($0))["prepend_bos"] as? Bool }
        #expect(recorded == [true, false, true, false, false])
        let with = try store.prompts(runID: 1), without = try store.prompts(runID: 2)
        #expect(zip(with, without).allSatisfy { $0.nTokens == $1.nTokens + 1 })
        #expect(try store.prompts(runID: 3).allSatisfy { $0.tokens?.first == "<|endoftext|>" })
        #expect(try store.prompts(runID: 4).allSatisfy { $0.tokens?.first != "<|endoftext|>" })
    }

    /// Rewrites run `id` of `path` as lnlens wrote it before schema v3 (`options` as given, the
    /// numbers and booleans as strings) and takes v3 off the database: what a user's old file holds.
    static func makeOld(_ path: String, run id: Int64, options: [String: Any]) throws {
        var old: [String: Any] = [:]
        for (key, value) in options {
            if let flags = value as? [String: Bool] {
                old[key] = ["fold_ln", "center_writing_weights", "center_unembed", "fold_value_biases"]
                    .map { "\($0)=\(flags[$0]!)" }.joined(separator: " ")
            } else if JSONKind(value) == .bool {
                old[key] = (value as! Bool) ? "true" : "false"
            } else {
                old[key] = value is String || key == "min_gap" ? value : "\(value)"  // min_gap was a number already
            }
        }
        let text = String(decoding: try JSONSerialization.data(withJSONObject: old, options: [.sortedKeys]), as: UTF8.self)
        let queue = try DatabaseQueue(path: path)
        try queue.write { db in
            try db.execute(sql: "UPDATE runs SET options_json = ? WHERE id = ?", arguments: [text, id])
            try db.execute(sql: "DELETE FROM grdb_migrations WHERE identifier = 'v3'")
        }
    }

    /// A dla run recorded before the migration (options as strings), interrupted half way, is
    /// migrated by the next writer and resumes to the rows of an uninterrupted run with the same
    /// options; another value of a result option is refused, named as the user gives it.
    @Test func dlaRunFromBeforeV3Resumes() throws {
        let dir = try C.tempDir()
        defer { try? FileManager.default.removeItem(at: dir) }
        let prompts = try Self.prompts(8, in: dir)
        let full = dir.appendingPathComponent("full.sqlite").path, old = dir.appendingPathComponent("old.sqlite").path
        let args = ["dla", "--model", "gpt2-tiny", "--prompts", prompts, "--chunk-size", "2"]
        #expect(try C.run(args + ["--db", full]).status == 0)
        #expect(try C.run(args + ["--db", old]).status == 0)
        let options = try Self.options(old, run: 1)
        #expect(options["prepend_bos"] as? Bool == true && options["chunk_size"] as? Int == 2)
        // Half of it, as a kill would leave it, with the options as the old lnlens stored them.
        let queue = try DatabaseQueue(path: old)
        try queue.write { db in
            for table in ["results", "run_prompts"] { try db.execute(sql: "DELETE FROM \(table) WHERE run_id = 1 AND prompt_index >= 4") }
            try db.execute(sql: "DELETE FROM batches_done WHERE run_id = 1 AND first_prompt >= 4")
            try db.execute(sql: "DELETE FROM summaries WHERE run_id = 1")
            try db.execute(sql: "UPDATE runs SET status = 'interrupted' WHERE id = 1")
        }
        try Self.makeOld(old, run: 1, options: options)
        let stored = try DatabaseQueue(path: old).read { try String.fetchOne($0, sql: "SELECT options_json FROM runs WHERE id = 1") }
        #expect(stored?.contains(#""prepend_bos":"true""#) == true && stored?.contains(#""chunk_size":"2""#) == true, "\(stored ?? "")")

        try C.expectOneLineError(args + ["--db", old, "--resume", "1", "--batch-size", "8"],
                                 mentions: ["cannot resume run 1", "option batch_size is 32 but this invocation has 8"])
        try C.expectOneLineError(args + ["--db", old, "--resume", "1", "--no-prepend-bos"],
                                 mentions: ["option prepend_bos is true but this invocation has false"])
        let resumed = try C.run(args + ["--db", old, "--resume", "1"])
        #expect(resumed.status == 0, "\(resumed.stderr)")
        let a = try ResultsDatabase.openReadOnly(path: full), b = try ResultsDatabase.openReadOnly(path: old)
        #expect(try b.run(id: 1)?.status == .completed)
        #expect(try a.results(runID: 1) == b.results(runID: 1))
        #expect(try a.summaries(runID: 1) == b.summaries(runID: 1))
        let migrated = try Self.options(old, run: 1)
        #expect(migrated["prepend_bos"] as? Bool == true && migrated["batch_size"] as? Int == 32
                && migrated["processing"] as? [String: Bool] == options["processing"] as? [String: Bool])
    }

    /// The same for a training: a `train` run from before v3 (its checkpoints kept) resumes with
    /// the same options and is refused with another weight decay.
    @Test func trainRunFromBeforeV3Resumes() throws {
        let dir = try C.tempDir()
        defer { try? FileManager.default.removeItem(at: dir) }
        let db = dir.appendingPathComponent("t.sqlite").path
        let args = ["train", "--init", try TrainCLITests.config(in: dir)] + TrainCLITests.small
            + ["--steps", "3", "--keep-checkpoints", "--out", dir.appendingPathComponent("out").path, "--db", db]
        let first = try C.run(args)
        #expect(first.status == 0, "\(first.stderr)")
        let options = try Self.options(db, run: 1)
        #expect(options["weight_decay"] as? Double == 0.01 && options["steps"] as? Int == 3 && options["lr"] as? Double == 6e-4)
        // As the old lnlens wrote them: Swift's text of each value ("0.01", "1.0", "0.0006", "3").
        var old = options
        for key in ["weight_decay", "max_grad_norm", "lr"] { old[key] = "\((options[key] as! NSNumber).doubleValue)" }
        try Self.makeOld(db, run: 1, options: old)
        try C.expectOneLineError(args + ["--resume", "--weight-decay", "0.02"], mentions: ["--weight-decay", "0.01", "0.02"])
        let resumed = try C.run(args + ["--resume"])
        #expect(resumed.status == 0, "\(resumed.stderr)")
        #expect(try ResultsDatabase.openReadOnly(path: db).runs().map(\.status) == [.completed])
    }
}
