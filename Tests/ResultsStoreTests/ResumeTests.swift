import Foundation
import Testing

@testable import ResultsStore

@Suite struct ResumeTests {
    let synthetic = SyntheticRun(label: "resume", batches: 5, promptsPerBatch: 3, layers: 3, headsPerLayer: 4)
    let summaries = [SummaryRow(scope: "heads", key: "all", metric: "nmae", value: 12.5)]

    func write(_ db: ResultsDatabase, _ id: Int64, batch index: Int) throws {
        let b = synthetic.batch(index)
        try db.writeBatch(runID: id, prompts: b.prompts, values: b.values, firstPrompt: b.first, lastPrompt: b.last)
    }

    @Test func interruptedRunResumesToIdenticalRows() throws {
        let temp = TempDatabasePath()
        defer { temp.cleanup() }

        // Reference: the same run written without interruption, in its own file.
        let reference = try ResultsDatabase(path: temp.folder.appendingPathComponent("reference.sqlite").path)
        let referenceID = try reference.beginRun(synthetic.newRun)
        for b in 0..<synthetic.batches { try write(reference, referenceID, batch: b) }
        try reference.finishRun(runID: referenceID, status: .completed, summaries: summaries, error: nil)

        // Batches 0...2, then the process "dies": the connection is dropped without finishRun.
        let id: Int64
        do {
            let first = try ResultsDatabase(path: temp.path)
            id = try first.beginRun(synthetic.newRun)
            for b in 0...2 { try write(first, id, batch: b) }
        }

        let reopened = try ResultsDatabase(path: temp.path)
        #expect(try reopened.run(id: id)?.status == .running)
        let done = try reopened.completedPromptIndices(runID: id)
        #expect(done == Set(0..<9))
        try reopened.markResumed(runID: id)
        for b in 0..<synthetic.batches {
            let range = synthetic.batch(b).first...synthetic.batch(b).last
            if !range.allSatisfy(done.contains) { try write(reopened, id, batch: b) }
        }
        try write(reopened, id, batch: 1)  // a resumed process may redo a batch already stored
        try reopened.finishRun(runID: id, status: .completed, summaries: summaries, error: nil)

        let resumed = try StoredRun(reopened, id), uninterrupted = try StoredRun(reference, referenceID)
        #expect(resumed == uninterrupted)
        #expect(resumed.counts == RunCounts(prompts: 15, results: 15 * 12 * 2, summaries: 1, batches: 5))
    }

    @Test func markedInterruptedRunCanBeResumed() throws {
        let db = try ResultsDatabase.inMemory()
        let id = try db.beginRun(synthetic.newRun)
        try write(db, id, batch: 0)
        try db.finishRun(runID: id, status: .interrupted, summaries: [], error: "interrupted by SIGINT")
        #expect(throws: ResultsStoreError.runNotRunning(id: id, status: .interrupted, path: ":memory:")) {
            try write(db, id, batch: 1)
        }
        try db.markResumed(runID: id)
        let run = try #require(try db.run(id: id))
        #expect(run.status == .running && run.endedAt == nil && run.error == nil)
        try write(db, id, batch: 1)
        #expect(try db.completedPromptIndices(runID: id) == Set(0..<6))
    }
}
