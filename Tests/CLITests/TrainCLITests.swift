import Foundation
import ResultsStore
import Testing

/// `lnlens train`, `remove-ln` and `eval` through the binary: kill -9 and resume to identical
/// weights, LayerNorm removal to a model that loads as ln-free, one-line errors for bad input.
@Suite struct TrainCLITests {
    typealias C = CLITests

    /// A 2-layer, 32-wide GPT-2 config.
    static func config(in dir: URL, extra: String = "") throws -> String {
        let file = dir.appendingPathComponent("config.json")
        try #"{"model_type": "gpt2", "n_embd": 32, "n_layer": 2, "n_head": 4, "n_positions": 64, "vocab_size": 50257\#(extra)}"#
            .write(to: file, atomically: true, encoding: .utf8)
        return file.path
    }

    /// The first 20,000 characters of corpus/heldout.txt (about 5,000 tokens; whole lines): the
    /// debug binary tokenizes and scores it in seconds, where the whole file takes minutes.
    static let corpus: String = {
        let text = try! String(contentsOf: C.repo.appendingPathComponent("corpus/heldout.txt"), encoding: .utf8)
        let head = text.prefix(20_000)
        let file = FileManager.default.temporaryDirectory.appendingPathComponent("lnlens-cli-corpus-\(getpid()).txt")
        try! (String(head[..<head.lastIndex(of: "\n")!]) + "\n").write(to: file, atomically: true, encoding: .utf8)
        return file.path
    }()

    static let small = ["--corpus", corpus, "--seq-len", "16", "--batch-tokens", "64", "--micro-batch", "2"]

    /// Starts `lnlens ARGS` and kills it with SIGKILL once `db` holds `steps` training steps.
    static func killAfterSteps(_ steps: Int, _ args: [String], db: String) throws {
        let (p, _, _) = try C.start(args)
        let deadline = Date().addingTimeInterval(120)
        while Date() < deadline, p.isRunning {
            if let store = try? ResultsDatabase.openReadOnly(path: db), let n = try? store.trainSteps(runID: 1).count, n >= steps { break }
            Thread.sleep(forTimeInterval: 0.005)
        }
        #expect(p.isRunning, "the training finished before it could be killed")
        kill(p.processIdentifier, SIGKILL)
        p.waitUntilExit()
    }

    @Test func killedTrainingResumesToTheSameWeights() throws {
        let dir = try C.tempDir()
        defer { try? FileManager.default.removeItem(at: dir) }
        let config = try Self.config(in: dir)
        func args(_ out: String, _ db: String) -> [String] {
            ["train", "--init", config] + Self.small + ["--steps", "60", "--checkpoint-every", "5", "--out", dir.appendingPathComponent(out).path,
                                                        "--db", dir.appendingPathComponent(db).path]
        }
        let full = try C.run(args("full", "full.sqlite"))
        #expect(full.status == 0, "\(full.stderr)")
        let killedDB = dir.appendingPathComponent("killed.sqlite").path
        try Self.killAfterSteps(13, args("killed", "killed.sqlite"), db: killedDB)
        #expect(try ResultsDatabase.openReadOnly(path: killedDB).run(id: 1)?.status == .running)
        // Without --resume the folder is refused; with it the training continues.
        try C.expectOneLineError(args("killed", "killed.sqlite"), mentions: ["already exists", "--resume"])
        let resumed = try C.run(args("killed", "killed.sqlite") + ["--resume"])
        #expect(resumed.status == 0, "\(resumed.stderr)")
        let a = try Data(contentsOf: dir.appendingPathComponent("full/model.safetensors"))
        let b = try Data(contentsOf: dir.appendingPathComponent("killed/model.safetensors"))
        #expect(a == b, "the resumed training's weights differ from the uninterrupted one's")
        let sa = try ResultsDatabase.openReadOnly(path: dir.appendingPathComponent("full.sqlite").path).trainSteps(runID: 1)
        let sb = try ResultsDatabase.openReadOnly(path: killedDB).trainSteps(runID: 1)
        #expect(sa.count == 60 && sa.map(\.loss) == sb.map(\.loss) && sa.map(\.gradNorm) == sb.map(\.gradNorm))
        #expect(try ResultsDatabase.openReadOnly(path: killedDB).run(id: 1)?.status == .completed)
        #expect(!FileManager.default.fileExists(atPath: dir.appendingPathComponent("killed/checkpoints").path))
    }

