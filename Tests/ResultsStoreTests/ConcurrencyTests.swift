import Foundation
import Testing

@testable import ResultsStore

@Suite struct ConcurrencyTests {
    /// Two connections (two DatabasePools, as two processes would have) write many small
    /// transactions into one file at the same time; nothing may be lost.
    @Test func twoPoolsWritingConcurrentlyLoseNothing() throws {
        let temp = TempDatabasePath()
        defer { temp.cleanup() }
        let runs = [
            SyntheticRun(label: "one", batches: 150, promptsPerBatch: 2),
            SyntheticRun(label: "two", batches: 150, promptsPerBatch: 2),
        ]
        let pools = try runs.map { _ in try ResultsDatabase(path: temp.path) }
        let outcomes = Outcomes()
        let finished = DispatchSemaphore(value: 0)
        for i in runs.indices {
            let (run, pool) = (runs[i], pools[i])
            Thread.detachNewThread {
                outcomes.record(i, Result { try run.write(to: pool) })
                finished.signal()
            }
        }
        for _ in runs.indices {
            try #require(finished.wait(timeout: .now() + 120) == .success, "a writer thread did not finish")
        }

        let check = try ResultsDatabase.openReadOnly(path: temp.path)
        for i in runs.indices {
            let id = try outcomes.result(i).get()
            #expect(try check.counts(runID: id) == runs[i].expectedCounts)
            #expect(try check.run(id: id)?.status == .completed)
        }
        #expect(try check.runs().count == 2)
        #expect(try check.query(sql: "SELECT COUNT(*) FROM results").rows == [[.int(Int64(2 * runs[0].expectedCounts.results))]])
    }
}

/// Results of the writer threads.
final class Outcomes: @unchecked Sendable {
    private let lock = NSLock()
    private var results: [Int: Result<Int64, any Error>] = [:]

    func record(_ index: Int, _ result: Result<Int64, any Error>) {
        lock.withLock { results[index] = result }
    }

    func result(_ index: Int) -> Result<Int64, any Error> {
        lock.withLock { results[index]! }
    }
}
