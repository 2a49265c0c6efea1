import Foundation
import GRDB
import ResultsStore
import Support
import Testing
import Training

/// The second round of hostile input (issue 16), each case as a user meets it through the binary:
/// one clear line and a non-zero exit, the inputs unchanged, nothing stored lost, no crash.
@Suite struct HostileRound2Tests {
    typealias C = CLITests
    typealias T = TrainCLITests

    static func sha(_ path: String) throws -> Data { try Data(contentsOf: URL(fileURLWithPath: path)) }

    /// A small dla run of `model` on the first `n` IOI prompts into `db` (run 1).
    static func dlaRun(_ db: String, model: String = "gpt2-tiny", n: Int = 6, dir: URL, extra: [String] = []) throws {
        let prompts = dir.appendingPathComponent("p\(n).jsonl")
        if !FileManager.default.fileExists(atPath: prompts.path) {
            let lines = try String(contentsOf: C.repo.appendingPathComponent("prompts/ioi.jsonl"), encoding: .utf8)
                .split(separator: "\n").prefix(n)
            try (lines.joined(separator: "\n") + "\n").write(to: prompts, atomically: true, encoding: .utf8)
        }
        let r = try C.run(["dla", "--model", model, "--prompts", prompts.path, "--db", db] + extra)
        #expect(r.status == 0, "\(r.stderr)")
    }

    // MARK: 1, 2, 15: nothing is written over an input or a special file

    @Test func symlinkedSourcesAreNeverOverwritten() throws {
        let dir = try C.tempDir()
        defer { try? FileManager.default.removeItem(at: dir) }
        let model = try HostileInputTests.modelCopy(in: dir)
        let link = dir.appendingPathComponent("link")
        try FileManager.default.createSymbolicLink(at: link, withDestinationURL: model)
        let weights = model.appendingPathComponent("model.safetensors").path
        let before = try Self.sha(weights)
        let db = dir.appendingPathComponent("r.sqlite").path
        try C.expectOneLineError(["train", "--from", link.path] + T.small + ["--steps", "2", "--out", model.path, "--force", "--db", db],
                                 mentions: ["--out", "never overwrites an input"])
        try C.expectOneLineError(["remove-ln", link.path] + T.small + ["--steps", "2", "--ln2-start", "0", "--ln2-gap", "0", "--ln1qk-gap", "0",
                                                                         "--ln1v-gap", "0", "--out", model.path, "--force", "--db", db],
                                 mentions: ["--out", "never overwrites an input"])
        try C.expectOneLineError(["export", link.path, "--out", model.path, "--force"], mentions: ["--out", "never overwrites an input"])
        // --out above the input: replacing it would delete the model.
        try C.expectOneLineError(["export", link.path, "--out", dir.path, "--force"], mentions: ["holds the input"])
        #expect(try Self.sha(weights) == before)
        // An embedded model reached through a symlinked LNLENS_HOME.
        let home = dir.appendingPathComponent("home")
        let fake = dir.appendingPathComponent("real-home/models")
        try FileManager.default.createDirectory(at: fake, withIntermediateDirectories: true)
        try FileManager.default.copyItem(at: model, to: fake.appendingPathComponent("gpt2-tiny"))
        try FileManager.default.createSymbolicLink(at: home, withDestinationURL: dir.appendingPathComponent("real-home"))
        let embedded = fake.appendingPathComponent("gpt2-tiny/model.safetensors").path
        try C.expectOneLineError(["export", "gpt2-tiny", "--out", fake.appendingPathComponent("gpt2-tiny").path, "--force"],
                                 environment: ["LNLENS_HOME": home.path], mentions: ["never overwrites an input"])
        #expect(try Self.sha(embedded) == before)
    }

