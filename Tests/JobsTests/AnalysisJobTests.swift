import Analysis
import Foundation
import GPT2
import Jobs
import ResultsStore
import Testing
import Training

/// The job the one-pass analyses share: shards merged equal one run, a stopped run resumes to the
/// rows of an uninterrupted one, the rows do not depend on the batch beyond float precision.
@Suite struct AnalysisJobTests {
    typealias Folder = ShardMergeTests.Folder
    typealias Stored = ShardMergeTests.Stored

    static func job<A: SequenceAnalysis>(_: A.Type, model name: String = "tiny-ln", batch: Int = 1, shard: Shard? = nil)
        throws -> AnalysisJob<A> {
        let checkpoint = try Checkpoint.open(DLATests.fixtures.appendingPathComponent("models/\(name)").path)
        var options = AnalysisOptions()
        (options.computation.batch, options.computation.chunkSize, options.computation.context) = (batch, 5, 16)
        var job = AnalysisJob(analysis: A(options: options), model: try GPT2Model(checkpoint: checkpoint, processing: .all),
                              modelPath: name, modelHash: try checkpoint.weightsHash(),
                              input: .windows(EvalShardTests.text, context: 16), options: options, toolVersion: "test")
        job.shard = shard
        return job
    }

    /// N shards, one window per pass, merged: the unsharded run's rows and summaries bit for bit.
    @Test(arguments: [SinkAnalysis.command, NormAnalysis.command, LensAnalysis.command])
    func shardsMergedEqualOneRun(command: String) throws {
        func run(_ shard: Shard?, _ db: ResultsDatabase) throws -> Int64 {
            switch command {
            case SinkAnalysis.command: try Self.job(SinkAnalysis.self, shard: shard).run(db: db)
            case NormAnalysis.command: try Self.job(NormAnalysis.self, shard: shard).run(db: db)
            default: try Self.job(LensAnalysis.self, shard: shard).run(db: db)
            }
        }
        let folder = try Folder()
        let out = try ResultsDatabase(path: folder.path("out.sqlite"))
        let whole = try Stored(out, try run(nil, out))
        let n = EvalShardTests.text.blockCount(seqLen: 16)
        #expect(Set(whole.results.map(\.promptIndex)) == Set(0..<n))
        #expect(whole.results.filter { $0.site == "input" }.map(\.value) == Array(repeating: 16, count: n))
        let paths = try ShardMergeTests.shardFiles(3, in: folder, name: command) { _ = try run($0, $1) }
        let merged = try MergeJob(outputPath: out.path, shardPaths: paths).run()
        guard merged.count == 1, case .created(let id) = merged[0].outcome else { Issue.record("not merged: \(merged)"); return }
        let stored = try Stored(out, id)
        #expect(stored.results == whole.results)
        #expect(stored.summaries.map(\.value.bitPattern) == whole.summaries.map(\.value.bitPattern))
        print("\(command): 3 shards merged, \(stored.results.count) rows and \(stored.summaries.count) summaries equal one run's")
    }

    /// Stopped after its first chunk (Ctrl-C), the run is interrupted; resumed, it ends with the
    /// rows and summaries of an uninterrupted run.
    @Test func interruptedRunResumesToTheSameRows() throws {
        let job = try Self.job(SinkAnalysis.self)
        let db = try ResultsDatabase.inMemory()
        let reference = try Stored(db, try job.run(db: db))
        var stops = 0
        do {
            _ = try job.run(db: db) { done, _ in if done > 0 { stops += 1; throw JobStop() } }
            Issue.record("the run did not stop")
        } catch let JobError.interrupted(runID, done, total, unit, _) {
            #expect(done == 5 && total == EvalShardTests.text.blockCount(seqLen: 16) && unit == "windows")
            let stopped = try db.run(id: runID)?.status
            #expect(stopped == .interrupted)
            let id = try job.run(db: db, resume: runID)
            let status = try db.run(id: id)?.status
            #expect(id == runID && status == .completed)
            let resumed = try Stored(db, id)
            #expect(resumed.results == reference.results && resumed.summaries == reference.summaries)
        }
        #expect(stops == 1)
    }

    /// Several windows per pass move values only in the last float digits.
    @Test func batchedRowsMatchToFloatPrecision() throws {
        let db = try ResultsDatabase.inMemory()
        let one = try Stored(db, try Self.job(LensAnalysis.self, model: "tiny-lnfree").run(db: db))
        let four = try Stored(db, try Self.job(LensAnalysis.self, model: "tiny-lnfree", batch: 4).run(db: db))
        #expect(one.results.count == four.results.count)
        let worst = zip(one.results, four.results).map { abs($0.value - $1.value) / max(1, abs($1.value)) }.max()!
        print("lens, batch 4 vs batch 1: max relative |diff| \(worst)")
        #expect(worst < 1e-5)
    }

    /// Pooled moments are the mean and sample standard deviation of the pooled values.
    @Test func pooledMomentsArePooledValues() {
        let parts: [[Double]] = [[1, 2, 3], [10], [4, 4.5]]
        let pooled = PooledMoments.combine(parts.map { v in
            (v.count, v.reduce(0, +) / Double(v.count), v.reduce(0) { $0 + $1 * $1 } / Double(v.count))
        })
        let all = parts.flatMap { $0 }, mean = all.reduce(0, +) / Double(all.count)
        let sd = (all.reduce(0) { $0 + ($1 - mean) * ($1 - mean) } / Double(all.count - 1)).squareRoot()
        #expect(abs(pooled.mean - mean) < 1e-12 && abs(pooled.sd - sd) < 1e-12 && pooled.count == 6)
    }
}
