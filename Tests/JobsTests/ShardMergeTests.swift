import Analysis
import Foundation
import GPT2
import Jobs
import ResultsStore
import Testing

/// `--shard I/N` and `lnlens merge` without Slurm: shards of the DLA job on the test checkpoints,
/// each in its own database file, merged and compared with one unsharded run.
@Suite struct ShardMergeTests {
    /// A temporary folder removed at the end of the test.
    final class Folder {
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("lnlens-shard-\(UUID().uuidString)")
        init() throws { try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true) }
        func path(_ name: String) -> String { url.appendingPathComponent(name).path }
        deinit { try? FileManager.default.removeItem(at: url) }
    }

    /// The DLA job over the fixture prompts (8 of them), one prompt per batch unless told: then
    /// every prompt's numbers are the same whichever prompts share its chunk.
    static func job(model: String = "tiny-ln", shard: Shard? = nil, batchSize: Int = 1, toolVersion: String = "test",
                    prependBOS: Bool? = nil) throws -> DLAJob {
        var job = try DLATests.runner(model: model)
        job.options.computation.prependBOS = prependBOS
        job.batchSize = batchSize
        job.shard = shard
        job.toolVersion = toolVersion
        return job
    }

    /// Runs shard i/n of `job` into its own file `name-i.sqlite`; returns the paths.
    static func shards(_ n: Int, in folder: Folder, name: String = "shard",
                       job make: (Shard) throws -> DLAJob) throws -> [String] {
        try shardFiles(n, in: folder, name: name) { try make($0).run(db: $1) }
    }

    /// Runs `run(shard i/n, database)` into its own file `name-i.sqlite` for each i; returns the paths.
    static func shardFiles(_ n: Int, in folder: Folder, name: String,
                           run: (Shard, ResultsDatabase) throws -> Void) throws -> [String] {
        try (0..<n).map { i in
            let path = folder.path("\(name)-\(i).sqlite")
            try run(try Shard(index: i, count: n), try ResultsDatabase(path: path))
            return path
        }
    }

    /// Everything two runs must share to be "the same run": prompts, rows, summaries.
    struct Stored: Equatable {
        let prompts: [PromptRow], results: [ResultRow], summaries: [SummaryRow]
        init(_ db: ResultsDatabase, _ id: Int64) throws {
            prompts = try db.prompts(runID: id)
            results = try db.results(runID: id)
            summaries = try db.summaries(runID: id)
        }
    }

    static func message(_ error: (any Error)?) -> String {
        (error as? LocalizedError)?.errorDescription ?? "\(String(describing: error))"
    }

    // MARK: Shard

    @Test func shardTakesEveryNthUnit() throws {
        let shard = try Shard(parsing: "1/3")
        #expect(shard.index == 1 && shard.count == 3 && shard.description == "1/3")
        #expect((0..<10).filter(shard.contains) == [1, 4, 7])
        #expect(shard.select(Array("abcdefg")) == ["b", "e"])
        let all = try (0..<3).flatMap { try Shard(index: $0, count: 3).select(Array(0..<10)) }
        #expect(all.sorted() == Array(0..<10))
        #expect(try Shard(parsing: "0/1").select([5, 6]) == [5, 6])
    }

    @Test(arguments: [
        ("4/4", "--shard 4/4: I must be one of 0 … 3 (shards are numbered from 0)"),
        ("0/0", "--shard 0/0: N must be at least 1"),
        ("x", "--shard x: give I/N, shard I of N with 0 ≤ I < N, e.g. --shard 0/4"),
        ("-1/4", "--shard -1/4: give I/N, shard I of N with 0 ≤ I < N, e.g. --shard 0/4"),
        ("1/4/2", "--shard 1/4/2: give I/N, shard I of N with 0 ≤ I < N, e.g. --shard 0/4"),
        ("", "--shard : give I/N, shard I of N with 0 ≤ I < N, e.g. --shard 0/4"),
    ])
    func badShardOptions(text: String, expected: String) throws {
        let error = #expect(throws: ShardError.self) { try Shard(parsing: text) }
        #expect(Self.message(error) == expected)
    }

    @Test func slurmArrayVariables() throws {
        func shard(_ env: [String: String]) throws -> String? { try Shard.slurmArrayTask(environment: env)?.description }
        #expect(try shard([:]) == nil)
        #expect(try shard(["SLURM_JOB_ID": "7"]) == nil)
        // --array=0-3
        #expect(try shard(["SLURM_ARRAY_TASK_ID": "2", "SLURM_ARRAY_TASK_COUNT": "4", "SLURM_ARRAY_TASK_MIN": "0"]) == "2/4")
        // --array=1-4: task ids from 1
        #expect(try shard(["SLURM_ARRAY_TASK_ID": "1", "SLURM_ARRAY_TASK_COUNT": "4", "SLURM_ARRAY_TASK_MIN": "1"]) == "0/4")
        #expect(try shard(["SLURM_ARRAY_TASK_ID": "4", "SLURM_ARRAY_TASK_COUNT": "4", "SLURM_ARRAY_TASK_MIN": "1"]) == "3/4")
        // --array=0-6:2
        #expect(try shard(["SLURM_ARRAY_TASK_ID": "4", "SLURM_ARRAY_TASK_COUNT": "4", "SLURM_ARRAY_TASK_MIN": "0",
                           "SLURM_ARRAY_TASK_STEP": "2"]) == "2/4")
        // No count: from MIN and MAX.
        #expect(try shard(["SLURM_ARRAY_TASK_ID": "3", "SLURM_ARRAY_TASK_MIN": "1", "SLURM_ARRAY_TASK_MAX": "5"]) == "2/5")

        func refused(_ env: [String: String]) -> String {
            Self.message(#expect(throws: ShardError.self) { try Shard.slurmArrayTask(environment: env) })
        }
        #expect(refused(["SLURM_ARRAY_TASK_ID": "abc", "SLURM_ARRAY_TASK_COUNT": "4"])
                == "SLURM_ARRAY_TASK_ID=abc: not a non-negative integer; run inside a Slurm array job or pass --shard I/N")
        #expect(refused(["SLURM_ARRAY_TASK_ID": "1", "SLURM_ARRAY_TASK_COUNT": "four"])
                == "SLURM_ARRAY_TASK_COUNT=four: not a non-negative integer; run inside a Slurm array job or pass --shard I/N")
        #expect(refused(["SLURM_ARRAY_TASK_ID": "5", "SLURM_ARRAY_TASK_COUNT": "4"])
                == "SLURM_ARRAY_TASK_ID=5: not one of the array's 4 tasks (SLURM_ARRAY_TASK_MIN=0, SLURM_ARRAY_TASK_STEP=1, SLURM_ARRAY_TASK_COUNT=4); submit one task per shard (e.g. --array=0-3) or pass --shard I/N")
        #expect(refused(["SLURM_ARRAY_TASK_ID": "0", "SLURM_ARRAY_TASK_COUNT": "4", "SLURM_ARRAY_TASK_MIN": "1"]).hasPrefix(
            "SLURM_ARRAY_TASK_ID=0: not one of the array's 4 tasks"))
        #expect(refused(["SLURM_ARRAY_TASK_ID": "3", "SLURM_ARRAY_TASK_COUNT": "0"])
                == "SLURM_ARRAY_TASK_COUNT=0: must be at least 1; pass --shard I/N")
        #expect(refused(["SLURM_ARRAY_TASK_ID": "3"])
                == "SLURM_ARRAY_TASK_COUNT is not set: SLURM_ARRAY_TASK_ID=3 is set but not the array's size; pass --shard I/N")
    }

    // MARK: Sharded runs

    /// A shard run stores its prompts only, under their indices in the whole prompt set, and
    /// records its shard; n_prompts stays the whole set's.
    @Test func shardRunStoresItsPromptsUnderGlobalIndices() throws {
        let db = try ResultsDatabase.inMemory()
        let id = try Self.job(shard: try Shard(index: 1, count: 3)).run(db: db)
        let run = try #require(try db.run(id: id))
        #expect(run.shardIndex == 1 && run.shardCount == 3 && run.nPrompts == 8 && run.status == .completed)
        #expect(try db.prompts(runID: id).map(\.promptIndex) == [1, 4, 7])
        #expect(Set(try db.results(runID: id).map(\.promptIndex)) == [1, 4, 7])
        // Markers name exactly the shard's prompts.
        #expect(try db.completedPromptIndices(runID: id) == [1, 4, 7])
    }

    /// An interrupted shard resumes to the rows of an uninterrupted one, and only as the same shard.
    @Test func shardRunResumesOnlyAsTheSameShard() throws {
        let folder = try Folder()
        let shard = try Shard(index: 1, count: 2)
        let reference = try ResultsDatabase.inMemory()
        let referenceID = try Self.job(shard: shard).run(db: reference)

        let db = try ResultsDatabase(path: folder.path("s.sqlite"))
        var job = try Self.job(shard: shard)
        job.chunkSize = 2
        #expect(throws: JobError.interrupted(runID: 1, done: 2, total: 4, unit: "prompts", resume: "--resume 1")) {
            try job.run(db: db) { done, _ in if done >= 2 { throw JobStop() } }
        }
        #expect(try db.completedPromptIndices(runID: 1) == [1, 3])
        #expect(throws: JobError.resumeMismatch(runID: 1, reason: "its shard (--shard) is 1/2 but this invocation has 0/2")) {
            try Self.job(shard: try Shard(index: 0, count: 2)).run(db: db, resume: 1)
        }
        #expect(throws: JobError.resumeMismatch(runID: 1, reason: "its shard (--shard) is 1/2 but this invocation has none")) {
            try Self.job().run(db: db, resume: 1)
        }
        #expect(try job.run(db: db, resume: 1) == 1)
        #expect(try Stored(db, 1).results == Stored(reference, referenceID).results)
        #expect(try db.run(id: 1)?.status == .completed)
    }

    // MARK: Merging

    /// Four shards merged equal one unsharded run, row for row and summary for summary; the
    /// output's other runs stay as they were.
    @Test(arguments: ["tiny-ln", "tiny-lnfree"])
    func fourShardsMergedEqualOneRun(model: String) throws {
        let folder = try Folder()
        let out = try ResultsDatabase(path: folder.path("out.sqlite"))
        let whole = try Self.job(model: model).run(db: out)
        let before = try Stored(out, whole)
        let paths = try Self.shards(4, in: folder) { try Self.job(model: model, shard: $0) }

        let merged = try MergeJob(outputPath: out.path, shardPaths: paths.reversed()).run()
        #expect(merged.count == 1)
        guard case .created(let id) = merged[0].outcome else { Issue.record("not created: \(merged[0].outcome)"); return }
        #expect(id == whole + 1)
        let stored = try Stored(out, id)
        #expect(stored == before)
        #expect(try Stored(out, whole) == before)  // the other run untouched
        print("\(model): 4 shards merged: \(stored.results.count) rows, \(stored.summaries.count) summaries equal the unsharded run's")

        let run = try #require(try out.run(id: id))
        let unsharded = try #require(try out.run(id: whole))
        #expect(run.status == .completed && run.shardIndex == nil && run.shardCount == nil)
        #expect(run.nPrompts == 8 && run.modelHash == unsharded.modelHash && run.promptSetHash == unsharded.promptSetHash)
        #expect(run.processingJSON == unsharded.processingJSON && run.lnMode == unsharded.lnMode)
        #expect(try out.completedPromptIndices(runID: id) == Set(0..<8))
        let provenance = try out.shards(runID: id)
        #expect(provenance.map(\.shardIndex) == [0, 1, 2, 3] && provenance.allSatisfy { $0.shardCount == 4 })
        #expect(provenance.map(\.nPrompts) == [2, 2, 2, 2] && provenance.allSatisfy { $0.sourceRunID == 1 })
        #expect(provenance.map { URL(fileURLWithPath: $0.sourcePath).lastPathComponent }
                == (0..<4).map { "shard-\($0).sqlite" })
        // Read back as any run: diff against the unsharded run finds nothing.
        let diff = try StoredRuns.dlaDiff(db: out, runA: whole, runB: id, top: 3)
        // (diff sums each head's prompts in dictionary order, so its NMAE may differ in the last bits.)
        #expect(diff.promptsCompared == 8 && abs((diff.a.headNMAE ?? 0) - (diff.b.headNMAE ?? 1)) < 1e-9)
        #expect(diff.signFlips.isEmpty && diff.rankMoves.isEmpty)
        #expect(try StoredRuns.attributions(db: out, runID: id) == StoredRuns.attributions(db: out, runID: whole))
    }

    /// With several prompts per batch the shards' batches differ from the unsharded run's, which
    /// moves values in the last float digits only; the summaries are those of the merged rows.
    @Test func batchedShardsMatchToFloatPrecision() throws {
        let folder = try Folder()
        let reference = try ResultsDatabase.inMemory()
        let whole = try Stored(reference, try Self.job(batchSize: 3).run(db: reference))
        let paths = try Self.shards(4, in: folder) { try Self.job(shard: $0, batchSize: 3) }
        let out = try ResultsDatabase(path: folder.path("out.sqlite"))
        let id = try MergeJob(outputPath: out.path, shardPaths: paths).run()[0].outcome.runID
        let merged = try Stored(out, id)
        #expect(merged.prompts == whole.prompts)
        #expect(merged.results.count == whole.results.count)
        var worst = 0.0
        for (a, b) in zip(merged.results, whole.results) {
            #expect((a.promptIndex, a.site, a.layer, a.head, a.quantity) == (b.promptIndex, b.site, b.layer, b.head, b.quantity))
            worst = max(worst, abs(a.value - b.value))
        }
        print("batch size 3: merged vs unsharded max |diff| \(worst)")
        #expect(worst < 1e-5)
        func sorted(_ s: [SummaryRow]) -> [SummaryRow] { s.sorted { ($0.scope, $0.key, $0.metric) < ($1.scope, $1.key, $1.metric) } }
        #expect(merged.summaries == sorted(DLAJob.summaries(from: merged.results)))
        for (a, b) in zip(merged.summaries, whole.summaries) { #expect(abs(a.value - b.value) < 1e-4, "\(a.key)") }
    }

    /// Text mode shards by window: every window once, its positions under their global indices.
    @Test func textWindowsShardAndMerge() throws {
        let folder = try Folder()
        let tok = try DLATests.tokenizer()
        let text = try TextPrompts.load(url: DLATests.repo.appendingPathComponent("prompts/pride-and-prejudice.txt"),
                                        tokenizer: tok, context: 9, maxTokens: 60)
        func job(_ shard: Shard?) throws -> DLAJob {
            var job = try Self.job(shard: shard)
            job.input = .text(text, .nextToken)
            return job
        }
        let reference = try ResultsDatabase.inMemory()
        let whole = try Stored(reference, try job(nil).run(db: reference))
        let paths = try Self.shards(3, in: folder) { try job($0) }
        let shard1 = try ResultsDatabase.openReadOnly(path: paths[1])
        #expect(try shard1.prompts(runID: 1).map(\.promptIndex) == Array(8..<16) + Array(32..<40) + Array(56..<60))
        let out = folder.path("out.sqlite")
        let id = try MergeJob(outputPath: out, shardPaths: paths).run()[0].outcome.runID
        #expect(try Stored(try ResultsDatabase.openReadOnly(path: out), id) == whole)
    }

    /// `dla --model A --model B --shard I/N` stores one run per model in each shard file: merging
    /// gives one run per model. Merging again (also from copies of the files) writes nothing.
    @Test func severalModelsPerShardFileAndIdempotency() throws {
        let folder = try Folder()
        let paths = try (0..<2).map { i in
            let path = folder.path("both-\(i).sqlite")
            let db = try ResultsDatabase(path: path)
            for model in ["tiny-ln", "tiny-lnfree"] { try Self.job(model: model, shard: try Shard(index: i, count: 2)).run(db: db) }
            return path
        }
        let out = folder.path("out.sqlite")
        let first = try MergeJob(outputPath: out, shardPaths: paths).run()
        #expect(first.map(\.outcome) == [.created(1), .created(2)])
        #expect(first.map { URL(fileURLWithPath: $0.record.modelPath).lastPathComponent } == ["tiny-ln", "tiny-lnfree"])
        let again = try MergeJob(outputPath: out, shardPaths: paths.reversed()).run()
        #expect(again.map(\.outcome) == [.alreadyMerged(1), .alreadyMerged(2)])
        let copies = try paths.enumerated().map { i, path in
            let copy = folder.path("copy-\(i).sqlite")
            try FileManager.default.copyItem(atPath: path, toPath: copy)
            return copy
        }
        #expect(try MergeJob(outputPath: out, shardPaths: copies).run().map(\.outcome) == [.alreadyMerged(1), .alreadyMerged(2)])
        let db = try ResultsDatabase.openReadOnly(path: out)
        #expect(try db.runs().count == 2)
        #expect(try db.counts(runID: 1).prompts == 8 && db.counts(runID: 2).prompts == 8)
        #expect(first[0].summaries == (try db.summaries(runID: 1)))
    }

    // MARK: Refusals

    /// Shards that do not belong together, missing, repeated or unfinished are refused with one
    /// line naming the file; nothing is written to the output.
    /// Shards whose options were stored as strings (before schema v3) and as JSON numbers and
    /// booleans merge when the values agree, and are refused when they do not, named by value.
    @Test func shardsMergeWhateverTheOptionsAreStoredAs() throws {
        let folder = try Folder()
        let old = #"{"batch_size": "1", "chunk_size": "4.0", "prepend_bos": "true", "min_gap": "0.5", "bootstrap": "crossed"}"#
        // Shard 0 recorded with the old options, shard 1 by the job (JSON numbers and booleans).
        func shards(_ name: String, prependBOS: Bool) throws -> [String] {
            try Self.shardFiles(2, in: folder, name: name) { shard, db in
                let job = try Self.job(shard: shard, prependBOS: shard.index == 0 ? true : prependBOS)
                if shard.index == 0 {
                    let id = try db.beginRun(try DLATests.record(job, optionsJSON: old, shard: shard))
                    try job.run(db: db, resume: id)
                } else {
                    try job.run(db: db)
                }
            }
        }
        let paths = try shards("shard", prependBOS: true)
        let merged = try MergeJob(outputPath: folder.path("out.sqlite"), shardPaths: paths).run()
        #expect(merged.count == 1 && merged[0].outcome == .created(1))
        let other = try shards("other", prependBOS: false)
        let error = #expect(throws: MergeError.self) { try MergeJob(outputPath: folder.path("out2.sqlite"), shardPaths: other).run() }
        #expect(Self.message(error).contains("its option prepend_bos is false but that one's is true"), "\(Self.message(error))")
    }

    @Test func refusals() throws {
        let folder = try Folder()
        let good = try Self.shards(4, in: folder) { try Self.job(shard: $0) }
        let out = folder.path("out.sqlite")
        func refused(_ paths: [String], runIDs: Set<Int64> = [], output: String? = nil) -> String {
            let error = #expect(throws: MergeError.self) {
                try MergeJob(outputPath: output ?? out, shardPaths: paths, runIDs: runIDs).run()
            }
            return Self.message(error)
        }
        func shard(_ i: Int, _ n: Int, _ name: String, job: (Shard) throws -> DLAJob) throws -> String {
            let path = folder.path(name)
            try job(try Shard(index: i, count: n)).run(db: try ResultsDatabase(path: path))
            return path
        }

        // Another model.
        let lnFree = try shard(2, 4, "lnfree-2.sqlite") { try Self.job(model: "tiny-lnfree", shard: $0) }
        let hashLN = try ResultsDatabase.openReadOnly(path: good[0]).run(id: 1)!.modelHash.prefix(12)
        let hashFree = try ResultsDatabase.openReadOnly(path: lnFree).run(id: 1)!.modelHash.prefix(12)
        #expect(refused([good[0], good[1], lnFree, good[3]])
                == "\(lnFree) run 1 is not a shard of the same run as \(good[0]) run 1: its model weights hash is \(hashFree) but that one's is \(hashLN); merge only the shards of one run")
        // Options that change the numbers, and another lnlens.
        let batched = try shard(1, 4, "batched-1.sqlite") { try Self.job(shard: $0, batchSize: 2) }
        #expect(refused([good[0], batched, good[2], good[3]])
                == "\(batched) run 1 is not a shard of the same run as \(good[0]) run 1: its option batch_size is 2 but that one's is 1; merge only the shards of one run")
        let newer = try shard(3, 4, "newer-3.sqlite") { try Self.job(shard: $0, toolVersion: "9.9.9") }
        #expect(refused(Array(good[0..<3]) + [newer])
                == "\(newer) run 1 is not a shard of the same run as \(good[0]) run 1: its tool version is 9.9.9 but that one's is test; merge only the shards of one run")
        let ofThree = try shard(1, 3, "of3-1.sqlite") { try Self.job(shard: $0) }
        #expect(refused([good[0], ofThree, good[2], good[3]])
                == "\(ofThree) run 1 is not a shard of the same run as \(good[0]) run 1: its shard count is 3 but that one's is 4; merge only the shards of one run")
        // A missing shard; a repeated one; the same file twice; the output among the shards.
        #expect(refused([good[0], good[1], good[3]])
                == "shard 2/4 of dla run of tiny-ln (model hash \(hashLN)) is missing (3 of 4 given): add its database to the command")
        let again1 = folder.path("again-1.sqlite")
        try FileManager.default.copyItem(atPath: good[1], toPath: again1)
        #expect(refused(good + [again1])
                == "shard 1/4 is given twice, in \(good[1]) run 1 and in \(again1) run 1: give each shard once")
        #expect(refused(good + [good[2]]) == "\(good[2]) is given twice: give each shard database once")
        #expect(refused(good, output: good[3])
                == "\(good[3]) is both the output and a shard database: merge into another file (e.g. merged.sqlite)")
        // An interrupted shard.
        let stopped = folder.path("stopped-2.sqlite")
        #expect(throws: JobError.self) {
            try Self.job(shard: try Shard(index: 2, count: 4)).run(db: try ResultsDatabase(path: stopped)) { _, _ in throw JobStop() }
        }
        #expect(refused([good[0], good[1], stopped, good[3]])
                == "\(stopped) run 1 (shard 2/4) is interrupted, not completed: finish it by repeating its command with --resume 1 --db \(stopped), then merge again")
        // A database without shard runs; --run naming no shard run.
        let unsharded = folder.path("unsharded.sqlite")
        try Self.job().run(db: try ResultsDatabase(path: unsharded))
        #expect(refused(good + [unsharded])
                == "\(unsharded) holds no sharded run (a run of `lnlens dla`, `patch`, `edges`, `eval`, `sinks`, `norms`, `lens` or `neurons` with --shard I/N); list its runs with `lnlens runs --db \(unsharded)`")
        #expect(refused(good, runIDs: [5])
                == "--run 5: none of the shard databases holds a sharded run with this id; list their runs with `lnlens runs --db FILE`")
        #expect(!FileManager.default.fileExists(atPath: out))

        // The interrupted attempt and a completed one in the same file: the completed one is used.
        try Self.job(shard: try Shard(index: 2, count: 4)).run(db: try ResultsDatabase(path: stopped))
        let merged = try MergeJob(outputPath: out, shardPaths: [good[0], good[1], stopped, good[3]]).run()
        #expect(try ResultsDatabase.openReadOnly(path: out).shards(runID: merged[0].outcome.runID)[2].sourceRunID == 2)
        // Two completed runs of one shard in one file: ambiguous, unless --run chooses.
        try Self.job(shard: try Shard(index: 2, count: 4)).run(db: try ResultsDatabase(path: stopped))
        #expect(refused([good[0], good[1], stopped, good[3]])
                == "\(stopped) holds shard 2/4 of the same run completed 2 times (runs 2, 3): choose one with --run ID")
        let chosen = try MergeJob(outputPath: folder.path("out3.sqlite"), shardPaths: [good[0], good[1], stopped, good[3]],
                                  runIDs: [3]).run()
        #expect(try ResultsDatabase.openReadOnly(path: folder.path("out3.sqlite")).shards(runID: chosen[0].outcome.runID)
                    .map(\.sourceRunID) == [1, 1, 3, 1])
    }

    /// Merging into a database that holds other runs adds one run and changes nothing else.
    @Test func mergeLeavesOtherRunsAlone() throws {
        let folder = try Folder()
        let out = try ResultsDatabase(path: folder.path("out.sqlite"))
        let synthetic = SyntheticRun(label: "other", batches: 2, promptsPerBatch: 3)
        let other = try synthetic.write(to: out)
        let otherBefore = try Stored(out, other)
        let paths = try Self.shards(2, in: folder) { try Self.job(shard: $0) }
        let merged = try MergeJob(outputPath: out.path, shardPaths: paths).run()
        #expect(merged.map(\.outcome) == [.created(other + 1)])
        #expect(try Stored(out, other) == otherBefore)
        #expect(try out.counts(runID: other) == synthetic.expectedCounts)
        #expect(try out.shards(runID: other).isEmpty)
        #expect(try out.runs().map(\.id) == [other, other + 1])
    }

    /// Patching shards merge as DLA shards do: the rows of one unsharded run, and the estimators'
    /// errors recomputed over every prompt (not averaged over shards).
    @Test func patchShardsMergedEqualOneRun() throws {
        let folder = try Folder()
        let repo = DLATests.fixtures.deletingLastPathComponent().deletingLastPathComponent()
        let lines = try String(contentsOf: repo.appendingPathComponent("prompts/ioi.jsonl"), encoding: .utf8)
            .split(separator: "\n").prefix(6)
        let promptFile = URL(fileURLWithPath: folder.path("ioi6.jsonl"))
        try (lines.joined(separator: "\n") + "\n").write(to: promptFile, atomically: true, encoding: .utf8)
        let checkpoint = try Checkpoint.open(DLATests.fixtures.appendingPathComponent("models/tiny-ln").path)
        let model = try GPT2Model(checkpoint: checkpoint)
        let tok = try DLATests.tokenizer()
        let set = try PromptSet.load(url: promptFile, tokenizer: tok, skipInvalid: false)
        func job(_ shard: Shard?) throws -> PatchJob {
            var job = PatchJob(model: model, modelPath: checkpoint.directory.path, modelHash: try checkpoint.weightsHash(),
                               prompts: set, sites: PatchSite.defaults, methods: [.activation, .atp, .atpStar],
                               direction: .denoise, tokenText: { tok.tokenString($0) },
                               toolVersion: "test")
            job.batchSize = 1
            job.chunkSize = 2
            job.shard = shard
            return job
        }
        let out = try ResultsDatabase(path: folder.path("out.sqlite"))
        let whole = try job(nil).run(db: out)
        let paths = try (0..<3).map { i in
            let path = folder.path("patch-\(i).sqlite")
            try job(try Shard(index: i, count: 3)).run(db: try ResultsDatabase(path: path))
            return path
        }
        let merged = try MergeJob(outputPath: out.path, shardPaths: paths).run()
        guard case .created(let id) = try #require(merged.first).outcome else { Issue.record("not created"); return }
        #expect(try Stored(out, id) == Stored(out, whole))
        let errors = try out.estimatorErrors(runID: id), wholeErrors = try out.estimatorErrors(runID: whole)
        #expect(!errors.isEmpty && errors == wholeErrors)
        #expect(try out.results(runID: id).count > 6 * 3)
        #expect(try out.run(id: id)?.command == "patch")
        // Merging again writes nothing.
        #expect(try MergeJob(outputPath: out.path, shardPaths: paths).run().map(\.outcome) == [.alreadyMerged(id)])
    }
}
