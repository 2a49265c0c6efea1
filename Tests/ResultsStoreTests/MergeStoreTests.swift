import Foundation
import Support
import Testing

@testable import ResultsStore

/// The store's side of sharding: chunks of non-consecutive prompts, and merged runs.
@Suite struct MergeStoreTests {
    @Test func contiguousRangesOfIndices() {
        #expect(contiguousRanges([9, 0, 1, 2, 5, 10, 2]) == [0...2, 5...5, 9...10])
        #expect(contiguousRanges([Int]()).isEmpty)
    }

    /// A shard's chunk: one marker per range, rows outside every range refused.
    @Test func chunkOfSeveralRanges() throws {
        let db = try ResultsDatabase.inMemory()
        let id = try db.beginRun(sampleRun(nPrompts: 8))
        let row = { (p: Int) in ResultRow(promptIndex: p, site: "embed", quantity: "dla", value: Double(p)) }
        let prompts = [1, 5, 6].map { PromptRow(promptIndex: $0, prompt: "p", answer: " a", wrong: nil, nTokens: 2) }
        try db.writeBatch(runID: id, prompts: prompts, values: [1, 5, 6].map(row), ranges: [1...1, 5...6])
        #expect(try db.completedPromptIndices(runID: id) == [1, 5, 6])
        #expect(try db.counts(runID: id).batches == 2)
        #expect(throws: ResultsStoreError.invalidBatch(id: id, reason: "result for prompt 2 lies outside the batch 1...1, 3...3",
                                                       path: ":memory:")) {
            try db.writeBatch(runID: id, prompts: [], values: [row(2)], ranges: [1...1, 3...3])
        }
        #expect(throws: ResultsStoreError.invalidBatch(id: id, reason: "no prompt range given", path: ":memory:")) {
            try db.writeBatch(runID: id, prompts: [], values: [], ranges: [])
        }
    }

    /// A merged run is written whole, once; its provenance identifies it.
    @Test func mergedRunIsRecordedOnce() throws {
        let db = try ResultsDatabase.inMemory()
        var run = sampleRun(nPrompts: 2)
        let prompts = (0..<2).map { PromptRow(promptIndex: $0, prompt: "p", answer: " a", wrong: nil, nTokens: 2) }
        let values = (0..<2).map { ResultRow(promptIndex: $0, site: "embed", quantity: "dla", value: 1) }
        let start = Date(timeIntervalSince1970: 1_700_000_000)
        let shards = (0..<2).map {
            ShardRow(shardIndex: $0, shardCount: 2, sourcePath: "/s\($0).sqlite", sourceRunID: 1, ownerHost: "node\($0)",
                     startedAt: start, endedAt: start.addingTimeInterval(5), nPrompts: 1)
        }
        #expect(throws: ResultsStoreError.invalidRun(path: ":memory:", reason: "a merged run is recorded completed, with its end time")) {
            try db.recordMergedRun(run, shards: shards, prompts: prompts, values: values, summaries: [])
        }
        run.status = .completed
        run.endedAt = start.addingTimeInterval(5)
        #expect(throws: ResultsStoreError.invalidRun(path: ":memory:", reason: "a result row names prompt 3, which is not among the merged prompts")) {
            try db.recordMergedRun(run, shards: shards, prompts: prompts,
                                   values: [ResultRow(promptIndex: 3, site: "embed", quantity: "dla", value: 1)], summaries: [])
        }
        let summaries = [SummaryRow(scope: "heads", key: "all", metric: "nmae", value: .nan)]
        let first = try db.recordMergedRun(run, shards: shards, prompts: prompts, values: values, summaries: summaries)
        #expect(first == .created(1))
        var moved = shards
        moved[0].sourcePath = "/elsewhere/s0.sqlite"
        #expect(try db.recordMergedRun(run, shards: moved.reversed(), prompts: prompts, values: values, summaries: summaries)
                == .alreadyMerged(1))
        var other = shards
        other[1].sourceRunID = 2
        #expect(try db.recordMergedRun(run, shards: other, prompts: prompts, values: values, summaries: summaries) == .created(2))
        #expect(try db.shards(runID: 1) == shards)
        #expect(try db.run(id: 1)?.status == .completed)
        #expect(try db.completedPromptIndices(runID: 1) == [0, 1])
        #expect(try db.summaries(runID: 1) == summaries)
        #expect(try db.runsTable().rows.map { $0[7] } == [.text("merged 2"), .text("merged 2")])
    }

    /// A run that stores no prompts (`eval`: a loss per window and model) is merged from its
    /// result rows: their indices must lie in 0 ..< n_prompts, and the markers cover them.
    @Test func mergedRunWithoutPrompts() throws {
        let db = try ResultsDatabase.inMemory()
        var run = sampleRun(command: "eval", nPrompts: 3)
        let start = Date(timeIntervalSince1970: 1_700_000_000)
        run.status = .completed
        run.endedAt = start.addingTimeInterval(5)
        let shards = (0..<2).map {
            ShardRow(shardIndex: $0, shardCount: 2, sourcePath: "/e\($0).sqlite", sourceRunID: 1, ownerHost: "node",
                     startedAt: start, endedAt: start.addingTimeInterval(5), nPrompts: 2 - $0)
        }
        let values = (0..<3).flatMap { w in ["a", "b"].map { ResultRow(promptIndex: w, site: $0, quantity: "loss", value: Double(w)) } }
        #expect(throws: ResultsStoreError.invalidRun(path: ":memory:", reason: "a result row names prompt 3, outside 0 ..< n_prompts 3")) {
            try db.recordMergedRun(run, shards: shards, prompts: [],
                                   values: values + [ResultRow(promptIndex: 3, site: "a", quantity: "loss", value: 1)], summaries: [])
        }
        #expect(try db.recordMergedRun(run, shards: shards, prompts: [], values: values, summaries: []) == .created(1))
        #expect(try db.results(runID: 1) == values)
        #expect(try db.completedPromptIndices(runID: 1) == [0, 1, 2])
        #expect(try db.counts(runID: 1).prompts == 0)
    }
}
