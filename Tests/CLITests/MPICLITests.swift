import Foundation
import ResultsStore
import Testing

/// `mpirun -n K lnlens train|remove-ln` against one process on the same global batch: the loss of
/// every step within 1e-6 relative and the parameters within 1e-5 of each tensor's scale (the
/// ranks' gradients are summed in another order than one process adds its micro-batches: the
/// difference is rounding, measured and printed); a rank killed with SIGKILL fails the job and
/// the checkpoint resumes, with the same or another K, to the weights of an uninterrupted run.
@Suite(.serialized, .enabled(if: MPILaunch.available, "skipped: no MPI (mpirun not on PATH, or lnlens built without it)"))
struct MPICLITests {
    typealias C = CLITests
    typealias T = TrainCLITests
    static var mpirun: String? { MPILaunch.mpirun }
}

/// Whether the MPI tests can run: mpirun on PATH and an lnlens built with MPI.
enum MPILaunch {
    /// mpirun, when on PATH.
    static let mpirun: String? = (ProcessInfo.processInfo.environment["PATH"] ?? "").split(separator: ":")
        .map { "\($0)/mpirun" }.first { FileManager.default.isExecutableFile(atPath: $0) }

    /// mpirun is on PATH and the binary under test calls MPI (`lnlens --version` says so).
    static let available: Bool = {
        guard mpirun != nil, let v = try? CLITests.run(["--version"]) else {
            print("MPICLITests skipped: no MPI")
            return false
        }
        let built = v.stdout.contains("MPI: ") && !v.stdout.contains("MPI: not built in")
        if !built { print("MPICLITests skipped: no MPI (lnlens built without it)") }
        return built
    }()
}

extension MPICLITests {
    /// One BLAS thread per process everywhere: the thread count is part of what makes a run
    /// deterministic, and K ranks on 2 cores must not each start a pool.
    static let env = ["OPENBLAS_NUM_THREADS": "1"]

    /// 8 sequences of 16 tokens per step in 4 micro-batches of 2: K = 1, 2, 4 split each step.
    static let batch = ["--corpus", T.corpus, "--seq-len", "16", "--batch-tokens", "128", "--micro-batch", "2"]

    static func mpiArgs(_ k: Int, _ args: [String]) -> [String] {
        ["mpirun", "--allow-run-as-root", "--oversubscribe", "-n", "\(k)", C.binary.path] + args
    }

    /// `lnlens ARGS` on `k` ranks (k = 0: without mpirun).
    static func run(_ k: Int, _ args: [String]) throws -> C.Result {
        guard k > 0 else { return try C.run(args, environment: env) }
        let p = Process()
        p.executableURL = URL(fileURLWithPath: mpirun!)
        p.arguments = Array(mpiArgs(k, args).dropFirst())
        p.currentDirectoryURL = C.repo
        var e = ProcessInfo.processInfo.environment.merging(env) { $1 }
        e["LNLENS_HOME"] = C.repo.path
        p.environment = e
        let out = Pipe(), err = Pipe()
        (p.standardOutput, p.standardError) = (out, err)
        try p.run()
        let o = out.fileHandleForReading.readDataToEndOfFile(), r = err.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        return C.Result(status: p.terminationStatus, stdout: String(decoding: o, as: UTF8.self), stderr: String(decoding: r, as: UTF8.self))
    }

    /// The F32 tensors of a model folder's model.safetensors, by name.
    static func tensors(_ folder: String) throws -> [String: [Float]] {
        let data = try Data(contentsOf: URL(fileURLWithPath: folder).appendingPathComponent("model.safetensors"))
        let n = data.prefix(8).withUnsafeBytes { Int(UInt64(littleEndian: $0.loadUnaligned(as: UInt64.self))) }
        let header = try JSONSerialization.jsonObject(with: data.subdata(in: 8 ..< 8 + n)) as! [String: Any]
        var out: [String: [Float]] = [:]
        for (name, value) in header where name != "__metadata__" {
            let entry = value as! [String: Any], offsets = entry["data_offsets"] as! [Int]
            let bytes = data.subdata(in: 8 + n + offsets[0] ..< 8 + n + offsets[1])
            out[name] = bytes.withUnsafeBytes { Array($0.bindMemory(to: Float.self)) }
        }
        return out
    }

