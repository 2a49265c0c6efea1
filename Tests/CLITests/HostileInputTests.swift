import Foundation
import GRDB
import ResultsStore
import Testing

/// The hostile-input findings of issue 6, each as a user meets it through the binary: one clear
/// line and a non-zero exit, or it works; no input is ever overwritten; concurrent starts and
/// resumes lose nothing.
@Suite struct HostileInputTests {
    typealias C = CLITests

    /// A copy of the tiny LN test checkpoint with the GPT-2 tokenizer, in a fresh folder.
    static func modelCopy(in dir: URL, configPatch: [String: Any] = [:]) throws -> URL {
        let model = dir.appendingPathComponent("model")
        try FileManager.default.createDirectory(at: model, withIntermediateDirectories: true)
        var config = try JSONSerialization.jsonObject(
            with: Data(contentsOf: C.fixtures.appendingPathComponent("models/tiny-ln/config.json"))) as! [String: Any]
        config.merge(configPatch) { $1 }
        try JSONSerialization.data(withJSONObject: config).write(to: model.appendingPathComponent("config.json"))
        try FileManager.default.copyItem(at: C.fixtures.appendingPathComponent("models/tiny-ln/model.safetensors"),
                                         to: model.appendingPathComponent("model.safetensors"))
        for f in ["vocab.json", "merges.txt"] {
            try FileManager.default.copyItem(at: C.repo.appendingPathComponent("models/tokenizer/\(f)"),
                                             to: model.appendingPathComponent(f))
        }
        return model
    }

    /// 1. `--cache` naming the model's own weights: refused, weights untouched; an existing output
    /// is replaced only with --force.
    @Test func outputNeverOverwritesAnInput() throws {
        let dir = try C.tempDir()
        defer { try? FileManager.default.removeItem(at: dir) }
        let model = try Self.modelCopy(in: dir)
        let weights = model.appendingPathComponent("model.safetensors")
        let before = try Data(contentsOf: weights)
        try C.expectOneLineError(["run", model.path, "--prompt", "Hello", "--cache", weights.path, "--hooks", "all"],
                                 mentions: ["--cache", "never overwrites an input"])
        try C.expectOneLineError(["run", model.path, "--prompt", "Hello", "--cache", weights.path, "--hooks", "all", "--force"],
                                 mentions: ["never overwrites an input"])
        // Through a symlink, too.
        let link = dir.appendingPathComponent("link.safetensors")
        try FileManager.default.createSymbolicLink(at: link, withDestinationURL: weights)
        try C.expectOneLineError(["run", model.path, "--prompt", "Hello", "--cache", link.path, "--hooks", "all"],
                                 mentions: ["never overwrites an input"])
        #expect(try Data(contentsOf: weights) == before)
        let out = dir.appendingPathComponent("c.safetensors").path
        #expect(try C.run(["run", model.path, "--prompt", "Hello", "--cache", out, "--hooks", "hook_embed"]).status == 0)
        try C.expectOneLineError(["run", model.path, "--prompt", "Hello", "--cache", out, "--hooks", "all"],
                                 mentions: ["already exists", "--force"])
        #expect(try C.run(["run", model.path, "--prompt", "Hello", "--cache", out, "--hooks", "all", "--force"]).status == 0)
        let listing = try FileManager.default.contentsOfDirectory(atPath: dir.path)
        #expect(!listing.contains { $0.contains(".tmp-") })
        // prompts --output likewise.
        let jsonl = dir.appendingPathComponent("p.jsonl").path
        #expect(try C.run(["prompts", "ioi", "--n", "3", "--output", jsonl]).status == 0)
        try C.expectOneLineError(["prompts", "ioi", "--n", "3", "--output", jsonl], mentions: ["already exists"])
    }

    /// 2. A header length a few bytes short, and non-finite weights: errors, not wrong logits.
    @Test func silentlyWrongWeightsAreRefused() throws {
        let dir = try C.tempDir()
        defer { try? FileManager.default.removeItem(at: dir) }
        let model = try Self.modelCopy(in: dir)
        let weights = model.appendingPathComponent("model.safetensors")
        let original = try Data(contentsOf: weights)
        let length = UInt64(littleEndian: original.withUnsafeBytes { $0.loadUnaligned(as: UInt64.self) })
        for shift: UInt64 in [4, 1] {
            var bytes = original
            withUnsafeBytes(of: (length - shift).littleEndian) { bytes.replaceSubrange(0..<8, with: $0) }
            try bytes.write(to: weights)
            for command in [["run", model.path, "--prompt", "Hello"], ["inspect", model.path]] {
                try C.expectOneLineError(command, mentions: ["model.safetensors"])
            }
        }
        // One NaN in wte (F16 0x7E00) and one +Inf in an MLP matrix (0x7C00).
        for (tensor, bits) in [("transformer.wte.weight", UInt16(0x7E00)), ("transformer.h.1.mlp.c_fc.weight", UInt16(0x7C00))] {
            var bytes = original
            let header = try JSONSerialization.jsonObject(with: original[8..<(8 + Int(length))]) as! [String: Any]
            let offsets = (header[tensor] as! [String: Any])["data_offsets"] as! [Int]
            let at = 8 + Int(length) + offsets[0] + 6
            bytes[at] = UInt8(bits & 0xFF)
            bytes[at + 1] = UInt8(bits >> 8)
            try bytes.write(to: weights)
            try C.expectOneLineError(["run", model.path, "--prompt", "Hello"], mentions: [tensor, "1 non-finite value"])
        }
    }

