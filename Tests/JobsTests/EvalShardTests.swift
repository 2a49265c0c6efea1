import Foundation
import GPT2
import Jobs
import ResultsStore
import Testing
import Training

/// `eval --shard I/N` and merging eval shards: shards of the eval job on the test checkpoints,
/// each in its own database file, merged and compared with one unsharded run bit for bit.
@Suite struct EvalShardTests {
    typealias Folder = ShardMergeTests.Folder
    typealias Stored = ShardMergeTests.Stored

    /// The first 3,000 characters of corpus/heldout.txt, tokenized: about 700 tokens, 21 windows
    /// of 32 or 43 of 16.
    static let text: TokenCorpus = {
        let tok = try! DLATests.tokenizer()
        let head = try! String(contentsOf: DLATests.repo.appendingPathComponent("corpus/heldout.txt"), encoding: .utf8).prefix(3_000)
        return TokenCorpus(path: "heldout-head", tokens: tok.encode(String(head)).map { Int32($0) }, documents: 1)
    }()

    static func model(_ name: String) throws -> (GPT2Model, String) {
        let checkpoint = try Checkpoint.open(DLATests.fixtures.appendingPathComponent("models/\(name)").path)
        return (try GPT2Model(checkpoint: checkpoint, processing: .none), try checkpoint.weightsHash())
    }

    /// The eval job of both test checkpoints over `text`, one window per forward pass unless told:
    /// then every window's loss is the same whichever windows a shard holds.
    static func job(context: Int = 32, batch: Int = 1, shard: Shard? = nil) throws -> EvalJob {
        let entries = try ["tiny-ln", "tiny-lnfree"].map { name in
            let (model, hash) = try model(name)
            return EvalJob.Entry(name: name, model: model, hash: hash)
        }
        var job = EvalJob(entries: entries, text: text, context: context, batch: batch, toolVersion: "test")
        job.shard = shard
        return job
    }

    /// Runs shard i/n of `job` into its own file `name-i.sqlite`; returns the paths.
    static func shards(_ n: Int, in folder: Folder, name: String = "eval",
                       job make: (Shard) throws -> EvalJob) throws -> [String] {
        try ShardMergeTests.shardFiles(n, in: folder, name: name) { _ = try make($0).run(db: $1) }
    }

    /// One window per pass, a window's loss is the same bits whichever windows are scored with
    /// it; with several per pass the windows that share it move the loss in the last digits
    /// (which is why `batch` is in `EvalOptions.Computation`).
    @Test(arguments: ["tiny-ln", "tiny-lnfree"])
    func windowLossesAndTheBatch(model name: String) throws {
        let (model, _) = try Self.model(name)
        let one = try Evaluation.loss(model: model, text: Self.text, context: 32, batch: 1)
        #expect(one.windows == Self.text.blockCount(seqLen: 32) && one.windows > 8)
        #expect(one.windowLosses.map(\.window) == Array(0..<one.windows))
        let some = try Evaluation.loss(model: model, text: Self.text, context: 32, windows: [1, 4, 7, 10], batch: 1)
        #expect(some.windowLosses.map(\.loss.bitPattern) == [1, 4, 7, 10].map { one.windowLosses[$0].loss.bitPattern })
        #expect(some.windows == 4 && some.predictions == 4 * 31)
        let eight = try Evaluation.loss(model: model, text: Self.text, context: 32, batch: 8)
        #expect(eight.windowLosses.map(\.window) == one.windowLosses.map(\.window))
        let worst = zip(one.windowLosses, eight.windowLosses).map { abs($0.loss - $1.loss) }.max()!
        print("\(name): window losses, batch 8 vs batch 1: max |diff| \(worst)")
        #expect(worst < 1e-5)
    }