    /// Each tensor's largest difference of `b` from `a`, relative to the tensor's largest
    /// magnitude; the attention's bias in its three parts (`…c_attn.bias.q`, `.k`, `.v`).
    static func parameterDifferences(_ a: String, _ b: String) throws -> [String: Double] {
        var ta = try tensors(a), tb = try tensors(b)
        #expect(ta.keys.sorted() == tb.keys.sorted())
        for name in ta.keys where name.hasSuffix("attn.c_attn.bias") {
            let (x, y) = (ta.removeValue(forKey: name)!, tb.removeValue(forKey: name) ?? [])
            let d = x.count / 3
            for (i, part) in ["q", "k", "v"].enumerated() {
                ta["\(name).\(part)"] = Array(x[i * d ..< (i + 1) * d])
                tb["\(name).\(part)"] = y.count == x.count ? Array(y[i * d ..< (i + 1) * d]) : []
            }
        }
        var out: [String: Double] = [:]
        for (name, x) in ta {
            let y = tb[name] ?? []
            let scale = Double(x.map { abs($0) }.max() ?? 0)
            let d = y.count == x.count ? zip(x, y).map { Double(abs($0 - $1)) }.max() ?? 0 : .infinity
            out[name] = scale > 0 ? d / scale : d
        }
        return out
    }

    /// Every tensor of `b` within 1e-5 of its scale from `a`'s but the attention's key bias, which
    /// does not change what the model computes (softmax ignores a constant added to every key
    /// score) and so has an exact gradient of 0: AdamW, dividing a gradient by its own size, moves
    /// it by the gradient's rounding noise, which another summation order changes (measured: up to
    /// 3e-4 of its scale in 20 steps). Returns the worst of the others and of the key bias.
    @discardableResult
    static func expectSameParameters(_ a: String, _ b: String, _ what: String) throws -> (other: Double, keyBias: Double) {
        let d = try parameterDifferences(a, b)
        let key = d.filter { $0.key.hasSuffix("c_attn.bias.k") }.values.max() ?? 0
        let other = d.filter { !$0.key.hasSuffix("c_attn.bias.k") }.values.max() ?? 0
        #expect(other <= 1e-5, "\(what): parameters differ by \(other) of their scale")
        return (other, key)
    }

    /// The largest relative difference of the stored per-step losses of two runs' databases.
    static func lossDifference(_ a: String, _ b: String) throws -> Double {
        let la = try ResultsDatabase.openReadOnly(path: a).trainSteps(runID: 1).map(\.loss)
        let lb = try ResultsDatabase.openReadOnly(path: b).trainSteps(runID: 1).map(\.loss)
        #expect(la.count == lb.count && !la.isEmpty)
        return zip(la, lb).map { abs($0 - $1) / abs($0) }.max() ?? .infinity
    }