    @Test func forceReplacesRegularFilesOnly() throws {
        let dir = try C.tempDir()
        defer { try? FileManager.default.removeItem(at: dir) }
        let db = dir.appendingPathComponent("r.sqlite").path
        try Self.dlaRun(db, dir: dir)
        // One special file per kind and output: FIFOs, and /dev/null's device when root may make one.
        var special: [(path: String, command: [String])] = []
        for (name, command) in [("f.html", ["report", "1", "--db", db, "--out"]), ("f.svg", ["plot", "head-nmae", "1", "--db", db, "--svg"]),
                                ("f.safetensors", ["run", "gpt2-tiny", "--prompt", "Hi", "--hooks", "hook_embed", "--cache"])] {
            let path = dir.appendingPathComponent(name).path
            #expect(mkfifo(path, 0o644) == 0)
            special.append((path, command))
        }
        let device = dir.appendingPathComponent("null.html").path
        if getuid() == 0, mknod(device, S_IFCHR | 0o666, dev_t((1 << 8) | 3)) == 0 {
            special.append((device, ["report", "1", "--db", db, "--out"]))
        }
        for (path, command) in special {
            try C.expectOneLineError(command + [path, "--force"], mentions: [path, "not a regular file"])
            try C.expectOneLineError(["export", "gpt2-tiny", "--out", path, "--force"], mentions: ["not a folder"])
            var st = stat()
            #expect(lstat(path, &st) == 0 && (st.st_mode & S_IFMT) != S_IFREG, "\(path) was replaced")
        }
    }

    @Test func mergeRefusesAnOutputHardLinkedToAShard() throws {
        let dir = try C.tempDir()
        defer { try? FileManager.default.removeItem(at: dir) }
        let s0 = dir.appendingPathComponent("s0.sqlite").path, s1 = dir.appendingPathComponent("s1.sqlite").path
        try Self.dlaRun(s0, dir: dir, extra: ["--shard", "0/2"])
        try Self.dlaRun(s1, dir: dir, extra: ["--shard", "1/2"])
        let link = dir.appendingPathComponent("out.sqlite").path
        #expect(link_(s0, link) == 0)
        let before = try Self.sha(s0)
        try C.expectOneLineError(["merge", link, s0, s1], mentions: ["both the output and a shard"])
        #expect(try Self.sha(s0) == before)
    }

    private func link_(_ a: String, _ b: String) -> Int32 { link(a, b) }

    // MARK: 3: damaged or edited shards and runs

    @Test func damagedOrEditedRunsAreRefused() throws {
        let dir = try C.tempDir()
        defer { try? FileManager.default.removeItem(at: dir) }
        func path(_ n: String) -> String { dir.appendingPathComponent(n).path }
        try Self.dlaRun(path("s0.sqlite"), n: 40, dir: dir, extra: ["--shard", "0/2"])
        try Self.dlaRun(path("s1.sqlite"), n: 40, dir: dir, extra: ["--shard", "1/2"])
        // Rows deleted from a completed shard: merge, report and diff refuse it.
        try FileManager.default.copyItem(atPath: path("s1.sqlite"), toPath: path("edited.sqlite"))
        try DatabaseQueue(path: path("edited.sqlite")).write { db in
            try db.execute(sql: "DELETE FROM results WHERE rowid IN (SELECT rowid FROM results LIMIT 3)")
        }
        try C.expectOneLineError(["merge", path("m1.sqlite"), path("s0.sqlite"), path("edited.sqlite")],
                                 mentions: ["edited.sqlite", "recorded", "when it completed"])
        #expect(!FileManager.default.fileExists(atPath: path("m1.sqlite")))
        try C.expectOneLineError(["report", "1", "--db", path("edited.sqlite"), "--out", path("r.html")], mentions: ["recorded"])
        try C.expectOneLineError(["diff", "1", "1", "--db", path("edited.sqlite")], mentions: ["recorded"])
        // Bytes flipped inside the results index: SQLite's integrity check finds it; merge refuses.
        try FileManager.default.copyItem(atPath: path("s1.sqlite"), toPath: path("flipped.sqlite"))
        let (root, pageSize) = try DatabaseQueue(path: path("flipped.sqlite")).read { db in
            (try Int.fetchOne(db, sql: "SELECT rootpage FROM sqlite_master WHERE name = 'results_key'")!,
             try Int.fetchOne(db, sql: "PRAGMA page_size")!)
        }
        let handle = try FileHandle(forUpdating: URL(fileURLWithPath: path("flipped.sqlite")))
        // The end of the index's root page holds its cells (keys and child pages).
        try handle.seek(toOffset: UInt64(root * pageSize - 64))
        try handle.write(contentsOf: Data(repeating: 0xA5, count: 16))
        try handle.close()
        try C.expectOneLineError(["merge", path("m2.sqlite"), path("s0.sqlite"), path("flipped.sqlite")],
                                 mentions: ["flipped.sqlite", "damaged"])
        #expect(!FileManager.default.fileExists(atPath: path("m2.sqlite")))
        // Intact shards still merge.
        #expect(try C.run(["merge", path("m3.sqlite"), path("s0.sqlite"), path("s1.sqlite")]).status == 0)
    }