    /// The interval is mean ± 1.96 · sample sd / √n, the mean itself for one window.
    @Test func summaryOfWindowLosses() {
        let s = Evaluation.summary(losses: [1, 2, 3, 6])
        let half = 1.96 * (14.0 / 3 / 4).squareRoot()
        #expect(s.loss == 3 && s.ciLow == 3 - half && s.ciHigh == 3 + half)
        let single = Evaluation.summary(losses: [2.5])
        #expect(single.loss == 2.5 && single.ciLow == 2.5 && single.ciHigh == 2.5)
    }

    /// Each test checkpoint's LN mode, as the run records it per model.
    static let lnModes = ["tiny-ln": "layernorm", "tiny-lnfree": "ln-free"]

    /// The unsharded run stores each window's loss per model and summaries computed from them,
    /// with each model's LN mode (`ln_free`); N shards merged store the same rows and the same
    /// summaries, bit for bit.
    @Test(arguments: [3, 4])
    func shardsMergedEqualOneRun(count: Int) throws {
        let folder = try Folder()
        let out = try ResultsDatabase(path: folder.path("out.sqlite"))
        let (whole, results) = try Self.job().run(db: out)
        let before = try Stored(out, whole)
        let n = Self.text.blockCount(seqLen: 32)
        #expect(before.prompts.isEmpty)
        #expect(before.results.count == 2 * n)
        #expect(before.results.allSatisfy { $0.quantity == "loss" && $0.layer == nil && $0.position == nil && $0.head == nil })
        #expect(before.results.filter { $0.site == "tiny-ln" }.map(\.promptIndex) == Array(0..<n))
        #expect(before.summaries == EvalJob.summaries(from: before.results, lnModes: Self.lnModes).sorted { ($0.key, $0.metric) < ($1.key, $1.metric) })
        // The results the job returns are the stored ones.
        for (name, r) in zip(["tiny-ln", "tiny-lnfree"], results) {
            #expect(r.windowLosses.map(\.loss) == before.results.filter { $0.site == name }.map(\.value))
            let stored = Dictionary(uniqueKeysWithValues: before.summaries.filter { $0.key == name }.map { ($0.metric, $0.value) })
            #expect(stored == ["loss": r.loss, "ci_low": r.ciLow, "ci_high": r.ciHigh, "windows": Double(n), "ln_free": name == "tiny-lnfree" ? 1 : 0])
        }

        let paths = try Self.shards(count, in: folder) { try Self.job(shard: $0) }
        for (i, path) in paths.enumerated() {
            let db = try ResultsDatabase.openReadOnly(path: path)
            let run = try #require(try db.run(id: 1))
            #expect(run.shardIndex == i && run.shardCount == count && run.nPrompts == n && run.status == .completed)
            let windows = (0..<n).filter { $0 % count == i }
            #expect(try db.results(runID: 1).filter { $0.site == "tiny-lnfree" }.map(\.promptIndex) == windows)
            #expect(try db.summaries(runID: 1).filter { $0.metric == "windows" }.map(\.value) == [Double(windows.count), Double(windows.count)])
        }

        let merged = try MergeJob(outputPath: out.path, shardPaths: paths.reversed()).run()
        #expect(merged.count == 1)
        guard case .created(let id) = merged[0].outcome else { Issue.record("not created: \(merged[0].outcome)"); return }
        let stored = try Stored(out, id)
        #expect(stored == before)
        #expect(EvalJob.lnModes(from: stored.summaries) == Self.lnModes)
        #expect(stored.summaries.map(\.value.bitPattern) == before.summaries.map(\.value.bitPattern))
        #expect(try Stored(out, whole) == before)
        print("eval, \(count) shards merged: \(stored.results.count) rows, \(stored.summaries.count) summaries equal the unsharded run's")
        let run = try #require(try out.run(id: id)), unsharded = try #require(try out.run(id: whole))
        #expect(run.command == "eval" && run.shardIndex == nil && run.shardCount == nil && run.nPrompts == n)
        #expect(run.modelHash == unsharded.modelHash && run.modelPath == unsharded.modelPath)
        #expect(try out.completedPromptIndices(runID: id) == Set(0..<n))
        #expect(try out.shards(runID: id).map(\.nPrompts) == (0..<count).map { i in (0..<n).filter { $0 % count == i }.count })
        #expect(try MergeJob(outputPath: out.path, shardPaths: paths).run().map(\.outcome) == [.alreadyMerged(id)])
    }