    /// `command` (its arguments but --out and --db) on 1 process and on K = 1, 2, 4 ranks.
    func expectSameRuns(_ dir: URL, _ name: String, _ command: [String]) throws {
        func paths(_ k: Int) -> (String, String) {
            (dir.appendingPathComponent("\(name)-\(k)").path, dir.appendingPathComponent("\(name)-\(k).sqlite").path)
        }
        for k in [0, 1, 2, 4] {
            let (out, db) = paths(k)
            let r = try Self.run(k, command + ["--out", out, "--db", db])
            #expect(r.status == 0, "\(name) on \(k) ranks: \(r.stderr)")
        }
        let (base, baseDB) = paths(0)
        for k in [1, 2, 4] {
            let (out, db) = paths(k)
            let loss = try Self.lossDifference(baseDB, db)
            let weights = try Self.expectSameParameters(base, out, "\(name) on \(k) ranks")
            print("\(name), \(k) rank(s) vs 1 process: loss max relative difference \(loss), parameters max difference \(weights.other) of scale (key bias, no effect: \(weights.keyBias))")
            #expect(loss <= 1e-6, "\(name) on \(k) ranks: losses differ by \(loss) relative")
            if k == 1 { #expect(loss == 0 && weights == (0, 0), "mpirun -n 1 is one process: the same bits") }
        }
    }

    @Test func trainAndRemoveLNOnKRanksEqualOneProcess() throws {
        let dir = try C.tempDir()
        defer { try? FileManager.default.removeItem(at: dir) }
        try expectSameRuns(dir, "train", ["train", "--init", try T.config(in: dir)] + Self.batch + ["--steps", "20", "--warmup", "2"])
        // ln_2 at steps 1–2, ln_1's Q/K path at 3–4, its V path at 5–6 (σ then moves within a step), ln_f at 7.
        let schedule = ["--ln2-start", "1", "--ln2-gap", "1", "--ln1qk-gap", "1", "--ln1v-gap", "1", "--steps", "20", "--warmup", "1"]
        try expectSameRuns(dir, "remove-ln", ["remove-ln", dir.appendingPathComponent("train-0").path] + Self.batch + schedule)
    }

    /// `--allreduce buckets` (each block's gradients reduced during the last backward) on K = 2, 4
    /// against one process: the same tolerances as one reduction after the passes.
    @Test func bucketedAllreduceEqualsOneProcess() throws {
        let dir = try C.tempDir()
        defer { try? FileManager.default.removeItem(at: dir) }
        let command = ["train", "--init", try T.config(in: dir)] + Self.batch + ["--steps", "20", "--warmup", "2"]
        func paths(_ k: Int) -> (String, String) {
            (dir.appendingPathComponent("b-\(k)").path, dir.appendingPathComponent("b-\(k).sqlite").path)
        }
        for k in [0, 2, 4] {
            let (out, db) = paths(k)
            let r = try Self.run(k, command + ["--allreduce", k == 0 ? "whole" : "buckets", "--out", out, "--db", db])
            #expect(r.status == 0, "buckets on \(k) ranks: \(r.stderr)")
        }
        for k in [2, 4] {
            let loss = try Self.lossDifference(paths(0).1, paths(k).1)
            let weights = try Self.expectSameParameters(paths(0).0, paths(k).0, "buckets on \(k) ranks")
            print("train --allreduce buckets, \(k) ranks vs 1 process: loss max relative difference \(loss), parameters max difference \(weights.other) of scale (key bias, no effect: \(weights.keyBias))")
            #expect(loss <= 1e-6)
        }
    }

    /// Kills one rank of `mpirun -n 2` once `db` holds `steps` steps; the job must fail.
    static func killOneRank(after steps: Int, _ args: [String], db: String) throws {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: mpirun!)
        p.arguments = Array(mpiArgs(2, args).dropFirst())
        p.currentDirectoryURL = C.repo
        p.environment = ProcessInfo.processInfo.environment.merging(env.merging(["LNLENS_HOME": C.repo.path]) { $1 }) { $1 }
        (p.standardOutput, p.standardError) = (FileHandle.nullDevice, FileHandle.nullDevice)
        try p.run()
        let deadline = Date().addingTimeInterval(120)
        while Date() < deadline, p.isRunning {
            if let store = try? ResultsDatabase.openReadOnly(path: db), let n = try? store.trainSteps(runID: 1).count, n >= steps { break }
            Thread.sleep(forTimeInterval: 0.005)
        }
        #expect(p.isRunning, "the training finished before a rank could be killed")
        // The ranks are mpirun's children: kill the last started one (rank 1 of 2, or rank 0).
        let children = Self.children(of: p.processIdentifier)
        #expect(!children.isEmpty, "no rank of mpirun \(p.processIdentifier) found")
        if let victim = children.max() { kill(victim, SIGKILL) }
        p.waitUntilExit()
        #expect(p.terminationStatus != 0, "mpirun succeeded although a rank was killed")
        // mpirun may return before the other rank is gone; a resume refuses a run whose writer lives.
        let gone = Date().addingTimeInterval(60)
        while Date() < gone, children.contains(where: { FileManager.default.fileExists(atPath: "/proc/\($0)") }) {
            Thread.sleep(forTimeInterval: 0.05)
        }
    }