    /// 3. Sizes from a file or a flag are bounded before anything is allocated or looped over.
    @Test func absurdSizesFailFast() throws {
        let start = Date()
        try C.expectOneLineError(["prompts", "ioi", "--n", "1000000000"], mentions: ["--n", "at most"])
        let dir = try C.tempDir()
        defer { try? FileManager.default.removeItem(at: dir) }
        for (patch, mention) in [(["n_embd": 9_223_372_036_854_775_807], "n_embd"), (["n_layer": 2_147_483_648], "n_layer"),
                                 (["n_layer": 1_000], "n_layer"), (["n_embd": 64.5], "n_embd\" must be an integer, not 64.5")]
                                 as [([String: Any], String)] {
            let model = try Self.modelCopy(in: dir.appendingPathComponent(UUID().uuidString), configPatch: patch)
            try C.expectOneLineError(["inspect", model.path], mentions: [mention])
            try C.expectOneLineError(["run", model.path, "--prompt", "Hello"], mentions: [mention])
        }
        #expect(Date().timeIntervalSince(start) < 60)
    }

    /// 4. Tokenizer files that are wrong but were accepted.
    @Test func wrongTokenizerFilesAreRefused() throws {
        let dir = try C.tempDir()
        defer { try? FileManager.default.removeItem(at: dir) }
        let model = try Self.modelCopy(in: dir)
        try Data().write(to: model.appendingPathComponent("merges.txt"))
        try C.expectOneLineError(["tokenize", model.path, "Hello world"], mentions: ["merges.txt", "no merge rules"])
    }