    /// Killed before its first regular checkpoint, a training resumes from the step-0 checkpoint
    /// written as it starts, under the same run, to the weights of an uninterrupted run.
    @Test func killedBeforeTheFirstCheckpointResumes() throws {
        let dir = try C.tempDir()
        defer { try? FileManager.default.removeItem(at: dir) }
        let config = try Self.config(in: dir)
        func args(_ out: String, _ db: String) -> [String] {
            ["train", "--init", config] + Self.small + ["--steps", "12", "--checkpoint-every", "100",
                                                        "--out", dir.appendingPathComponent(out).path,
                                                        "--db", dir.appendingPathComponent(db).path]
        }
        #expect(try C.run(args("full", "full.sqlite")).status == 0)
        let killedDB = dir.appendingPathComponent("killed.sqlite").path
        try Self.killAfterSteps(2, args("killed", "killed.sqlite"), db: killedDB)
        let resumed = try C.run(args("killed", "killed.sqlite") + ["--resume"])
        #expect(resumed.status == 0, "\(resumed.stderr)")
        let a = try Data(contentsOf: dir.appendingPathComponent("full/model.safetensors"))
        let b = try Data(contentsOf: dir.appendingPathComponent("killed/model.safetensors"))
        #expect(a == b, "the resumed training's weights differ from the uninterrupted one's")
        let store = try ResultsDatabase.openReadOnly(path: killedDB)
        #expect(try store.runs().map(\.status) == [.completed])
        #expect(try store.trainSteps(runID: 1).count == 12)
    }