    /// The process ids whose parent is `pid` (from /proc).
    static func children(of pid: Int32) -> [Int32] {
        let entries = (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []
        return entries.compactMap(Int32.init).filter { child in
            guard let stat = try? String(contentsOfFile: "/proc/\(child)/stat", encoding: .utf8),
                  let close = stat.lastIndex(of: ")") else { return false }
            let fields = stat[stat.index(after: close)...].split(separator: " ")
            return fields.count > 1 && Int32(fields[1]) == pid
        }
    }

    @Test func aKilledRankFailsTheJobAndItsCheckpointResumesOnAnyK() throws {
        let dir = try C.tempDir()
        defer { try? FileManager.default.removeItem(at: dir) }
        let config = try T.config(in: dir)
        func args(_ name: String) -> [String] {
            ["train", "--init", config] + Self.batch + ["--steps", "30", "--checkpoint-every", "5",
                                                        "--out", dir.appendingPathComponent(name).path,
                                                        "--db", dir.appendingPathComponent("\(name).sqlite").path]
        }
        let full = try Self.run(0, args("full"))
        #expect(full.status == 0, "\(full.stderr)")
        for (name, resumeRanks) in [("same", 2), ("other", 4)] {
            let db = dir.appendingPathComponent("\(name).sqlite").path
            try Self.killOneRank(after: 13, args(name), db: db)
            #expect(try ResultsDatabase.openReadOnly(path: db).run(id: 1)?.status == .running)
            let resumed = try Self.run(resumeRanks, args(name) + ["--resume"])
            #expect(resumed.status == 0, "resume on \(resumeRanks) ranks: \(resumed.stderr)")
            let weights = try Self.expectSameParameters(dir.appendingPathComponent("full").path, dir.appendingPathComponent(name).path,
                                                        "resumed on \(resumeRanks) ranks")
            print("killed on 2 ranks, resumed on \(resumeRanks): parameters max difference \(weights.other) of scale (key bias, no effect: \(weights.keyBias)) vs 1 process")
            #expect(try Self.lossDifference(dir.appendingPathComponent("full.sqlite").path, db) <= 1e-6)
            #expect(try ResultsDatabase.openReadOnly(path: db).run(id: 1)?.status == .completed)
        }
    }

    /// Ranks started with other options refuse to run, in one line, before anything is written.
    @Test func ranksWithOtherOptionsAreRefused() throws {
        let dir = try C.tempDir()
        defer { try? FileManager.default.removeItem(at: dir) }
        let config = try T.config(in: dir)
        let out = dir.appendingPathComponent("o").path, db = dir.appendingPathComponent("o.sqlite").path
        // Rank 1 sees another seed: Open MPI's MPMD form `A : B` starts each rank with its own command line.
        let common = ["train", "--init", config] + Self.batch + ["--steps", "4", "--out", out, "--db", db]
        let p = Process()
        p.executableURL = URL(fileURLWithPath: Self.mpirun!)
        p.arguments = ["--allow-run-as-root", "--oversubscribe", "-n", "1", C.binary.path] + common + ["--seed", "1"]
            + [":", "-n", "1", C.binary.path] + common + ["--seed", "2"]
        p.environment = ProcessInfo.processInfo.environment.merging(Self.env.merging(["LNLENS_HOME": C.repo.path]) { $1 }) { $1 }
        let err = Pipe()
        (p.standardOutput, p.standardError) = (FileHandle.nullDevice, err)
        try p.run()
        let stderr = String(decoding: err.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        p.waitUntilExit()
        #expect(p.terminationStatus != 0)
        let lines = stderr.split(separator: "\n").filter { $0.hasPrefix("lnlens: error:") }
        #expect(lines.count == 1 && lines[0].contains("rank 1 of 2 has other options than rank 0"), "\(stderr)")
        // Nothing written: no --out folder (which would make the corrected command need --force) and no database.
        #expect(!FileManager.default.fileExists(atPath: out), "a refused start left \(out)")
        #expect(!FileManager.default.fileExists(atPath: db), "a refused start left \(db)")
    }

    /// Commands that do not run data-parallel refuse several ranks.
    @Test func otherCommandsRefuseSeveralRanks() throws {
        let r = try Self.run(2, ["inspect", "gpt2-tiny"])
        #expect(r.status != 0)
        #expect(r.stderr.contains("does not run over MPI"), "\(r.stderr)")
    }
}