    // MARK: 4, 10, 13: a resume must be the same training

    @Test func trainingResumeComparesSourceAndOptions() throws {
        let dir = try C.tempDir()
        defer { try? FileManager.default.removeItem(at: dir) }
        let db = dir.appendingPathComponent("r.sqlite").path, out = dir.appendingPathComponent("out").path
        let config = try T.config(in: dir)
        let other = dir.appendingPathComponent("other")
        try FileManager.default.createDirectory(at: other, withIntermediateDirectories: true)
        let otherConfig = try T.config(in: other, extra: #", "n_head": 2"#)
        let base = T.small + ["--steps", "3", "--checkpoint-every", "1", "--keep-checkpoints", "--out", out, "--db", db]
        let first = try C.run(["train", "--init", config] + base)
        #expect(first.status == 0, "\(first.stderr)")
        try C.expectOneLineError(["train", "--init", otherConfig] + base + ["--resume"], mentions: ["its source", "--init"])
        try C.expectOneLineError(["train", "--init", config] + base + ["--resume", "--dtype", "f16"], mentions: ["--dtype", "f32", "f16"])
        try C.expectOneLineError(["train", "--from", "gpt2-tiny"] + base + ["--resume"], mentions: ["its source"])
        // The same options resume (here: find the run complete).
        #expect(try C.run(["train", "--init", config] + base + ["--resume"]).status == 0)
        // remove-ln: another model, and --keep-ln named with both values.
        let rl = T.small + ["--steps", "3", "--ln2-start", "0", "--ln2-gap", "0", "--ln1qk-gap", "0", "--ln1v-gap", "0",
                            "--checkpoint-every", "1", "--keep-checkpoints", "--out", dir.appendingPathComponent("rl").path, "--db", db]
        let removed = try C.run(["remove-ln", out] + rl)
        #expect(removed.status == 0, "\(removed.stderr)")
        try C.expectOneLineError(["remove-ln", "gpt2-tiny"] + rl + ["--resume"], mentions: ["its source"])
        let keep = try C.run(["remove-ln", out, "--keep-ln"] + rl + ["--resume"])
        #expect(keep.status != 0 && keep.stderr.contains("--keep-ln") && keep.stderr.contains("false") && keep.stderr.contains("true"),
                "\(keep.stderr)")
        #expect(!keep.stderr.contains("RemovalSchedule(") && !keep.stderr.contains("LearningRateSchedule("))
    }

    // MARK: 5, 12: Ctrl-C stops cleanly, says how to resume, exits 130

