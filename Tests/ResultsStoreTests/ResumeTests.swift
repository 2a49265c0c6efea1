import Foundation
@testable import Support
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
        try reopened.claimRun(id: id)
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
        try db.claimRun(id: id)
        let run = try #require(try db.run(id: id))
        #expect(run.status == .running && run.endedAt == nil && run.error == nil)
        try write(db, id, batch: 1)
        #expect(try db.completedPromptIndices(runID: id) == Set(0..<6))
    }

    /// A run has one writer: a live owner keeps it, a dead one (kill -9) gives it up.
    @Test func oneWriterPerRun() throws {
        let db = try ResultsDatabase.inMemory()
        let me = ProcessIdentity.current
        // A live process of this host (pid 1, with its real start) owns the run: refused.
        let init1 = ProcessIdentity(host: me.host, pid: 1, start: try #require(ProcessIdentity.startStamp(pid: 1)))
        let id = try db.beginRun(synthetic.newRun, owner: init1)
        let owned = #expect(throws: ResultsStoreError.self) { try db.claimRun(id: id) }
        #expect(message(owned!).contains("is being written by process 1 on this host"))
        #expect(throws: ResultsStoreError.self) { try db.claimRun(id: id, force: true) }
        // A process of another host, heard from just now: refused unless forced.
        let remote = ProcessIdentity(host: "elsewhere", pid: 7, start: "y")
        try setOwner(db, id, remote)
        let busy = #expect(throws: ResultsStoreError.self) { try db.claimRun(id: id) }
        #expect(message(busy!).contains("on host elsewhere"))
        try db.claimRun(id: id, force: true)
        try write(db, id, batch: 0)
        // The old owner learns it was taken over, and writes nothing.
        let taken = #expect(throws: ResultsStoreError.self) {
            let b = synthetic.batch(1)
            try db.writeBatch(runID: id, prompts: b.prompts, values: b.values, firstPrompt: b.first, lastPrompt: b.last, owner: remote)
        }
        #expect(message(taken!).contains("is now written by process \(me.pid) on \(me.host)"))
        #expect(try db.completedPromptIndices(runID: id) == Set(0..<3))
        // A remote owner silent for longer than `staleAfter` is taken over without --force-resume.
        try setOwner(db, id, remote, heartbeat: Date().addingTimeInterval(-ResultsDatabase.staleAfter - 1))
        try db.claimRun(id: id)
        try write(db, id, batch: 1)
        // An owner of this host that died (its pid now has another start): resumable at once.
        let dead = ProcessIdentity(host: me.host, pid: me.pid, start: me.start + "-old")
        #expect(dead.isAlive == false && me.isAlive == true && remote.isAlive == nil && init1.isAlive == true)
        try setOwner(db, id, dead)
        try db.claimRun(id: id)
        try write(db, id, batch: 2)
        #expect(try db.completedPromptIndices(runID: id) == Set(0..<9))
        #expect(try db.run(id: id)?.owner == me)
    }

    func setOwner(_ db: ResultsDatabase, _ id: Int64, _ owner: ProcessIdentity, heartbeat: Date = Date()) throws {
        try #require(db.writer).write {
            try $0.execute(sql: "UPDATE runs SET owner_host = ?, owner_pid = ?, owner_start = ?, heartbeat_at = ? WHERE id = ?",
                           arguments: [owner.host, owner.pid, owner.start, heartbeat, id])
        }
    }
}
