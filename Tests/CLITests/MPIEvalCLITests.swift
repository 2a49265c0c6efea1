import Foundation
import ResultsStore
import Testing

/// `mpirun -n K lnlens eval` against one process: the same stored rows (every model's loss per
/// window, the summaries), bit for bit — each rank runs whole passes of one process's batches, and
/// the gather adds only zeros — and measured, to 1e-6 relative at least; errors on any rank store
/// nothing.
extension MPICLITests {
    /// ~2,000 tokens of the held-out text.
    static let evalText: String = {
        let text = try! String(contentsOf: C.repo.appendingPathComponent("corpus/heldout.txt"), encoding: .utf8)
        let file = FileManager.default.temporaryDirectory.appendingPathComponent("lnlens-mpi-eval-\(getpid()).txt")
        try! String(text.prefix(8_000)).write(to: file, atomically: true, encoding: .utf8)
        return file.path
    }()

    /// Two embedded models on ~30 windows of 64 tokens, in chunks of 8: each chunk is cut into
    /// passes of `batch` windows and the passes shared by the ranks.
    static func evalArgs(batch: Int, db: String) -> [String] {
        ["eval", "gpt2-tiny", "gpt2-tiny-lnfree", "--text", evalText, "--context", "64", "--batch", "\(batch)",
         "--chunk-size", "8", "--db", db]
    }

    /// Every (model, window) loss of run 1 of `db`, and its summaries by (key, metric).
    static func evalRows(_ db: String) throws -> (losses: [String: Double], summaries: [String: Double]) {
        let store = try ResultsDatabase.openReadOnly(path: db)
        let losses = Dictionary(uniqueKeysWithValues: try store.results(runID: 1).map { ("\($0.site)#\($0.promptIndex)", $0.value) })
        let summaries = Dictionary(uniqueKeysWithValues: try store.summaries(runID: 1).map { ("\($0.scope)/\($0.key)/\($0.metric)", $0.value) })
        return (losses, summaries)
    }

    @Test(arguments: [1, 3])
    func evalOnKRanksStoresTheRowsOfOneProcess(batch: Int) throws {
        let dir = try C.tempDir()
        defer { try? FileManager.default.removeItem(at: dir) }
        let baseDB = dir.appendingPathComponent("eval-0.sqlite").path
        let base = try Self.run(0, Self.evalArgs(batch: batch, db: baseDB))
        #expect(base.status == 0, "\(base.stderr)")
        let reference = try Self.evalRows(baseDB)
        #expect(reference.losses.count > 40, "two models on at least 20 windows")
        for k in [2, 4] {
            let db = dir.appendingPathComponent("eval-\(k).sqlite").path
            let r = try Self.run(k, Self.evalArgs(batch: batch, db: db))
            #expect(r.status == 0, "eval on \(k) ranks: \(r.stderr)")
            #expect(r.stdout == base.stdout.replacingOccurrences(of: baseDB, with: db), "rank 0 prints what one process prints")
            let rows = try Self.evalRows(db)
            #expect(rows.losses.keys.sorted() == reference.losses.keys.sorted())
            let worst = reference.losses.map { key, value in abs((rows.losses[key] ?? .infinity) - value) / abs(value) }.max() ?? .infinity
            let same = reference.losses.filter { rows.losses[$0.key] == $0.value }.count
            print("eval --batch \(batch), \(k) ranks vs 1 process: \(same) of \(reference.losses.count) window losses bit-identical, max relative difference \(worst)")
            #expect(worst <= 1e-6)
            #expect(same == reference.losses.count, "each rank runs one process's passes: the same bits")
            #expect(rows.summaries == reference.summaries)
            #expect(try ResultsDatabase.openReadOnly(path: db).run(id: 1)?.status == .completed)
        }
    }

    /// `lnlens ARGS_A` as rank 0 and `lnlens ARGS_B` as rank 1 (Open MPI's MPMD form `A : B`).
    static func runTwo(_ a: [String], _ b: [String]) throws -> C.Result {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: mpirun!)
        p.arguments = ["--allow-run-as-root", "--oversubscribe", "-n", "1", C.binary.path] + a + [":", "-n", "1", C.binary.path] + b
        p.currentDirectoryURL = C.repo
        p.environment = ProcessInfo.processInfo.environment.merging(env.merging(["LNLENS_HOME": C.repo.path]) { $1 }) { $1 }
        let out = Pipe(), err = Pipe()
        (p.standardOutput, p.standardError) = (out, err)
        try p.run()
        let o = out.fileHandleForReading.readDataToEndOfFile(), e = err.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        return C.Result(status: p.terminationStatus, stdout: String(decoding: o, as: UTF8.self), stderr: String(decoding: e, as: UTF8.self))
    }

    /// Ranks with other options, an error every rank meets, and an error on rank 1 alone: one
    /// error line, a non-zero exit, and no database written.
    @Test func evalErrorsOnAnyRankStoreNothing() throws {
        let dir = try C.tempDir()
        defer { try? FileManager.default.removeItem(at: dir) }
        let db = dir.appendingPathComponent("e.sqlite").path
        func errorLines(_ r: C.Result) -> [Substring] { r.stderr.split(separator: "\n").filter { $0.hasPrefix("lnlens: error:") } }
        let differ = try Self.runTwo(Self.evalArgs(batch: 1, db: db), Self.evalArgs(batch: 2, db: db))
        #expect(differ.status != 0)
        #expect(errorLines(differ).count == 1 && errorLines(differ)[0].contains("rank 1 of 2 has other options than rank 0"), "\(differ.stderr)")
        let everyRank = try Self.run(2, Self.evalArgs(batch: 1, db: db) + ["--context", "1000"])
        #expect(everyRank.status != 0)
        #expect(errorLines(everyRank).count == 1 && errorLines(everyRank)[0].contains("--context"), "\(everyRank.stderr)")
        let missing = dir.appendingPathComponent("missing.txt").path
        var other = Self.evalArgs(batch: 1, db: db)
        other[other.firstIndex(of: Self.evalText)!] = missing
        let rankOne = try Self.runTwo(Self.evalArgs(batch: 1, db: db), other)
        #expect(rankOne.status != 0)
        #expect(errorLines(rankOne).count == 1 && errorLines(rankOne)[0].contains("missing.txt"), "\(rankOne.stderr)")
        #expect(!FileManager.default.fileExists(atPath: db), "nothing stored")
    }
}