    /// 5. Three `dla` processes starting together on a database that does not exist yet all store
    /// their runs.
    @Test func concurrentStartsAllSucceed() throws {
        for trial in 0..<3 {
            let dir = try C.tempDir()
            defer { try? FileManager.default.removeItem(at: dir) }
            let db = dir.appendingPathComponent("new/r.sqlite").path
            let starts = try (0..<3).map { _ in
                try C.start(["dla", "--model", "gpt2-tiny", "--prompts", "prompts/ioi.jsonl", "--db", db, "--json"])
            }
            for (p, out, err) in starts {
                _ = out.fileHandleForReading.readDataToEndOfFile()
                let e = String(decoding: err.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
                p.waitUntilExit()
                #expect(p.terminationStatus == 0, "trial \(trial): \(e)")
            }
            let runs = try ResultsDatabase.openReadOnly(path: db).runs()
            #expect(runs.count == 3 && runs.allSatisfy { $0.status == .completed }, "trial \(trial)")
        }
    }

    /// 6. `--resume` of a run another live process is writing is refused; the writer finishes it.
    @Test func secondWriterIsRefused() throws {
        let dir = try C.tempDir()
        defer { try? FileManager.default.removeItem(at: dir) }
        let db = dir.appendingPathComponent("r.sqlite").path
        let args = ["dla", "--model", "gpt2-tiny", "--prompts", "prompts/paper_ioi.jsonl", "--batch-size", "1",
                    "--chunk-size", "1", "--db", db]
        let (p, out, err) = try C.start(args)
        let deadline = Date().addingTimeInterval(60)
        while Date() < deadline, p.isRunning {
            if let store = try? ResultsDatabase.openReadOnly(path: db), let n = try? store.completedPromptIndices(runID: 1).count,
               n >= 2 { break }
            Thread.sleep(forTimeInterval: 0.005)
        }
        #expect(p.isRunning, "the run finished before a second writer could try")
        try C.expectOneLineError(args + ["--resume", "1"], mentions: ["run 1", "is being written by process \(p.processIdentifier)"])
        _ = out.fileHandleForReading.readDataToEndOfFile()
        _ = err.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        #expect(p.terminationStatus == 0)
        #expect(try ResultsDatabase.openReadOnly(path: db).run(id: 1)?.status == .completed)
    }

    /// 7. A damaged database: `dla` refuses to append, `runs --verify` reports it.
    @Test func damagedDatabaseIsNoticed() throws {
        let dir = try C.tempDir()
        defer { try? FileManager.default.removeItem(at: dir) }
        let good = dir.appendingPathComponent("good.sqlite").path
        #expect(try C.run(["dla", "--model", "gpt2-tiny", "--prompts", "prompts/ioi.jsonl", "--db", good]).status == 0)
        try DatabaseQueue(path: good).writeWithoutTransaction { try $0.execute(sql: "PRAGMA wal_checkpoint(TRUNCATE)") }
        var bytes = try Data(contentsOf: URL(fileURLWithPath: good))
        for page in [3, 5] { for i in 0..<12 { bytes[page * 4096 + i] ^= 0x5A } }
        let damaged = dir.appendingPathComponent("damaged.sqlite").path
        try bytes.write(to: URL(fileURLWithPath: damaged))
        try C.expectOneLineError(["dla", "--model", "gpt2-tiny", "--prompts", "prompts/ioi.jsonl", "--db", damaged],
                                 mentions: [damaged, "is damaged", ".recover"])
        #expect(try Data(contentsOf: URL(fileURLWithPath: damaged)) == bytes)
        try C.expectOneLineError(["runs", "--verify", "--db", damaged], mentions: [damaged, "integrity_check"])
        #expect(try C.run(["runs", "--verify", "--db", good]).status == 0)
    }

    /// 8. Messages that named the wrong thing.
    @Test func messagesNameTheProblem() throws {
        let dir = try C.tempDir()
        defer { try? FileManager.default.removeItem(at: dir) }
        try C.expectOneLineError(["dla", "--prompts", dir.path, "--db", dir.appendingPathComponent("r.sqlite").path],
                                 mentions: [dir.path, "is a folder"])
        try C.expectOneLineError(["dla", "--prompts", "prompts/ioi.jsonl", "--batch-size", "-1"],
                                 mentions: ["--batch-size", "at least 1"])
        let db = dir.appendingPathComponent("q.sqlite").path
        #expect(try C.run(["dla", "--model", "gpt2-tiny", "--prompts", "prompts/ioi.jsonl", "--db", db]).status == 0)
        let forever = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT MAX(x) FROM c"
        try C.expectOneLineError(["query", "--db", db, "--timeout", "1", "--sql", forever], mentions: ["--timeout"])
        let prompts = dir.appendingPathComponent("p.jsonl")
        try #"{"prompt": "When Mary and John went to the store, John gave a drink to", "answer": " Mary", "wrnog": " John"}"#
            .write(to: prompts, atomically: true, encoding: .utf8)
        let r = try C.run(["dla", "--model", "gpt2-tiny", "--prompts", prompts.path, "--db", db])
        #expect(r.status == 0, "\(r.stderr)")
        #expect(r.stderr.contains("p.jsonl:1: warning: unknown key \"wrnog\""), "\(r.stderr)")
    }

    /// 9. A binary outside the checkout finds its models and prompt sets beside itself.
    @Test func installedBinaryFindsItsFiles() throws {
        let prefix = try C.tempDir()
        defer { try? FileManager.default.removeItem(at: prefix) }
        let bin = prefix.appendingPathComponent("bin"), share = prefix.appendingPathComponent("share/lnlens")
        try FileManager.default.createDirectory(at: bin, withIntermediateDirectories: true)
        try FileManager.default.createDirectory(at: share, withIntermediateDirectories: true)
        try FileManager.default.copyItem(at: C.binary, to: bin.appendingPathComponent("lnlens"))
        for folder in ["models", "prompts"] {
            try FileManager.default.copyItem(at: C.repo.appendingPathComponent(folder), to: share.appendingPathComponent(folder))
        }
        let p = Process()
        p.executableURL = bin.appendingPathComponent("lnlens")
        p.arguments = ["dla", "--model", "gpt2-tiny", "--model", "gpt2-tiny-lnfree", "--prompts", "prompts/ioi.jsonl",
                       "--db", prefix.appendingPathComponent("r.sqlite").path]
        p.currentDirectoryURL = FileManager.default.temporaryDirectory
        var env = ProcessInfo.processInfo.environment
        env.removeValue(forKey: "LNLENS_HOME")
        p.environment = env
        let err = Pipe()
        p.standardError = err
        p.standardOutput = Pipe()
        try p.run()
        let e = String(decoding: err.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        p.waitUntilExit()
        #expect(p.terminationStatus == 0, "\(e)")
    }
}