    @Test func interruptedEvalResumesToTheRowsOfAnUninterruptedRun() throws {
        let dir = try C.tempDir()
        defer { try? FileManager.default.removeItem(at: dir) }
        func path(_ n: String) -> String { dir.appendingPathComponent(n).path }
        let common = ["eval", "gpt2-tiny", "gpt2-tiny-lnfree", "--text", T.corpus, "--context", "32", "--batch", "1", "--chunk-size", "2"]
        #expect(try C.run(common + ["--db", path("full.sqlite")]).status == 0)
        let (p, _, err) = try C.start(common + ["--db", path("cut.sqlite")])
        let deadline = Date().addingTimeInterval(120)
        while Date() < deadline, p.isRunning {
            if let s = try? ResultsDatabase.openReadOnly(path: path("cut.sqlite")), let n = try? s.results(runID: 1).count, n >= 4 { break }
            Thread.sleep(forTimeInterval: 0.005)
        }
        kill(p.processIdentifier, SIGINT)
        let message = String(decoding: err.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        p.waitUntilExit()
        #expect(p.terminationStatus == 130, "\(message)")
        #expect(message.contains("windows stored") && message.contains("--resume 1"), "\(message)")
        let cut = try ResultsDatabase.openReadOnly(path: path("cut.sqlite"))
        #expect(try cut.run(id: 1)?.status == .interrupted)
        #expect(try cut.results(runID: 1).count >= 4 && cut.results(runID: 1).count < 2 * cut.run(id: 1)!.nPrompts)
        let resumed = try C.run(common + ["--db", path("cut.sqlite"), "--resume", "1"])
        #expect(resumed.status == 0, "\(resumed.stderr)")
        let a = try ResultsDatabase.openReadOnly(path: path("full.sqlite")), b = try ResultsDatabase.openReadOnly(path: path("cut.sqlite"))
        #expect(try a.results(runID: 1) == b.results(runID: 1))
        #expect(try a.summaries(runID: 1) == b.summaries(runID: 1))
        try C.expectOneLineError(["eval", "gpt2-tiny", "--text", T.corpus, "--context", "32", "--db", path("cut.sqlite"), "--resume", "1"],
                                 mentions: ["cannot resume run 1"])
    }

    @Test func interruptedTrainingSaysStepsAndItsOwnResume() throws {
        let dir = try C.tempDir()
        defer { try? FileManager.default.removeItem(at: dir) }
        let db = dir.appendingPathComponent("r.sqlite").path
        let (p, _, err) = try C.start(["train", "--init", try T.config(in: dir)] + T.small
                                      + ["--steps", "400", "--out", dir.appendingPathComponent("o").path, "--db", db])
        let deadline = Date().addingTimeInterval(120)
        while Date() < deadline, p.isRunning {
            if let s = try? ResultsDatabase.openReadOnly(path: db), let n = try? s.trainSteps(runID: 1).count, n >= 2 { break }
            Thread.sleep(forTimeInterval: 0.005)
        }
        kill(p.processIdentifier, SIGINT)
        let message = String(decoding: err.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        p.waitUntilExit()
        #expect(p.terminationStatus == 130, "\(message)")
        #expect(message.contains("of 400 steps stored") && message.contains("the same options and --resume")
                && !message.contains("--resume 1"), "\(message)")
    }

    // MARK: 6, 9: a full disk marks the run failed and says so in words

    @Test func fullDiskAtTheFirstCheckpointMarksTheRunFailed() throws {
        guard getuid() == 0 else { print("skipped: mounting a small tmpfs needs root"); return }
        let dir = try C.tempDir()
        defer { try? FileManager.default.removeItem(at: dir) }
        let mount = dir.appendingPathComponent("small")
        try FileManager.default.createDirectory(at: mount, withIntermediateDirectories: true)
        let mounted = Process()
        mounted.executableURL = URL(fileURLWithPath: "/bin/mount")
        mounted.arguments = ["-t", "tmpfs", "-o", "size=1m", "tmpfs", mount.path]
        try mounted.run()
        mounted.waitUntilExit()
        guard mounted.terminationStatus == 0 else { print("skipped: cannot mount a tmpfs here"); return }
        defer {
            let u = Process()
            u.executableURL = URL(fileURLWithPath: "/bin/umount")
            u.arguments = [mount.path]
            try? u.run()
            u.waitUntilExit()
        }
        let db = dir.appendingPathComponent("r.sqlite").path
        try C.expectOneLineError(["train", "--init", try T.config(in: dir)] + T.small
                                 + ["--steps", "2", "--out", mount.appendingPathComponent("o").path, "--db", db],
                                 mentions: ["disk full"])
        let runs = try ResultsDatabase.openReadOnly(path: db).runs()
        #expect(runs.count == 1 && runs[0].status == .failed, "\(runs.map(\.status))")
        #expect(runs.first?.error?.contains("disk full") == true && runs.first?.error?.contains("NSCocoaErrorDomain") == false,
                "\(runs.first?.error ?? "")")
    }

    @Test func foundationFileErrorsAreWords() {
        let full = NSError(domain: NSCocoaErrorDomain, code: NSFileWriteOutOfSpaceError, userInfo: [NSFilePathErrorKey: "/x/y"])
        #expect(Files.describe(full) == "disk full writing /x/y")
        let denied = NSError(domain: NSCocoaErrorDomain, code: NSFileWriteNoPermissionError, userInfo: [NSFilePathErrorKey: "/x/z"])
        #expect(Files.describe(denied) == "permission denied: /x/z")
        #expect(!TrainingError.nonFiniteLoss(step: 3).localizedDescription.contains("resume from"))
    }

    // MARK: 7: too large for the machine is an error with the figure, never an abort