    /// With --dropout a killed training resumes to the weights of an uninterrupted one (the masks
    /// follow from the seed and the step, not from state), which differ from a training without
    /// dropout; the probabilities are stored (not when 0), compared on --resume and validated.
    @Test func dropoutTrainingResumesAndIsRecorded() throws {
        let dir = try C.tempDir()
        defer { try? FileManager.default.removeItem(at: dir) }
        let config = try Self.config(in: dir)
        func args(_ out: String, _ dropout: [String] = ["--dropout", "0.1"]) -> [String] {
            ["train", "--init", config] + Self.small + ["--steps", "12", "--checkpoint-every", "4",
                                                        "--out", dir.appendingPathComponent(out).path,
                                                        "--db", dir.appendingPathComponent(out + ".sqlite").path] + dropout
        }
        let full = try C.run(args("full"))
        #expect(full.status == 0, "\(full.stderr)")
        #expect(try C.run(args("plain", [])).status == 0)
        let killedDB = dir.appendingPathComponent("killed.sqlite").path
        try Self.killAfterSteps(6, args("killed"), db: killedDB)
        try C.expectOneLineError(args("killed", ["--dropout", "0.1", "--embd-pdrop", "0.2"]) + ["--resume"], mentions: ["--embd-pdrop", "0.1", "0.2"])
        let resumed = try C.run(args("killed") + ["--resume"])
        #expect(resumed.status == 0, "\(resumed.stderr)")
        func weights(_ out: String) throws -> Data { try Data(contentsOf: dir.appendingPathComponent("\(out)/model.safetensors")) }
        #expect(try weights("full") == weights("killed"), "the resumed training's weights differ from the uninterrupted one's")
        #expect(try weights("full") != weights("plain"), "--dropout 0.1 changed nothing")
        func options(_ out: String) throws -> String {
            try #require(try ResultsDatabase.openReadOnly(path: dir.appendingPathComponent(out + ".sqlite").path).run(id: 1)).optionsJSON
        }
        let stored = try options("full"), plainStored = try options("plain")
        for key in ["embd_pdrop", "attn_pdrop", "resid_pdrop"] { #expect(stored.contains("\"\(key)\":0.1"), "\(stored)") }
        #expect(!plainStored.contains("pdrop"), "\(plainStored)")
        try C.expectOneLineError(args("bad", ["--dropout", "1"]), mentions: ["--dropout", "[0, 1)"])
        try C.expectOneLineError(args("bad", ["--attn-pdrop", "-0.5"]), mentions: ["--attn-pdrop", "[0, 1)"])
    }

    @Test func removeLNWritesAModelThatLoadsLNFree() throws {
        let dir = try C.tempDir()
        defer { try? FileManager.default.removeItem(at: dir) }
        let db = dir.appendingPathComponent("r.sqlite").path
        let base = dir.appendingPathComponent("base").path, free = dir.appendingPathComponent("free").path
        let vanilla = dir.appendingPathComponent("vanilla").path
        let train = try C.run(["train", "--init", try Self.config(in: dir)] + Self.small + ["--steps", "10", "--out", base, "--db", db])
        #expect(train.status == 0, "\(train.stderr)")
        let schedule = ["--ln2-start", "1", "--ln2-gap", "1", "--ln1qk-gap", "1", "--ln1v-gap", "1", "--steps", "9", "--warmup", "1"]
        let remove = try C.run(["remove-ln", base] + Self.small + schedule + ["--out", free, "--db", db])
        #expect(remove.status == 0, "\(remove.stderr)")
        #expect(remove.stdout.contains("ln_f removed"), "\(remove.stdout)")
        let keep = try C.run(["remove-ln", base, "--keep-ln"] + Self.small + schedule + ["--out", vanilla, "--db", db])
        #expect(keep.status == 0, "\(keep.stderr)")
        let inspect = try C.run(["inspect", free])
        #expect(inspect.stdout.contains("ln-free"), "\(inspect.stdout)")
        let eval = try C.run(["eval", base, vanilla, free, "--text", Self.corpus, "--context", "32", "--db", db, "--json"])
        #expect(eval.status == 0, "\(eval.stderr)")
        let object = try JSONSerialization.jsonObject(with: Data(eval.stdout.utf8)) as! [String: Any]
        let models = object["models"] as! [[String: Any]]
        #expect(models.map { $0["ln_mode"] as! String } == ["layernorm", "layernorm", "ln-free"])
        #expect(models.allSatisfy { ($0["ci_low"] as! Double) <= ($0["loss"] as! Double) && ($0["loss"] as! Double) <= ($0["ci_high"] as! Double) })
        let store = try ResultsDatabase.openReadOnly(path: db)
        #expect(try store.runs().map(\.command) == ["train", "remove-ln", "remove-ln", "eval"])
        let events = try store.trainSteps(runID: 2).compactMap(\.event)
        #expect(events.count == 7 && events.last == "ln_f removed", "\(events)")
        #expect(try store.trainSteps(runID: 3).allSatisfy { $0.event == nil })
        #expect(try store.summaries(runID: 4).filter { $0.scope == "eval" && $0.metric == "loss" }.count == 3)
    }

    /// Two eval shards (one from --shard, one from Slurm's array variables) merged by the binary
    /// store the rows and summaries of one unsharded run.
    @Test func shardedEvalMergedEqualsOneRun() throws {
        let dir = try C.tempDir()
        defer { try? FileManager.default.removeItem(at: dir) }
        func path(_ name: String) -> String { dir.appendingPathComponent(name).path }
        let common = ["eval", "gpt2-tiny", "gpt2-tiny-lnfree", "--text", Self.corpus, "--context", "64", "--batch", "1"]
        let full = try C.run(common + ["--db", path("full.sqlite")])
        #expect(full.status == 0, "\(full.stderr)")
        let s0 = try C.run(common + ["--shard", "0/2", "--db", path("s0.sqlite")])
        #expect(s0.status == 0 && s0.stdout.contains("as shard 0/2"), "\(s0.stdout) \(s0.stderr)")
        let s1 = try C.run(common + ["--db", path("s1.sqlite")], environment: ["SLURM_ARRAY_TASK_ID": "1", "SLURM_ARRAY_TASK_COUNT": "2"])
        #expect(s1.status == 0 && s1.stderr.contains("shard 1/2 from SLURM_ARRAY_TASK_ID=1"), "\(s1.stderr)")
        let merged = try C.run(["merge", path("merged.sqlite"), path("s1.sqlite"), path("s0.sqlite")])
        #expect(merged.status == 0, "\(merged.stderr)")
        #expect(merged.stdout.contains("merged 2 shards of eval gpt2-tiny | gpt2-tiny-lnfree into run 1"), "\(merged.stdout)")
        let a = try ResultsDatabase.openReadOnly(path: path("full.sqlite")), b = try ResultsDatabase.openReadOnly(path: path("merged.sqlite"))
        let windows = try #require(try a.run(id: 1)).nPrompts
        #expect(try a.results(runID: 1).count == 2 * windows && windows > 10)
        #expect(try a.results(runID: 1) == b.results(runID: 1))
        #expect(try a.summaries(runID: 1) == b.summaries(runID: 1))
        #expect(try ResultsDatabase.openReadOnly(path: path("s0.sqlite")).results(runID: 1).allSatisfy { $0.promptIndex % 2 == 0 })
    }

    @Test func badInputIsOneLine() throws {
        let dir = try C.tempDir()
        defer { try? FileManager.default.removeItem(at: dir) }
        let db = dir.appendingPathComponent("r.sqlite").path
        let out = dir.appendingPathComponent("out").path
        let config = try Self.config(in: dir)
        let tiny = dir.appendingPathComponent("tiny.txt")
        try "Just a few words.\n".write(to: tiny, atomically: true, encoding: .utf8)
        try C.expectOneLineError(["train", "--init", config, "--corpus", tiny.path, "--seq-len", "16", "--batch-tokens", "64", "--out", out, "--db", db],
                                 mentions: ["tiny.txt", "too small for one batch"])
        let typo = dir.appendingPathComponent("typo")
        try FileManager.default.createDirectory(at: typo, withIntermediateDirectories: true)
        try C.expectOneLineError(["train", "--init", try Self.config(in: typo, extra: #", "n_embed": 64"#)] + Self.small + ["--out", out, "--db", db],
                                 mentions: ["n_embed", "did you mean \"n_embd\""])
        try FileManager.default.createDirectory(atPath: out, withIntermediateDirectories: true)
        try "keep me".write(toFile: out + "/note.txt", atomically: true, encoding: .utf8)
        try C.expectOneLineError(["train", "--init", config] + Self.small + ["--out", out, "--db", db], mentions: ["already exists", "--force"])
        #expect(try String(contentsOfFile: out + "/note.txt", encoding: .utf8) == "keep me")
        try C.expectOneLineError(["remove-ln", "gpt2-tiny"] + Self.small + ["--steps", "30", "--out", dir.appendingPathComponent("f").path, "--db", db],
                                 mentions: ["schedule ends at step", "--schedule-steps is 30"])
        try C.expectOneLineError(["remove-ln", "gpt2-tiny-lnfree"] + Self.small + ["--out", dir.appendingPathComponent("g").path, "--db", db],
                                 mentions: ["already LN-free"])
        try C.expectOneLineError(["train", "--init", config] + Self.small + ["--seq-len", "100", "--batch-tokens", "200", "--out", dir.appendingPathComponent("h").path, "--db", db],
                                 mentions: ["--seq-len 100", "n_positions 64"])
        try C.expectOneLineError(["eval", "gpt2-tiny", "--text", tiny.path, "--context", "64", "--db", db], mentions: ["tiny.txt", "--context 64"])
        try C.expectOneLineError(["eval", "gpt2-tiny", "--text", Self.corpus, "--shard", "5/4", "--db", db], mentions: ["--shard 5/4"])
        let runs = FileManager.default.fileExists(atPath: db) ? try ResultsDatabase.openReadOnly(path: db).runs() : []
        #expect(runs.isEmpty, "bad input left runs: \(runs.map(\.command))")
    }
}
