import Foundation
import GRDB
import Testing
@testable import ResultsStore

/// A damaged or hand-edited date cell is a decoding error, never a crash (the sqlite fuzz target
/// found GRDB's date parser trapping on a long run of digits).
@Suite struct DamagedCellTests {
    @Test func datesThatAreNotDatesAreRefused() throws {
        #expect(StoredDate.isDateText("2026-12-04 16:42:36.471"))
        #expect(StoredDate.isDateText("2026-12-04"))
        #expect(StoredDate.isDateText("2026-12-04T16:42"))
        #expect(!StoredDate.isDateText("99999999999999999999999-12-04 16:42:36.471"))
        #expect(!StoredDate.isDateText("2026-12-04 16:42:36.4719999999999999999999"))
        #expect(!StoredDate.isDateText("yesterday"))
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("lnlens-damaged-\(UUID().uuidString).sqlite")
        defer { try? FileManager.default.removeItem(at: url) }
        try FileManager.default.copyItem(at: URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().appendingPathComponent("fuzz/corpus/sqlite/dla.sqlite"), to: url)
        try DatabaseQueue(path: url.path).write { db in
            try db.execute(sql: "UPDATE runs SET started_at = '9999999999999999999999999-01-01 00:00:00.000'")
        }
        let db = try ResultsDatabase.openReadOnly(path: url.path)
        #expect(throws: ResultsStoreError.self) { _ = try db.runs() }
        #expect(throws: ResultsStoreError.self) { _ = try db.verifiedRun(id: 1) }
    }

    /// A byte that is not ASCII where GRDB's parser expects a digit overflows its `Int8`
    /// arithmetic (the sqlite fuzz target's third find): each date column of `runs` is refused.
    @Test(arguments: ["started_at", "ended_at", "heartbeat_at"])
    func aDateWithANonASCIIByteIsRefused(column: String) throws {
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("lnlens-damaged-\(UUID().uuidString).sqlite")
        defer { try? FileManager.default.removeItem(at: url) }
        try FileManager.default.copyItem(at: URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().appendingPathComponent("fuzz/corpus/sqlite/dla.sqlite"), to: url)
        try DatabaseQueue(path: url.path).write { db in
            // "2026-12-04 1\u{9b}:00": the byte 0x9b where the hour's second digit stands.
            try db.execute(sql: "UPDATE runs SET \(column) = CAST(X'323032362D31322D303420319B3A3030' AS TEXT)")
        }
        let db = try ResultsDatabase.openReadOnly(path: url.path)
        #expect(throws: ResultsStoreError.self) { _ = try db.runs() }
        #expect(throws: ResultsStoreError.self) { _ = try db.verifiedRun(id: 1) }
    }

    @Test func aBatchRangeThatIsNotOneIsRefused() throws {
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("lnlens-damaged-\(UUID().uuidString).sqlite")
        defer { try? FileManager.default.removeItem(at: url) }
        try FileManager.default.copyItem(at: URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().appendingPathComponent("fuzz/corpus/sqlite/dla.sqlite"), to: url)
        try DatabaseQueue(path: url.path).write { db in
            try db.execute(sql: "PRAGMA ignore_check_constraints = ON")  // as a damaged page can
            try db.execute(sql: "UPDATE batches_done SET first_prompt = 5, last_prompt = 2")
        }
        let db = try ResultsDatabase.openReadOnly(path: url.path)
        #expect(throws: ResultsStoreError.self) { _ = try db.completedPromptIndices(runID: 1) }
    }
}