    @Test func sizesBeyondTheMachineAreRefused() throws {
        let dir = try C.tempDir()
        defer { try? FileManager.default.removeItem(at: dir) }
        let db = dir.appendingPathComponent("r.sqlite").path
        try C.expectOneLineError(["train", "--init", try T.config(in: dir)] + ["--corpus", T.corpus, "--seq-len", "32",
                                 "--batch-tokens", "1146880", "--micro-batch", "35840", "--steps", "1", "--out",
                                 dir.appendingPathComponent("o").path, "--db", db], mentions: ["memory", "--micro-batch"])
        let huge = dir.appendingPathComponent("huge")
        try FileManager.default.createDirectory(at: huge, withIntermediateDirectories: true)
        try C.expectOneLineError(["train", "--init", try T.config(in: huge, extra: #", "n_embd": 32768, "n_layer": 1024"#)] + T.small
                                 + ["--out", dir.appendingPathComponent("h").path, "--db", db], mentions: ["memory"])
        let runs = FileManager.default.fileExists(atPath: db) ? try ResultsDatabase.openReadOnly(path: db).runs() : []
        #expect(!runs.contains { $0.status == .running }, "a run was left running")
    }

    // MARK: 8, 17: query streams, stops on time, takes one statement

    @Test func queryStreamsAndItsTimeoutBoundsPrinting() throws {
        let dir = try C.tempDir()
        defer { try? FileManager.default.removeItem(at: dir) }
        let db = dir.appendingPathComponent("r.sqlite").path
        try Self.dlaRun(db, dir: dir)
        let started = Date()
        let r = try C.run(["query", "--db", db, "--csv", "--timeout", "2", "--sql",
                           "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT x FROM c"])
        #expect(r.status != 0 && r.stderr.contains("--timeout"), "\(r.stderr)")
        #expect(Date().timeIntervalSince(started) < 30)
        // Rows reached the output as they came, before the timeout stopped the statement.
        #expect(r.stdout.split(separator: "\n").count > 10_000)
        try C.expectOneLineError(["query", "--db", db, "--sql", "SELECT 1; SELECT 2"], mentions: ["one statement only"])
        let json = try C.run(["query", "--db", db, "--json", "--sql", "SELECT id, command FROM runs"])
        let parsed = try JSONSerialization.jsonObject(with: Data(json.stdout.utf8)) as? [[String: Any]]
        #expect(parsed?.first?["command"] as? String == "dla")
        // A column name given twice is one key each, not a crash.
        let twice = try C.run(["query", "--db", db, "--json", "--sql", "SELECT 1 AS a, 2 AS a, 3 AS \"a:2\""])
        #expect(twice.status == 0, "\(twice.stderr)")
        let keys = (try JSONSerialization.jsonObject(with: Data(twice.stdout.utf8)) as? [[String: Any]])?.first.map { Set($0.keys) }
        #expect(keys == ["a", "a:2", "a:2:2"] || keys?.count == 3, "\(twice.stdout)")
    }

    // MARK: 14: readers open files they may not write

    @Test func readersOpenAReadOnlyDatabase() throws {
        guard getuid() == 0, FileManager.default.isExecutableFile(atPath: "/usr/bin/setpriv") else {
            print("skipped: needs root and setpriv to read as another user"); return
        }
        let dir = try C.tempDir()
        defer { try? FileManager.default.removeItem(at: dir) }
        let db = dir.appendingPathComponent("r.sqlite").path
        try Self.dlaRun(db, dir: dir)
        chmod(dir.path, 0o755)
        chmod(db, 0o644)
        for args in [["runs"], ["query", "nmae"], ["diff", "1", "1"], ["query", "--sql", "SELECT count(*) FROM results"]] {
            let p = Process()
            p.executableURL = URL(fileURLWithPath: "/usr/bin/setpriv")
            p.arguments = ["--reuid=65534", "--regid=65534", "--clear-groups", C.binary.path] + args + ["--db", db]
            p.environment = ["LNLENS_HOME": C.repo.path, "HOME": "/tmp", "PATH": "/usr/bin:/bin"]
            let err = Pipe()
            p.standardError = err
            p.standardOutput = FileHandle.nullDevice
            try p.run()
            let message = String(decoding: err.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
            p.waitUntilExit()
            #expect(p.terminationStatus == 0, "\(args): \(message)")
        }
    }

    // MARK: 16, 18, 19, 20, 21, 22, 23, 24, 25, 26: one clear line each

    @Test func oneClearLineEach() throws {
        let dir = try C.tempDir()
        defer { try? FileManager.default.removeItem(at: dir) }
        func path(_ n: String) -> String { dir.appendingPathComponent(n).path }
        let db = path("r.sqlite")
        // 16: eval --text naming the file.
        for text in [path("nonexist.txt"), dir.path, "/dev/zero"] {
            try C.expectOneLineError(["eval", "gpt2-tiny", "--text", text, "--db", db], mentions: [text])
        }
        // 18: answer == wrong.
        let same = path("same.jsonl")
        try #"{"prompt": "When Mary and John went to the store, John gave a drink to", "answer": " Mary", "wrong": " Mary", "corrupt": "When Mary and John went to the store, Mary gave a drink to"}"#
            .appending("\n").write(toFile: same, atomically: true, encoding: .utf8)
        try C.expectOneLineError(["prompts", "check", same], mentions: ["same.jsonl:1", "same token"])
        try C.expectOneLineError(["patch", "--model", "gpt2-tiny", "--prompts", same, "--db", db], mentions: ["same token"])
        // 25: an invalid prompt file leaves no database behind.
        #expect(!FileManager.default.fileExists(atPath: db))
        // 19: an empty shard says so.
        let two = path("two.jsonl")
        let lines = try String(contentsOf: C.repo.appendingPathComponent("prompts/ioi.jsonl"), encoding: .utf8).split(separator: "\n").prefix(2)
        try (lines.joined(separator: "\n") + "\n").write(toFile: two, atomically: true, encoding: .utf8)
        let empty = try C.run(["patch", "--model", "gpt2-tiny", "--prompts", two, "--sites", "resid_pre", "--shard", "3/4", "--db", path("e.sqlite")])
        #expect(!empty.stdout.contains("clean 0.0000"), "\(empty.stdout)")
        #expect(empty.status != 0 || empty.stdout.contains("no prompt pairs"), "\(empty.stdout) \(empty.stderr)")
        // 20: a model given twice.
        try C.expectOneLineError(["eval", "gpt2-tiny", "gpt2-tiny", "--text", T.corpus, "--db", db], mentions: ["given twice"])
        // 21: control bytes in stored paths are shown escaped.
        let model = try HostileInputTests.modelCopy(in: dir)
        let odd = dir.appendingPathComponent("\u{1b}[31mred")
        try FileManager.default.moveItem(at: model, to: odd)
        try Self.dlaRun(path("odd.sqlite"), model: odd.path, n: 2, dir: dir)
        let runs = try C.run(["runs", "--db", path("odd.sqlite")])
        #expect(runs.status == 0 && !runs.stdout.contains("\u{1b}") && runs.stdout.contains("\\u{1b}"), "\(runs.stdout.debugDescription)")
        // 22: two migrates of one v1 database: one applies v2, the other finds it current.
        let v1 = path("v1.sqlite")
        try FileManager.default.copyItem(at: C.fixtures.appendingPathComponent("store/v1.sqlite"), to: URL(fileURLWithPath: v1))
        let a = try C.start(["migrate", "--db", v1]), b = try C.start(["migrate", "--db", v1])
        let outA = String(decoding: a.1.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        let outB = String(decoding: b.1.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        a.0.waitUntilExit(); b.0.waitUntilExit()
        #expect([outA, outB].filter { $0.contains("applied v2") }.count == 1, "\(outA) | \(outB)")
        // 23: shard values.
        try C.expectOneLineError(["dla", "--prompts", two, "--shard", "-1/3", "--db", db], mentions: ["--shard -1/3"])
        try C.expectOneLineError(["dla", "--prompts", two, "--db", db], environment: ["SLURM_ARRAY_TASK_ID": "9223372036854775807",
                                                                                    "SLURM_ARRAY_TASK_COUNT": "4"],
                                 mentions: ["out of range"])
        // 24: databases that are not files.
        for bad in ["", ":memory:", "file:x.sqlite?mode=memory"] {
            try C.expectOneLineError(["dla", "--prompts", two, "--db", bad], mentions: ["database file"])
        }
        #expect(!FileManager.default.fileExists(atPath: C.repo.appendingPathComponent("file:x.sqlite?mode=memory").path))
        #expect(!FileManager.default.fileExists(atPath: C.repo.appendingPathComponent("file:").path))
        // 25: optimizer options out of range.
        try C.expectOneLineError(["train", "--init", try T.config(in: dir)] + T.small + ["--weight-decay", "1e10", "--out", path("o"), "--db", db],
                                 mentions: ["--weight-decay"])
        // 26: --version.
        let version = try C.run(["--version"])
        #expect(version.status == 0 && version.stdout.hasPrefix("lnlens ") && version.stdout.contains("OpenBLAS"), "\(version)")
    }
}