    /// With several windows per pass the shards' passes hold other windows than the unsharded
    /// run's: the rows agree to float precision, and the summaries are those of the merged rows.
    @Test func batchedShardsMatchToFloatPrecision() throws {
        let folder = try Folder()
        let reference = try ResultsDatabase.inMemory()
        let whole = try Stored(reference, try Self.job(batch: 8).run(db: reference).0)
        let paths = try Self.shards(3, in: folder) { try Self.job(batch: 8, shard: $0) }
        let out = try ResultsDatabase(path: folder.path("out.sqlite"))
        let merged = try Stored(out, try MergeJob(outputPath: out.path, shardPaths: paths).run()[0].outcome.runID)
        #expect(merged.results.map { "\($0.promptIndex) \($0.site)" } == whole.results.map { "\($0.promptIndex) \($0.site)" })
        let worst = zip(merged.results, whole.results).map { abs($0.value - $1.value) }.max()!
        print("eval, batch 8: merged vs unsharded max |diff| \(worst)")
        #expect(worst < 1e-5)
        #expect(merged.summaries == EvalJob.summaries(from: merged.results, lnModes: Self.lnModes).sorted { ($0.key, $0.metric) < ($1.key, $1.metric) })
        for (a, b) in zip(merged.summaries, whole.summaries) { #expect(abs(a.value - b.value) < 1e-5, "\(a.key) \(a.metric)") }
    }

    /// A missing shard, shards of another --context or --batch, and a shard with no window are
    /// refused with one line; nothing is written.
    @Test func refusals() throws {
        let folder = try Folder()
        let good = try Self.shards(3, in: folder) { try Self.job(shard: $0) }
        let out = folder.path("out.sqlite")
        func refused(_ paths: [String]) -> String {
            ShardMergeTests.message(#expect(throws: MergeError.self) { try MergeJob(outputPath: out, shardPaths: paths).run() })
        }
        let hash = try ResultsDatabase.openReadOnly(path: good[0]).run(id: 1)!.modelHash.prefix(12)
        #expect(refused([good[0], good[2]])
                == "shard 1/3 of eval run of tiny-ln | tiny-lnfree (model hash \(hash)) is missing (2 of 3 given): add its database to the command")
        let shorter = folder.path("context16-1.sqlite")
        _ = try Self.job(context: 16, shard: try Shard(index: 1, count: 3)).run(db: try ResultsDatabase(path: shorter))
        #expect(refused([good[0], shorter, good[2]])
                == "\(shorter) run 1 is not a shard of the same run as \(good[0]) run 1: its option context is 16 but that one's is 32; merge only the shards of one run")
        let batched = folder.path("batch8-2.sqlite")
        _ = try Self.job(batch: 8, shard: try Shard(index: 2, count: 3)).run(db: try ResultsDatabase(path: batched))
        #expect(refused([good[0], good[1], batched])
                == "\(batched) run 1 is not a shard of the same run as \(good[0]) run 1: its option batch is 8 but that one's is 1; merge only the shards of one run")
        #expect(!FileManager.default.fileExists(atPath: out))
        // More shards than windows: the empty shard is refused before anything is stored.
        let n = Self.text.blockCount(seqLen: 32)
        let empty = try ResultsDatabase.inMemory()
        let error = #expect(throws: ShardError.self) { try Self.job(shard: try Shard(index: n, count: n + 1)).run(db: empty) }
        #expect(ShardMergeTests.message(error)
                == "--shard \(n)/\(n + 1): the text has only \(n) windows of 32 tokens: use at most \(n) shards")
        #expect(try empty.runs().isEmpty)
    }
}
